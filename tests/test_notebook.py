"""docs/quickstart.ipynb runs top to bottom in a real kernel and shows its tables."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "quickstart.ipynb"

pytestmark = [
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) for m in ("nbclient", "nbformat", "ipykernel")),
        reason="needs the test extra (nbclient, nbformat, ipykernel)",
    ),
    # Older jupyter_core releases warn on first import (a DeprecationWarning, an error under
    # -W error) that their paths will move to platformdirs; this test only uses the kernel
    # spec it writes below, so the move does not concern it. Imports happen inside the test
    # so that this filter covers them.
    pytest.mark.filterwarnings(
        "ignore:Jupyter is migrating its paths to use standard platformdirs:DeprecationWarning"
    ),
]


async def test_quickstart_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbclient
    import nbformat

    # A kernel spec for this very interpreter, found first on JUPYTER_PATH: a "python3" spec
    # in the user's own Jupyter directory could point at another Python without acacheorm.
    spec_dir = tmp_path / "kernels" / "acacheorm-test"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "acacheorm test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="acacheorm-test",
        timeout=60,
        startup_timeout=60,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    await client.async_execute()

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells and all(c.execution_count for c in code_cells)
    outputs = [o for c in code_cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]

    tables = [
        o.data["text/html"]
        for o in outputs
        if o.output_type == "execute_result" and "text/html" in o.data
    ]
    # query_many's list, the instance `update` returns, select_related's list.
    assert len(tables) == 3
    users, updated, articles = tables
    assert "<caption>User</caption>" in updated and "1.8" in updated
    assert "<table>" in users and "<caption>User</caption>" in users
    assert users.count("<tr>") == 4  # a header row, Sam, Kim, and the miss
    assert "<em>None</em>" in users
    assert "<caption>Article</caption>" in articles

    printed = "".join(o.text for o in outputs if o.output_type == "stream")
    assert "<User id=1 [sparse]>" in printed and "by Kim" in printed
    assert "User.name" in printed  # the ValidationError names model and field

    # The outputs stored in the notebook (what the docs site shows) are this run's.
    runner = _load_script()
    stored = nbformat.read(NOTEBOOK, as_version=4)
    assert runner.outputs(stored) == runner.outputs(runner.normalize(nb)), (
        "docs/quickstart.ipynb has stale outputs: run python scripts/run_notebook.py"
    )
    assert sum(len(c.outputs) for c in stored.cells if c.cell_type == "code") == len(outputs)


def _load_script() -> Any:
    path = NOTEBOOK.parent.parent / "scripts" / "run_notebook.py"
    spec = importlib.util.spec_from_file_location("run_notebook", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
