"""The public surface: a sorted ``__all__``, every name importable and documented."""

from __future__ import annotations

import inspect
import subprocess
import sys

import acacheorm as co


def test_all_is_sorted_and_importable() -> None:
    names = [n for n in co.__all__ if n != "__version__"]
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    for name in co.__all__:
        assert hasattr(co, name), name


def test_every_public_name_has_a_docstring_with_an_example() -> None:
    missing = []
    for name in co.__all__:
        obj = getattr(co, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        doc = inspect.getdoc(obj) or ""
        if "Example" not in doc:
            missing.append(name)
    assert missing == []


def test_import_needs_no_optional_driver() -> None:
    code = (
        "import sys, acacheorm\n"
        "bad = [m for m in ('redis', 'aiomcache', 'msgpack', 'google.protobuf', 'pydantic',"
        " 'fastapi', 'click', 'rich') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
