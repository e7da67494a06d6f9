"""The documentation site builds with ``mkdocs build --strict``: no warning, no broken link,
no API reference entry that fails to resolve (mkdocstrings renders the docstrings)."""

from __future__ import annotations

import html as html_lib
import os
import re
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
    for page in ("index.html", "cli.html", "reference/models.html", "quickstart.html"):
        assert (site / page).is_file(), page
    reference = (site / "reference" / "backends.html").read_text("utf-8")
    assert 'id="acacheorm.FileSystemBackend.scan"' in reference  # docstrings were rendered
    check_site(site)


def check_site(site: Path) -> None:
    # 404.html is served for any missing path, so it links from the site root by design.
    pages = sorted(p for p in site.rglob("*.html") if p.name != "404.html")
    # Every relative link and asset resolves to a file: the site works opened from disk.
    for page in pages:
        html = page.read_text("utf-8")
        for target in re.findall(r'(?:href|src)="([^"#?]+)[^"]*"', html):
            if "://" in target or target.startswith(("mailto:", "data:", "javascript:")):
                continue
            assert (page.parent / target).resolve().is_file(), f"{page}: {target}"
        assert "fonts.googleapis.com" not in html, page  # nothing loaded from elsewhere
        assert "stylesheets/extra.css" in html, page

    # The notebook is rendered with its outputs (tables and printed lines).
    notebook = (site / "quickstart.html").read_text("utf-8")
    assert "<caption>User</caption>" in notebook
    assert "&#39;Caching without tears&#39; by Sam" in notebook or (
        "'Caching without tears' by Sam" in notebook
    )

    # The reference section is one entry, not "API reference > API reference".
    models = (site / "reference" / "models.html").read_text("utf-8")
    labels = re.findall(r'<span class="md-ellipsis">\s*API reference\s*</span>', models)
    assert len(labels) == 1, labels

    # Long signatures are formatted on several lines, not clipped on one.
    signatures = [
        html_lib.unescape(re.sub(r"<[^>]+>", "", sig))
        for sig in re.findall(r'<div class="doc-signature[^"]*"[^>]*>(.*?)</div>', models, re.S)
    ]
    [get_or_create] = [s for s in signatures if s.startswith("get_or_create(")]
    assert get_or_create.startswith("get_or_create(\n    defaults:"), get_or_create
    assert max(len(line) for s in signatures for line in s.splitlines()) <= 88

    # Copy buttons stay off the code unless the block is hovered (docs/stylesheets/extra.css).
    css = (site / "stylesheets" / "extra.css").read_text("utf-8")
    assert ".md-code__nav" in css and "opacity: 0" in css
    assert ".zeroclipboard-container" in css  # the notebook cells' copy buttons too
