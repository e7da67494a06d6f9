"""Automatic batching: concurrent awaits share one round trip, each gets its own result."""

from __future__ import annotations

import asyncio
import gc
import logging
from types import SimpleNamespace

import pytest

import acacheorm as co
from acacheorm.cli._demo import define_models
from tests.models.conftest import RoundTrips


async def fill(m: SimpleNamespace, n: int = 100) -> None:
    await m.User.insert_many(*({"id": i, "name": f"u{i}", "height": 1.0} for i in range(n)))


async def test_concurrent_gets_are_one_round_trip(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    await fill(models)
    round_trips.reset()
    users = await asyncio.gather(*(models.User.get_by_id(i) for i in range(100)))
    assert [u.id for u in users] == list(range(100))
    assert round_trips.count == 1
    assert round_trips.events[0].merged == 100


async def test_mixed_reads_and_writes_merge_and_keep_task_order(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    User = models.User
    await fill(models, 10)
    round_trips.reset()

    async def write_then_read(i: int) -> str:
        await User.create(id=i, name=f"new{i}", height=2.0)
        return (await User.get(id=i)).name

    names = await asyncio.gather(*(write_then_read(i) for i in range(10)))
    assert names == [f"new{i}" for i in range(10)]
    assert round_trips.count == 2  # all writes in one, all reads in the next


async def test_a_failure_reaches_only_its_caller(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    User = models.User
    await fill(models, 20)
    await models.backend.set("user:7", b"corrupt")
    round_trips.reset()
    results = await asyncio.gather(*(User.get_by_id(i) for i in range(20)), return_exceptions=True)
    assert round_trips.count == 1
    assert isinstance(results[7], co.SerializationError)
    assert all(r.id == i for i, r in enumerate(results) if i != 7)


async def test_merged_row_reads_of_several_models_each_get_their_own_answer(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    User, Article = models.User, models.Article
    await fill(models, 300)  # enough rows for the merged decode's bulk path
    await Article.insert_many(*({"id": i, "author": i, "title": f"t{i}"} for i in range(3)))
    await User.delete_many(11)
    await models.backend.set(User._schema.key((12,)), b"corrupt")
    round_trips.reset()
    users = [User.get_by_id(i) for i in range(300)]
    others = [User.get_or_none(id=11), Article.get_by_id(2), Article.get_or_none(id=9)]
    results = await asyncio.gather(*users, *others, return_exceptions=True)
    assert round_trips.count == 1
    assert round_trips.events[0].merged == 303
    assert isinstance(results[11], User.DoesNotExist)
    assert isinstance(results[12], co.SerializationError)
    assert results[12].key == User._schema.key((12,))
    assert all(
        type(r) is User and r.id == i for i, r in enumerate(results[:300]) if i not in (11, 12)
    )
    assert results[300] is None
    assert type(results[301]) is Article and results[301].title == "t2"
    assert results[302] is None
    assert gc.isenabled()  # paused while the rows were answered, on again after a failure


async def test_cancelling_one_caller_leaves_the_others(models: SimpleNamespace) -> None:
    User = models.User
    await fill(models, 50)
    tasks = [asyncio.ensure_future(User.get_by_id(i)) for i in range(50)]
    await asyncio.sleep(0)
    tasks[3].cancel()
    tasks[40].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert isinstance(results[40], asyncio.CancelledError)
    assert all(r.id == i for i, r in enumerate(results) if i not in (3, 40))


async def test_cancelling_the_window_opener_leaves_the_reads_that_joined_it(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    User = models.User
    await fill(models, 20)
    round_trips.reset()
    tasks = [asyncio.ensure_future(User.get_by_id(i)) for i in range(20)]
    tasks.append(asyncio.ensure_future(User.get_by_id(404)))
    await asyncio.sleep(0)  # the first opened the window, the others joined it
    tasks[0].cancel()  # while it waits for the window to close
    tasks[5].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert isinstance(results[5], asyncio.CancelledError)
    assert isinstance(results[20], User.DoesNotExist)
    assert all(r.id == i for i, r in enumerate(results[:20]) if i not in (0, 5))
    assert round_trips.count == 1  # the others' reads, without the opener's


async def test_lone_await_is_one_round_trip(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    await fill(models, 1)
    round_trips.reset()
    assert (await models.User.get(id=0)).id == 0
    assert round_trips.count == 1 and round_trips.events[0].merged == 1


async def test_auto_batch_can_be_switched_off(
    backend_factory: object, round_trips: RoundTrips
) -> None:
    backend = backend_factory(auto_batch=False)  # type: ignore[operator]
    async with backend:
        User, _, _ = define_models(backend, "msgpack")
        await User.insert_many(*({"id": i, "name": "x", "height": 1.0} for i in range(10)))
        round_trips.reset()
        await asyncio.gather(*(User.get_by_id(i) for i in range(10)))
        assert round_trips.count == 10
        await backend.clear()


@pytest.mark.parametrize("n", [1, 3])
async def test_atomic_batches_are_never_merged(
    models: SimpleNamespace, round_trips: RoundTrips, n: int
) -> None:
    if not models.backend.capabilities.atomic_batch:
        pytest.skip("this backend has no all-or-nothing batches")
    round_trips.reset()
    await asyncio.gather(
        *(
            models.User.insert_many({"id": i, "name": "x", "height": 1.0}, atomic=True)
            for i in range(n)
        )
    )
    assert round_trips.count == n


async def test_batch_hook_sees_hits_and_misses_and_cannot_break_queries(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    await fill(models, 5)
    round_trips.reset()

    def broken(event: co.BatchEvent) -> None:
        raise RuntimeError("metrics backend down")

    co.add_batch_hook(broken)
    try:
        got = await models.User.query_many(0, 1, 99, 2)
    finally:
        co.remove_batch_hook(broken)
    assert [u.id if u else None for u in got] == [0, 1, None, 2]
    [event] = round_trips.events
    assert (event.hits, event.misses) == (3, 1)


class _CountingLoop(asyncio.SelectorEventLoop):
    """Counts event-loop iterations."""

    iterations = 0

    def _run_once(self) -> None:
        self.iterations += 1
        super()._run_once()  # type: ignore[misc]


def test_lone_reads_on_an_idle_loop_do_not_wait_for_a_window() -> None:
    """With nothing else ready to run, no other task can join a batching window, so a lone
    read is sent at once: 100 sequential reads on the in-process backend take no loop
    iteration at all, while 100 concurrent ones are still merged into one round trip."""

    async def main() -> tuple[int, int]:
        backend = co.SimpleBackend()
        User, _, _ = define_models(backend, "msgpack")
        await User.insert_many(*({"id": i, "name": "a", "height": 1.0} for i in range(100)))
        loop = asyncio.get_running_loop()
        assert isinstance(loop, _CountingLoop)
        before = loop.iterations
        for i in range(100):
            assert (await User.get_by_id(i)).id == i
        spent = loop.iterations - before
        counter = RoundTrips()
        co.add_batch_hook(counter)
        try:
            await asyncio.gather(*(User.get_by_id(i) for i in range(100)))
        finally:
            co.remove_batch_hook(counter)
        return spent, counter.count

    with asyncio.Runner(loop_factory=_CountingLoop) as runner:
        assert runner.run(main()) == (0, 1)


def test_a_lone_read_answered_in_the_process_is_still_seen(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lone read on the in-process backend is answered at once, without a batch; it is
    still logged at debug level, seen by a backend subclass that wraps ``_execute``, and
    the same answer as the batch would give (a hit, a miss, ``DoesNotExist``)."""
    seen: list[list[str]] = []

    class Watched(co.SimpleBackend):
        async def _execute(self, batch: co.Batch) -> list[object]:
            seen.append([c.key for c in batch.commands])
            return await super()._execute(batch)

    async def main() -> None:
        for backend in (co.SimpleBackend(namespace="ns"), Watched(namespace="ns")):
            User, _, _ = define_models(backend, "msgpack")
            await User.insert_many({"id": 1, "name": "a", "height": 1.0})
            seen.clear()
            assert (await User.get_by_id(1)).name == "a"
            assert await User.get_or_none(id=2) is None
            with pytest.raises(User.DoesNotExist):
                await User.get(id=3)
            watched = isinstance(backend, Watched)
            assert seen == ([["ns:user:1"], ["ns:user:2"], ["ns:user:3"]] if watched else [])
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="acacheorm"):
            assert (await User.get_by_id(1)).name == "a"
        assert [r.getMessage() for r in caplog.records if "1 commands" in r.getMessage()]

    asyncio.run(main())


# -- the raw byte API goes through the executor too -------------------------------------------


async def test_batch_hooks_see_raw_calls_with_hits_and_misses(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    backend = models.backend
    await backend.set("raw:1", b"one", ttl=60)
    assert await backend.get("raw:1") == b"one"
    assert await backend.get("raw:absent") is None
    assert await backend.get_many("raw:1", "raw:absent", "raw:1") == [b"one", None, b"one"]
    assert await backend.has("raw:absent") is False
    assert await backend.incr("raw:n", 2) == 2
    assert await backend.delete("raw:1") is True
    kinds = [[type(c).__name__ for c in e.batch.commands] for e in round_trips.events]
    assert kinds == [["Set"], ["Get"], ["Get"], ["Get"] * 3, ["Has"], ["Incr"], ["Delete"]]
    assert [(e.hits, e.misses) for e in round_trips.events] == [
        (0, 0),
        (1, 0),
        (0, 1),
        (2, 1),
        (0, 1),
        (0, 0),
        (0, 0),
    ]
    assert all(e.error is None and e.merged == 1 for e in round_trips.events)


async def test_concurrent_raw_gets_are_one_round_trip(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    backend = models.backend
    await backend.set_many({f"raw:{i}": str(i).encode() for i in range(50)})
    round_trips.reset()
    values = await asyncio.gather(*(backend.get(f"raw:{i}") for i in range(50)))
    assert values == [str(i).encode() for i in range(50)]
    [event] = round_trips.events
    assert event.merged == 50 and (event.hits, event.misses) == (50, 0)


async def test_raw_calls_and_queries_share_a_round_trip(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    await fill(models, 3)
    backend = models.backend
    round_trips.reset()
    user, raw, missing = await asyncio.gather(
        models.User.get_by_id(1), backend.get("user:2"), backend.get("raw:none")
    )
    assert user.id == 1 and raw is not None and missing is None
    [event] = round_trips.events
    assert event.merged == 3 and (event.hits, event.misses) == (2, 1)


async def test_a_raw_failure_reaches_only_its_caller(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    backend = models.backend
    await backend.set_many({"raw:text": b"not a number", "raw:ok": b"fine"})
    round_trips.reset()
    results = await asyncio.gather(
        backend.incr("raw:text"), backend.get("raw:ok"), return_exceptions=True
    )
    assert isinstance(results[0], co.BackendError)
    assert results[1] == b"fine"
    # memcached's own incr refuses the value; the executor then reads it (a Gets of its
    # own, seen by hooks) to tell a number it cannot take from one that is no number
    assert round_trips.count == (1 if backend.capabilities.negative_incr else 2)


async def test_merged_raw_calls_on_one_key_keep_their_order(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    backend = models.backend
    counts = await asyncio.gather(*(backend.incr("raw:hits") for _ in range(30)))
    assert counts == list(range(1, 31))  # in call order, none lost
    assert round_trips.count == 1
    first, second, value = await asyncio.gather(
        backend.add("raw:once", b"a"), backend.add("raw:once", b"b"), backend.get("raw:once")
    )
    assert (first, second, value) == (True, False, b"a")


async def test_a_large_query_many_pauses_the_collector_while_it_makes_its_commands() -> None:
    """Building a multi-get's keys and commands (a tuple each) and decoding its rows run
    with the cyclic collector paused: a handful of young collections per 3,000-row read
    instead of one per 700 tuples, whose promotions made a full collection every few
    reads; a caller's own ``gc.disable()`` is left as it was."""
    backend = co.SimpleBackend(namespace="gcpause")
    m = SimpleNamespace(User=define_models(backend, "msgpack")[0])
    await fill(m, 3000)
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    try:
        rows = await m.User.query_many(*range(3000))
    finally:
        gc.callbacks.remove(count)
    assert [u.id for u in rows] == list(range(3000))
    assert len(collections) <= 5, collections
    assert gc.isenabled()
    gc.disable()
    try:
        await m.User.query_many(*range(3000))
        assert not gc.isenabled()
    finally:
        gc.enable()
