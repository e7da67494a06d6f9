"""``python -m acacheorm``: the demo and operations commands."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from ._demo import run_demo


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m acacheorm", description="acacheorm command-line tools"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="walk through models, queries and a lazy foreign key")
    demo.add_argument(
        "--url",
        default="memory://",
        help="backend URL (memory://, file:///path, redis://…, "
        "redis+cluster://…, memcached://h:p,h:p); default memory://",
    )
    demo.add_argument("--serializer", default="msgpack", help="json, msgpack or pickle")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return asyncio.run(run_demo(args.url, args.serializer))
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
