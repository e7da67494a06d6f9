"""The public extension points: the command vocabulary and backend URL schemes."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import acacheorm as co
import acacheorm.commands as commands
from acacheorm import _commands


def test_commands_module_is_the_vocabulary() -> None:
    for name in commands.__all__:
        assert getattr(commands, name) is getattr(_commands, name), name
    assert commands.Batch((commands.Get("k"),)).commands == (commands.Get("k"),)


def test_import_acacheorm_commands_in_a_fresh_interpreter() -> None:
    code = "import acacheorm.commands as c; print(c.Cas.__name__, repr(c.KEEP_TTL))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["Cas", "KEEP_TTL"]


class _MyStore(co.SimpleBackend):
    url_schemes = ("mystore",)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> _MyStore:
        store = cls(**options)
        store.url = url  # type: ignore[attr-defined]
        return store


def test_backend_from_url_finds_a_third_party_scheme() -> None:
    backend = co.backend_from_url("mystore://somewhere/db?namespace=app&x=1")
    assert type(backend) is _MyStore
    assert backend.namespace == "app"
    assert backend.url == "mystore://somewhere/db?x=1"  # type: ignore[attr-defined]
    # its base's scheme still builds the base
    assert type(co.backend_from_url("memory://")) is co.SimpleBackend


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unsupported backend URL scheme 'nope'") as info:
        co.backend_from_url("nope://x")
    for scheme in ("memory", "file", "redis", "memcached", "mystore"):
        assert scheme in str(info.value)


def test_builtin_urls_keep_their_options(tmp_path: Any) -> None:
    memory = co.backend_from_url("memory://?max_entries=3&namespace=n")
    assert isinstance(memory, co.SimpleBackend) and memory.namespace == "n"
    with pytest.raises(ValueError, match="unknown option"):
        co.backend_from_url("memory://?bogus=1")
    files = co.backend_from_url(f"file://{tmp_path}?namespace=f")
    assert isinstance(files, co.FileSystemBackend) and files.path == str(tmp_path)
    with pytest.raises(ValueError, match="local path"):
        co.backend_from_url("file://elsewhere/x")


async def test_the_backend_guide_example_runs() -> None:
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "backends.md").read_text("utf-8")
    section = text[text.index("## Writing a backend") :]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    body = "".join(f"    {line}\n" for line in code.splitlines())
    namespace: dict[str, Any] = {}
    exec(f"async def _example():\n{body}    return backend\n", namespace)
    backend = await namespace["_example"]()
    assert type(backend).__name__ == "DictBackend"
    assert backend.data == {"app:k": b"v"}
    assert await backend.delete("k") and not await backend.has("k")
