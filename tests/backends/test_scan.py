"""Conformance of `Backend.scan` (key enumeration), on every backend that implements it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from acacheorm.backends.base import Backend


async def scan_all(backend: Backend, prefix: str = "", count: int = 500) -> list[str]:
    """Every key the scan yields, in order; skips the test where scan is not implemented."""
    try:
        return [key async for key in backend.scan(prefix, count)]
    except NotImplementedError as exc:
        pytest.skip(f"{type(backend).__name__} does not implement scan: {exc}")


async def test_lists_every_key_once_without_the_namespace(backend: Backend) -> None:
    keys = [f"user:{i}" for i in range(40)] + ["article:1", "article:2", "x"]
    await backend.set_many({k: b"v" for k in keys})
    found = await scan_all(backend, count=7)
    assert len(found) == len(set(found)), "a key was yielded twice"
    assert sorted(found) == sorted(keys)
    for key in found[:3]:
        assert await backend.get(key) == b"v"  # yielded keys are keys `get` reads


async def test_prefix(backend: Backend) -> None:
    await backend.set_many({"user:1": b"a", "user:2": b"b", "users": b"c", "article:1": b"d"})
    assert sorted(await scan_all(backend, "user:")) == ["user:1", "user:2"]
    assert sorted(await scan_all(backend, "user")) == ["user:1", "user:2", "users"]
    assert await scan_all(backend, "nothing-here:") == []


async def test_empty_store(backend: Backend) -> None:
    assert await scan_all(backend) == []


async def test_deleted_and_cleared_keys_are_gone(backend: Backend) -> None:
    await backend.set_many({"a": b"1", "b": b"2", "c": b"3"})
    await backend.delete("b")
    assert sorted(await scan_all(backend)) == ["a", "c"]
    await backend.clear()
    assert await scan_all(backend) == []


async def test_other_namespaces_are_not_listed(backend: Backend, backend_factory: Any) -> None:
    other = backend_factory()
    async with other:
        try:
            await other.set("mine:1", b"other")
            await backend.set("mine:2", b"this")
            assert await scan_all(backend) == ["mine:2"]
            assert await scan_all(other) == ["mine:1"]
        finally:
            await other.clear()


async def test_expired_keys_are_not_listed(backend: Backend) -> None:
    await backend.set("short", b"x", ttl=1)
    await backend.set("long", b"y", ttl=3600)
    await backend.set("forever", b"z")
    deadline = time.monotonic() + 6
    while True:
        found = sorted(await scan_all(backend))
        if "short" not in found:
            break
        assert time.monotonic() < deadline, "an expired key is still listed"
        await asyncio.sleep(0.1)
    assert found == ["forever", "long"]


async def test_unusual_keys(backend: Backend) -> None:
    plain = ["{tag}:x", "a/../b", "percent%s", "CON", "..", "A", "a"]
    odd = ["with space", "ünïcødé", "new\nline", "x" * 300, "~tilde", ""]
    await backend.set_many({k: b"v" for k in plain + odd})
    found = await scan_all(backend)
    if type(backend).__name__ == "MemcachedBackend":
        # keys memcached cannot hold are stored under a sha1 of themselves: not listable
        assert sorted(found) == sorted(plain)
    else:
        assert sorted(found) == sorted(plain + odd)


async def test_arguments_are_checked(backend: Backend) -> None:
    with pytest.raises(ValueError, match="count"):
        await scan_all(backend, count=0)
    with pytest.raises(TypeError, match="prefix"):
        await scan_all(backend, prefix=b"user:")  # type: ignore[arg-type]


async def test_base_class_says_it_is_not_implemented() -> None:
    class Bare(Backend):
        async def _execute(self, batch: Any) -> list[Any]:
            return []

        async def _clear(self) -> None:
            pass

    with pytest.raises(NotImplementedError, match="Bare cannot enumerate its keys"):
        async for _ in Bare().scan():
            pass
