"""A griffe extension for the docs build: render the RST literal blocks of the docstrings.

The docstrings are written for ``help()`` and for reading in the source: an example is a
paragraph ending in ``::`` followed by an indented block (``Example::``). Markdown would show
the ``::`` and an unhighlighted block, so this rewrites each such block into a fenced code
block (Python for examples, ``pycon`` for doctests, plain text otherwise) before
mkdocstrings renders the docstring. The docstrings themselves are left as they are.
"""

from __future__ import annotations

import textwrap
from typing import Any

from griffe import Extension, Object


def convert(text: str) -> str:
    """The docstring ``text`` with every ``::`` literal block turned into a fenced block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        head = line.rstrip()
        if not (head.endswith("::") and i + 1 < len(lines) and not lines[i + 1].strip()):
            out.append(line)
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        j = i + 2
        while j < len(lines) and (
            not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent
        ):
            j += 1
        while j > i + 2 and not lines[j - 1].strip():
            j -= 1  # trailing blank lines stay outside the block
        block = lines[i + 2 : j]
        if not block:
            out.append(line)
            i += 1
            continue
        code = textwrap.dedent("\n".join(block))
        lead = head[:-2].strip()
        pad = " " * indent
        example = lead.startswith("Example")
        if example:
            out.append(f"{pad}**{lead}**")
        elif lead:
            out.append(f"{pad}{head[:-2].strip()}:")
        if code.lstrip().startswith(">>>"):
            language = "pycon"
        elif example:
            language = "python"
        else:
            language = "text"
        out.append("")
        out.append(f"{pad}```{language}")
        out.extend(f"{pad}{row}" if row else "" for row in code.split("\n"))
        out.append(f"{pad}```")
        i = j
    return "\n".join(out)


class RstLiteralBlocks(Extension):
    """Fence the ``::`` literal blocks of every docstring griffe loads."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None and "::" in obj.docstring.value:
            obj.docstring.value = convert(obj.docstring.value)
