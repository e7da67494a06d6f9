"""Execute docs/quickstart.ipynb in a kernel of this interpreter and store its outputs, so
the docs site shows them (mkdocs-jupyter renders stored outputs; the build runs nothing).

    python scripts/run_notebook.py            # rewrite the notebook with fresh outputs
    python scripts/run_notebook.py --check    # exit 1 if the stored outputs are stale

tests/test_notebook.py runs the same check.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "quickstart.ipynb"


def execute(path: Path = NOTEBOOK) -> Any:
    """The notebook executed top to bottom (a kernel spec for this interpreter)."""
    import os

    import nbclient
    import nbformat

    with tempfile.TemporaryDirectory() as tmp:
        spec_dir = Path(tmp) / "kernels" / "acacheorm-docs"
        spec_dir.mkdir(parents=True)
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "acacheorm",
            "language": "python",
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        old = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = tmp
        try:
            nb = nbformat.read(path, as_version=4)
            client = nbclient.NotebookClient(
                nb,
                kernel_name="acacheorm-docs",
                timeout=60,
                startup_timeout=60,
                resources={"metadata": {"path": str(path.parent)}},
            )
            client.execute()
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = old
    return normalize(nb)


def normalize(nb: Any) -> Any:
    """Keep what the page shows; drop what changes from run to run (timings, kernel)."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    return nb


def outputs(nb: Any) -> list[Any]:
    """The outputs of every code cell, comparable between two runs."""
    return [
        [
            {k: v for k, v in dict(o).items() if k not in ("execution_count", "metadata")}
            for o in cell.outputs
        ]
        for cell in nb.cells
        if cell.cell_type == "code"
    ]


def main() -> int:
    import nbformat

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    fresh = execute()
    if args.check:
        stored = nbformat.read(NOTEBOOK, as_version=4)
        if outputs(stored) != outputs(fresh):
            print(f"{NOTEBOOK} has stale outputs: run python scripts/run_notebook.py")
            return 1
        return 0
    nbformat.write(fresh, NOTEBOOK)
    return 0


if __name__ == "__main__":
    sys.exit(main())
