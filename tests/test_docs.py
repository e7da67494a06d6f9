"""The documentation site builds with ``mkdocs build --strict``: no warning, no broken link,
no API reference entry that fails to resolve (mkdocstrings renders the docstrings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("mkdocs", reason="the docs extra is not installed")
pytest.importorskip("mkdocstrings", reason="the docs extra is not installed")


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONWARNINGS": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "WARNING" not in output, output
    for page in ("index.html", "cli/index.html", "reference/models/index.html"):
        assert (site / page).is_file(), page
    reference = (site / "reference" / "backends" / "index.html").read_text("utf-8")
    assert 'id="acacheorm.FileSystemBackend.scan"' in reference  # docstrings were rendered
