"""The backend conformance suite: one set of behaviours, run on every backend."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import acacheorm as co
from acacheorm._commands import KEEP_TTL, Add, Batch, Cas, Delete, Get, Gets, Incr, Set
from acacheorm._executor import execute_batch
from acacheorm.backends import base
from acacheorm.backends.base import Backend


async def eventually(check: Callable[[], Awaitable[bool]], limit: float = 6.0) -> None:
    """Poll ``check`` until true; bounded, for TTL expiry (stores expire lazily)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met within the timeout")


async def gone(backend: Backend, key: str) -> None:
    async def check() -> bool:
        return await backend.get(key) is None

    await eventually(check)


async def test_set_get_overwrite(backend: Backend) -> None:
    assert await backend.get("k") is None
    await backend.set("k", b"one")
    assert await backend.get("k") == b"one"
    await backend.set("k", b"two")
    assert await backend.get("k") == b"two"


async def test_values_are_bytes_exact(backend: Backend) -> None:
    values = [b"", b"\x00\x01\xff", b"\r\nEND\r\n", bytes(range(256)) * 40]
    for i, v in enumerate(values):
        await backend.set(f"v{i}", v)
    assert await backend.get_many(*[f"v{i}" for i in range(len(values))]) == values


async def test_unusual_keys(backend: Backend) -> None:
    keys = [
        "with space",
        "tab\there",
        "new\nline",
        "ünïcødé",
        "{tag}:x",
        "a/../b",
        "A",
        "a",
        "x" * 300,
        "",
        "percent%s",
        "..",
        "CON",
        "nul\x00",
    ]
    for i, k in enumerate(keys):
        await backend.set(k, str(i).encode())
    got = await backend.get_many(*keys)
    assert got == [str(i).encode() for i in range(len(keys))]


async def test_add(backend: Backend) -> None:
    assert await backend.add("k", b"first") is True
    assert await backend.add("k", b"second") is False
    assert await backend.get("k") == b"first"


async def test_replace(backend: Backend) -> None:
    assert await backend.replace("k", b"x") is False
    assert await backend.get("k") is None
    await backend.set("k", b"a")
    assert await backend.replace("k", b"b") is True
    assert await backend.get("k") == b"b"


async def test_delete_and_has(backend: Backend) -> None:
    assert await backend.has("k") is False
    assert await backend.delete("k") is False
    await backend.set("k", b"v")
    assert await backend.has("k") is True
    assert await backend.delete("k") is True
    assert await backend.has("k") is False
    assert await backend.get("k") is None


async def test_incr_decr(backend: Backend) -> None:
    assert await backend.incr("n") == 1
    assert await backend.incr("n", 10) == 11
    assert await backend.decr("n", 2) == 9
    assert await backend.get("n") == b"9"
    assert await backend.decr("m") == -1
    assert await backend.decr("m", 5) == -6
    assert await backend.incr("m", 7) == 1
    await backend.set("p", b"41")
    assert await backend.incr("p") == 42


async def test_incr_non_numeric_is_an_error_and_changes_nothing(backend: Backend) -> None:
    await backend.set("s", b"abc")
    with pytest.raises(co.BackendError):
        await backend.incr("s")
    assert await backend.get("s") == b"abc"


async def test_incr_bad_delta(backend: Backend) -> None:
    with pytest.raises(TypeError):
        await backend.incr("n", 1.5)  # type: ignore[arg-type]
    assert await backend.get("n") is None


async def test_get_many_order_missing_duplicates(backend: Backend) -> None:
    await backend.set_many({"a": b"1", "b": b"2", "c": b"3"})
    assert await backend.get_many("c", "missing", "a", "a", "b") == [b"3", None, b"1", b"1", b"2"]


async def test_empty_batches(backend: Backend) -> None:
    assert await backend.get_many() == []
    await backend.set_many({})
    assert await backend.add_many({}) == []
    assert await backend.replace_many({}) == []
    assert await backend.delete_many() == 0
    assert await backend.execute(Batch(())) == []


async def test_set_many_pairs_and_duplicates(backend: Backend) -> None:
    await backend.set_many([("a", b"1"), ("b", b"2"), ("a", b"3")])
    assert await backend.get_many("a", "b") == [b"3", b"2"]


async def test_add_many_replace_many(backend: Backend) -> None:
    await backend.set("b", b"old")
    assert await backend.add_many({"a": b"1", "b": b"2"}) == [True, False]
    assert await backend.get_many("a", "b") == [b"1", b"old"]
    assert await backend.replace_many({"b": b"new", "c": b"3"}) == [True, False]
    assert await backend.get_many("b", "c") == [b"new", None]


async def test_delete_many_counts(backend: Backend) -> None:
    await backend.set_many({"a": b"1", "b": b"2"})
    assert await backend.delete_many("a", "b", "c", "a") == 2
    assert await backend.get_many("a", "b") == [None, None]


async def test_many_keys_in_one_batch(backend: Backend) -> None:
    pairs = {f"key:{i}": f"value {i}".encode() for i in range(1000)}
    await backend.set_many(pairs, ttl=60)
    assert await backend.get_many(*pairs) == list(pairs.values())
    assert await backend.delete_many(*pairs) == 1000


async def test_ttl_expiry_is_seen_by_every_operation(backend: Backend) -> None:
    await backend.set_many({"a": b"1", "b": b"2", "c": b"3", "d": b"4"}, ttl=1)
    await backend.set("keep", b"k", ttl=None)
    assert await backend.get("a") == b"1"
    # Memcached nodes tick their clocks at different moments: wait for every key.
    for key in "abcd":
        await gone(backend, key)
    assert await backend.get_many("a", "b", "keep") == [None, None, b"k"]
    assert await backend.has("b") is False
    assert await backend.replace("c", b"x") is False
    assert await backend.incr("d", 5) == 5
    assert await backend.add("b", b"again") is True
    assert await backend.get("b") == b"again"
    assert await backend.touch("c", 10) is False
    assert await backend.delete("c") is False


async def test_ttl_timedelta_and_touch(backend: Backend) -> None:
    await backend.set("k", b"v", ttl=datetime.timedelta(seconds=1))
    assert await backend.touch("k", None) is True
    await backend.set("short", b"s", ttl=1)
    await gone(backend, "short")
    assert await backend.get("k") == b"v"  # touched to never expire
    assert await backend.touch("k", 1) is True
    await gone(backend, "k")


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
async def test_bad_ttl_is_a_value_error_and_writes_nothing(backend: Backend, ttl: float) -> None:
    with pytest.raises(ValueError):
        await backend.set("k", b"v", ttl=ttl)
    with pytest.raises(ValueError):
        await backend.set_many({"k": b"v"}, ttl=ttl)
    assert await backend.get("k") is None


@pytest.mark.parametrize("ttl", [1e-9, datetime.timedelta(microseconds=1)])
async def test_a_ttl_below_a_millisecond_expires_like_one_everywhere(
    backend: Backend, ttl: Any
) -> None:
    """Never "no expiry" (the Redis set-many script), an error (Redis SET) or a delete
    (Redis incr): rounded up to a millisecond (memcached: its next second)."""
    t = base.normalize_ttl(ttl)
    assert t == 0.001
    await backend.set("keep", b"k")
    await backend.set("one", b"1", ttl=ttl)
    await backend.set_many({"{t}a": b"a", "{t}b": b"b"}, ttl=ttl)  # one slot on Cluster
    assert await backend.add("added", b"x", ttl=ttl) is True
    assert await backend.incr("n", 3, ttl=ttl) == 3
    for key in ("one", "{t}a", "{t}b", "added", "n"):
        await gone(backend, key)
    assert await backend.get("keep") == b"k"


async def test_a_ttl_over_a_hundred_years_is_refused_before_any_io(backend: Backend) -> None:
    century = datetime.timedelta(days=36525)
    for ttl in (century * 2, 1e12, 10**30):
        with pytest.raises(ValueError, match="at most 3155760000 seconds"):
            await backend.set("k", b"v", ttl=ttl)
        with pytest.raises(ValueError, match="at most"):
            await backend.incr("n", ttl=ttl)
    assert await backend.get_many("k", "n") == [None, None]


async def test_a_long_ttl_is_kept_everywhere(backend: Backend) -> None:
    """Fifty years reach past 2038, the end of memcached's clock: the row is kept (until
    then on memcached), never silently dropped."""
    fifty_years = datetime.timedelta(days=365 * 50)
    await backend.set("k", b"v", ttl=fifty_years)
    await backend.set_many({"a": b"1", "b": b"2"}, ttl=fifty_years)
    assert await backend.add("c", b"3", ttl=fifty_years) is True
    assert await backend.incr("n", 2, ttl=fifty_years) == 2
    assert await backend.get_many("k", "a", "b", "c", "n") == [b"v", b"1", b"2", b"3", b"2"]
    assert await backend.touch("k", fifty_years) is True
    [(value, token)] = await backend.execute(Batch((Gets("k"),)))
    assert value == b"v"
    assert await backend.execute(Batch((Cas("k", b"w", token, KEEP_TTL),))) == [True]
    assert await backend.get("k") == b"w"
    assert await backend.replace("k", b"x", ttl=fifty_years) is True
    assert await backend.get("k") == b"x"


async def test_wrong_types(backend: Backend) -> None:
    with pytest.raises(TypeError):
        await backend.set("k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await backend.get(b"k")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await backend.set("k", b"v", ttl="10")  # type: ignore[arg-type]
    assert await backend.get("k") is None


async def test_batch_mixed_commands_in_order(backend: Backend) -> None:
    results = await backend.execute(
        Batch(
            (
                Set("a", b"1", None),
                Get("a"),
                Add("a", b"2", None),
                Incr("n", 3, None),
                Get("missing"),
                Delete("a"),
                Get("a"),
            )
        )
    )
    assert results == [True, b"1", False, 3, None, True, None]


async def test_a_failed_slot_names_its_command_and_index(backend: Backend) -> None:
    await backend.set("user:1", b"not a number")
    # Through the executor: memcached answers this incr with a gets/cas plan it runs there.
    results = await execute_batch(
        backend, Batch((Get("user:1"), Set("other", b"1", None), Incr("user:1", 1, None)))
    )
    assert results[:2] == [b"not a number", True]
    err = results[2]
    assert isinstance(err, co.BackendError)
    # the namespace is not part of the key shown; the index counts from 1
    assert str(err).startswith("command #3 (Incr 'user:1') of the batch: "), str(err)
    assert await backend.get("user:1") == b"not a number"


async def test_gets_and_cas(backend: Backend) -> None:
    assert (await backend.execute(Batch((Gets("k"),))))[0] is None
    await backend.set("k", b"one")
    [(value, token)] = await backend.execute(Batch((Gets("k"),)))
    assert value == b"one"
    await backend.set("k", b"two")  # someone else wrote meanwhile
    assert (await backend.execute(Batch((Cas("k", b"three", token, KEEP_TTL),))))[0] is False
    assert await backend.get("k") == b"two"
    [(value, token)] = await backend.execute(Batch((Gets("k"),)))
    assert (await backend.execute(Batch((Cas("k", b"three", token, KEEP_TTL),))))[0] is True
    assert await backend.get("k") == b"three"


async def test_cas_on_deleted_key_does_not_resurrect(backend: Backend) -> None:
    await backend.set("k", b"one")
    [(_, token)] = await backend.execute(Batch((Gets("k"),)))
    await backend.delete("k")
    assert (await backend.execute(Batch((Cas("k", b"x", token, KEEP_TTL),))))[0] is False
    assert await backend.get("k") is None


async def test_cas_keeps_ttl(backend: Backend) -> None:
    await backend.set("k", b"one", ttl=1)
    [(_, token)] = await backend.execute(Batch((Gets("k"),)))
    assert (await backend.execute(Batch((Cas("k", b"two", token, KEEP_TTL),))))[0] is True
    assert await backend.get("k") == b"two"
    await gone(backend, "k")


async def test_cas_with_new_ttl(backend: Backend) -> None:
    await backend.set("k", b"one", ttl=1)
    [(_, token)] = await backend.execute(Batch((Gets("k"),)))
    assert (await backend.execute(Batch((Cas("k", b"two", token, None),))))[0] is True
    await backend.set("probe", b"p", ttl=1)
    await gone(backend, "probe")
    assert await backend.get("k") == b"two"


async def test_concurrent_incr_is_exact(backend: Backend) -> None:
    async def worker() -> None:
        for _ in range(20):
            await backend.incr("counter")

    await asyncio.gather(*(worker() for _ in range(10)))
    assert await backend.get("counter") == b"200"


async def test_concurrent_cas_loses_nothing(backend: Backend) -> None:
    await backend.set("k", b"0")

    async def bump() -> None:
        while True:
            [(value, token)] = await backend.execute(Batch((Gets("k"),)))
            new = str(int(value) + 1).encode()
            if (await backend.execute(Batch((Cas("k", new, token, KEEP_TTL),))))[0]:
                return

    await asyncio.gather(*(bump() for _ in range(30)))
    assert await backend.get("k") == b"30"


async def test_clear_only_own_namespace(backend: Backend, backend_factory: Any) -> None:
    other = backend_factory()
    async with other:
        await other.set("k", b"other")
        await backend.set("k", b"mine")
        await backend.set_many({f"x{i}": b"1" for i in range(50)})
        await backend.clear()
        assert await backend.get("k") is None
        assert await backend.get_many("x0", "x49") == [None, None]
        assert await other.get("k") == b"other"
        await other.clear()


async def test_namespaces_do_not_collide(backend: Backend, backend_factory: Any) -> None:
    other = backend_factory()
    async with other:
        await backend.set("k", b"a")
        await other.set("k", b"b")
        assert await backend.get("k") == b"a"
        assert await other.get("k") == b"b"
        await other.clear()


async def test_context_manager_and_close(backend_factory: Any) -> None:
    b = backend_factory()
    async with b:
        await b.set("k", b"v")
        assert await b.get("k") == b"v"
        await b.clear()
