"""``python -m acacheorm``: the demo and the operations commands (``inspect``, ``stats``,
``migrate``). Needs the ``cli`` extra: ``pip install 'acacheorm[cli]'``."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); the exit code.

    Example::

        from acacheorm.__main__ import main

        assert main(["demo", "--url", "memory://"]) == 0
    """
    try:
        import click

        from .cli import cli
    except ImportError as exc:
        print(
            f"the acacheorm command line needs click and rich ({exc}): "
            "pip install 'acacheorm[cli]'",
            file=sys.stderr,
        )
        return 2
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="python -m acacheorm", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        print("Aborted!", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
