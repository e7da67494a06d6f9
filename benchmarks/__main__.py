"""Benchmarks: acacheorm against the best hand-written raw-client code, same server, same
process, alternating rounds. Prints ``operation backend rows orm_ops/s raw_ops/s ratio``
(ratio = orm time / raw time; 1.00 is "as fast as raw", below 1 is faster) and writes a JSON
file to benchmarks/results/.

    python -m benchmarks                       # every backend (starts its own servers)
    python -m benchmarks --backends memory,redis --rounds 5 --serializer json
    python -m benchmarks --scaling --rounds 3  # how cost grows: rows, tasks, memory at 100k
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks import cases

RESULTS = Path(__file__).parent / "results"


async def measure(fn: Callable[[], Awaitable[int]], rounds: int) -> list[float]:
    """ops/s of each round (fn returns the number of operations it did)."""
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        ops = await fn()
        out.append(ops / (time.perf_counter() - start))
    return out


async def run_case(case: cases.Case, rounds: int) -> dict[str, Any]:
    await case.setup()
    try:
        await case.orm()  # warm-up both sides
        await case.raw()
        orm: list[float] = []
        raw: list[float] = []
        for _ in range(rounds):  # alternate so drift hits both sides alike
            orm += await measure(case.orm, 1)
            raw += await measure(case.raw, 1)
    finally:
        await case.teardown()
    orm_ops = statistics.median(orm)
    raw_ops = statistics.median(raw)
    return {
        "operation": case.name,
        "backend": case.backend_name,
        "rows": case.rows,
        "orm_ops": orm_ops,
        "raw_ops": raw_ops,
        "ratio": raw_ops / orm_ops,
        "note": case.note,
    }


def print_row(r: dict[str, Any]) -> None:
    print(
        f"{r['operation']:<28} {r['backend']:<14} {r['rows']:>6} {r['orm_ops']:>12,.0f} "
        f"{r['raw_ops']:>12,.0f} {r['ratio']:>6.2f}  {r['note']}",
        flush=True,
    )


def write_results(kind: str, args: argparse.Namespace, results: Any, memory: Any) -> None:
    """Save a run as JSON in benchmarks/results/ with the machine and the options."""
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"{kind}-{stamp}-{args.serializer}.json"
    out.write_text(
        json.dumps(
            {
                "python": sys.version,
                "platform": platform.platform(),
                "serializer": args.serializer,
                "rounds": args.rounds,
                "scale": args.scale,
                "cpus": os.cpu_count(),
                "results": results,
                "memory": memory,
            },
            indent=2,
        )
    )
    print(f"\nwritten {out}")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--backends", default="memory,redis,redis-cluster,memcached")
    parser.add_argument("--serializer", default="msgpack", choices=["msgpack", "json"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply row counts (0.1 for a quick run)"
    )
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="instead of the usual cases: query_many at 100 / 10k / 100k rows, concurrent "
        "get_by_id at 10 ... 10,000 tasks and memory per instance at 100k rows, per backend",
    )
    args = parser.parse_args(argv)
    if args.scaling:
        return await scaling(args)
    results: list[dict[str, Any]] = []
    print(
        f"{'operation':<28} {'backend':<14} {'rows':>6} {'orm_ops/s':>12} {'raw_ops/s':>12} "
        f"{'ratio':>6}"
    )
    async with cases.Servers(args.backends.split(",")) as servers:
        for backend_name in args.backends.split(","):
            for case in cases.all_cases(servers, backend_name, args.serializer, args.scale):
                if args.only and case.name not in args.only.split(","):
                    continue
                r = await run_case(case, args.rounds)
                print_row(r)
                results.append(r)
    memory = cases.memory_footprint(args.serializer, int(100_000 * args.scale))
    print()
    for k, v in memory.items():
        print(f"{k:<44} {v:>10.2f}")
    write_results("bench", args, results, memory)
    return 0


async def scaling(args: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    print(
        f"{'operation':<28} {'backend':<14} {'rows':>6} {'orm_ops/s':>12} {'raw_ops/s':>12} "
        f"{'ratio':>6}"
    )
    backends = args.backends.split(",")
    async with cases.Servers(backends) as servers:
        for backend_name in backends:
            for case in cases.scaling_cases(servers, backend_name, args.serializer, args.scale):
                r = await run_case(case, args.rounds)
                print_row(r)
                results.append(r)
        print(
            f"\n{'memory held per row':<28} {'backend':<14} {'rows':>6} {'orm B':>8} "
            f"{'raw B':>8} {'ratio':>6}"
        )
        for backend_name in backends:
            count = max(10, int(100_000 * args.scale))
            m = await cases.scaling_memory(servers, backend_name, args.serializer, count)
            print(
                f"{'query_many result':<28} {backend_name:<14} {count:>6} "
                f"{m['orm_bytes']:>8.0f} {m['raw_bytes']:>8.0f} {m['ratio']:>6.2f}",
                flush=True,
            )
            memory.append(m)
    write_results("scaling", args, results, memory)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
