"""The README's quick start runs as written: at the top level (notebook style, top-level
await) and wrapped in ``async def main()`` (where class bodies cannot see a name they assign
themselves); it closes its backend; the README links only inside the repository."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def quick_start() -> str:
    section = README.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block in the quick start"
    return match.group(1)


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


EXPECTED = [
    "[<User id=1: name='Sam'",
    "<User id=1 [sparse]>",
    "Sam",
]


def check_output(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    for line, start in zip(lines, EXPECTED, strict=True):
        assert line.startswith(start), result.stdout
    assert lines[0].endswith("None]")  # the miss


def test_quick_start_at_top_level_like_a_notebook() -> None:
    code = (
        "import ast, asyncio\n"
        f"source = {quick_start()!r}\n"
        "flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT\n"
        "code = compile(source, 'README.md', 'exec', flags=flags)\n"
        "namespace = {'__name__': '__main__'}\n"
        "async def main():\n"
        "    result = eval(code, namespace)\n"
        "    if result is not None:\n"
        "        await result\n"
        "asyncio.run(main())\n"
    )
    check_output(run(code))


def test_quick_start_wrapped_in_async_def_main() -> None:
    body = textwrap.indent(quick_start(), "    ")
    check_output(run(f"import asyncio\n\nasync def main():\n{body}\nasyncio.run(main())\n"))


def test_quick_start_closes_its_backend() -> None:
    assert re.search(r"^await store\.close\(\)", quick_start(), re.M)


def test_readme_links_stay_in_the_repository() -> None:
    targets = re.findall(r"\]\(([^)]+)\)", README)
    assert targets, "the README links its docs"
    for target in targets:
        assert "://" not in target and not target.startswith(("/", "..")), target
        assert (ROOT / target.split("#")[0]).exists(), target
    assert "../shared" not in README
    assert "mkdocs serve" in README


def test_readme_names_the_fastapi_extra() -> None:
    assert "`fastapi` (FastAPI/Starlette" in README
