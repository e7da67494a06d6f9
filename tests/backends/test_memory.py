"""SimpleBackend specifics: LRU eviction under max_entries makes room with expired keys
first."""

from __future__ import annotations

import pytest

import acacheorm.backends.memory as memory
from acacheorm import SimpleBackend


class Clock:
    """A monotonic clock the test moves by hand (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(memory, "time", c)
    return c


async def test_expired_keys_are_evicted_before_live_ones(clock: Clock) -> None:
    backend = SimpleBackend(max_entries=3)
    await backend.set("live-old", b"1")  # least recently used, never expires
    await backend.set("short", b"2", ttl=5)
    await backend.set("live", b"3")
    clock.now += 10  # "short" has expired but still holds a slot
    await backend.set("new", b"4")
    assert await backend.get_many("live-old", "live", "new") == [b"1", b"3", b"4"]
    assert await backend.get("short") is None


async def test_without_expired_keys_the_least_recently_used_goes(clock: Clock) -> None:
    backend = SimpleBackend(max_entries=2)
    await backend.set("a", b"1", ttl=50)
    await backend.set("b", b"2", ttl=50)
    await backend.get("a")  # "b" is now the least recently used
    clock.now += 10  # nothing has expired
    await backend.set("c", b"3")
    assert await backend.get_many("a", "b", "c") == [b"1", None, b"3"]


async def test_touched_and_overwritten_keys_keep_their_new_expiry(clock: Clock) -> None:
    backend = SimpleBackend(max_entries=3)
    await backend.set("touched", b"1", ttl=5)
    await backend.touch("touched", 100)  # now outlives its first expiry
    await backend.set("rewritten", b"2", ttl=5)
    await backend.set("rewritten", b"2", ttl=100)
    await backend.set("expiring", b"3", ttl=5)
    clock.now += 10
    await backend.set("new", b"4")
    assert await backend.get_many("touched", "rewritten", "expiring", "new") == [
        b"1",
        b"2",
        None,
        b"4",
    ]


async def test_expiry_bookkeeping_stays_bounded(clock: Clock) -> None:
    backend = SimpleBackend(max_entries=10)
    for i in range(5000):
        await backend.set(f"k{i % 5}", b"v", ttl=60)
    assert len(backend._expiries) <= 2 * 5 + 64


async def test_a_subclass_that_overrides_execute_sees_lone_reads_too() -> None:
    """A lone read is answered without the batch machinery only by SimpleBackend's own
    ``_execute``: a subclass that wraps it (counting, injecting faults) sees every read."""
    seen: list[list[str]] = []

    class Watched(SimpleBackend):
        async def _execute(self, batch: memory.Batch) -> list[object]:
            seen.append([c.key for c in batch.commands])
            return await super()._execute(batch)

    backend = Watched(namespace="app")
    await backend.set("a", b"1")
    assert await backend.get("a") == b"1"
    assert await backend.get("absent") is None
    assert await backend.get_many("a", "absent") == [b"1", None]
    assert seen == [["app:a"], ["app:a"], ["app:absent"], ["app:a", "app:absent"]]


async def test_reads_in_a_namespace_drop_expired_keys_and_refresh_lru(clock: Clock) -> None:
    backend = SimpleBackend(namespace="app", max_entries=3)
    await backend.set("a", b"1")
    await backend.set("b", b"2")
    await backend.set("short", b"3", ttl=5)
    clock.now += 10
    assert await backend.get_many("short", "a", "absent") == [None, b"1", None]
    assert "app:short" not in backend._data  # the expired key was dropped by the read
    assert await backend.get("a") == b"1"
    await backend.set("c", b"4")
    await backend.set("d", b"5")  # "b" is the least recently used: evicted, "a" stays
    assert await backend.get_many("a", "b", "c", "d") == [b"1", None, b"4", b"5"]
