"""Query objects as coroutines (``asyncio.run``, ``create_task``, ``TaskGroup``), the
warning for a write that is never awaited, and backends named at start-up
(``co.backends.configure``/``override``)."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import warnings
import weakref
from typing import Any

import pytest

import acacheorm as co

store = co.SimpleBackend()


class Item(co.Model):
    id = co.IntegerField(primary_key=True)
    name = co.StringField(default="")

    class Meta:
        backend = store
        serializer = "json"


class Named(co.Model):
    id = co.IntegerField(primary_key=True)

    class Meta:
        backend = "protocol-test"
        serializer = "json"


# -- 3. tasks and asyncio.run ------------------------------------------------------------------


async def test_create_task_and_task_group_take_a_query() -> None:
    assert asyncio.iscoroutine(Item.get(id=1))
    task = asyncio.create_task(Item.create(id=1, name="a"))
    assert (await task).name == "a"
    async with asyncio.TaskGroup() as tg:
        got = tg.create_task(Item.get(id=1))
        missing = tg.create_task(Item.get_or_none(id=404))
        updated = tg.create_task(Item.update(id=1, name="b"))
    assert got.result().id == 1 and missing.result() is None
    assert updated.result().name == "b"
    assert (await asyncio.gather(Item.query(id=1), Item.delete(id=1))) == [updated.result(), True]


async def test_a_query_runs_again_in_each_task_and_can_be_cancelled() -> None:
    query = Item.get_or_none(id=2)
    assert await asyncio.create_task(query) is None
    await Item.create(id=2)
    assert (await asyncio.create_task(query)).id == 2  # a new execution, not a stale result
    assert (await query).id == 2
    slow = asyncio.create_task(Item.get(id=2))
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert (await asyncio.create_task(Item.delete(id=2))) is True


def test_asyncio_run_takes_a_query() -> None:
    row = asyncio.run(Item.create(id=3, name="run"))
    assert row.name == "run"
    assert asyncio.run(Item.get(id=3)).name == "run"
    assert asyncio.run(Item.delete(id=3)) is True


# -- 2. a write that is never awaited ----------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "shown"),
    [
        (lambda: Item.create(id=9), "<InsertQuery Item insert id=9>"),
        (lambda: Item.insert(id=9), "<InsertQuery Item insert id=9>"),
        (lambda: Item.insert_many({"id": 1}, {"id": 2}), "<InsertQuery Item insert 2 rows>"),
        (lambda: Item.update(id=9, name="x"), "<UpdateQuery Item id=9>"),
        (lambda: Item.update_many({"id": 9, "name": "x"}), "<UpdateQuery Item id=9>"),
        (lambda: Item.set_by_id(9, {"name": "x"}), "<UpdateQuery Item id=9>"),
        (lambda: Item.delete(id=9), "<DeleteQuery Item id=9>"),
        (lambda: Item.delete_by_id(9), "<DeleteQuery Item id=9>"),
        (lambda: Item.delete_many(1, 2, 3), "<DeleteQuery Item 3 rows>"),
        (lambda: Item.get_or_create(id=9), "<GetOrCreateQuery Item id=9>"),
        (lambda: Item(id=9).save(), "<InsertQuery Item save id=9>"),
        (lambda: Item(id=9).delete_instance(), "<DeleteQuery Item id=9>"),
        (lambda: co.insert_many(Item(id=9)), "<MultiQuery co.insert_many of 1 instance(s)>"),
        (lambda: co.delete_many((Item, 9)), "<MultiQuery co.delete_many of 1 row(s)>"),
    ],
)
def test_a_write_never_awaited_warns_naming_it(build: Any, shown: str) -> None:
    with pytest.warns(RuntimeWarning, match="was never awaited") as record:
        build()
        gc.collect()
    assert [str(w.message).split(" was never")[0] for w in record] == [shown]


async def test_no_warning_for_writes_that_ran_or_were_compiled_nor_for_reads() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await Item.create(id=10)
        await Item.update(id=10, name="x").execute()
        Item.delete(id=10).compile()
        await asyncio.create_task(Item.delete(id=10))
        Item.get(id=10)
        Item.query_many(1, 2)
        co.query_many((Item, 1))
        with pytest.raises(co.ValidationError):
            Item.create(id="not an int")
        with pytest.raises(ValueError):
            Item.create(id=11, ttl=-1)
        gc.collect()


def test_no_warning_at_interpreter_shutdown() -> None:
    code = textwrap.dedent(
        """
        import acacheorm as co

        class Item(co.Model):
            id = co.IntegerField(primary_key=True)

            class Meta:
                backend = co.SimpleBackend()
                serializer = "json"

        pending = Item.create(id=1)   # still referenced when the interpreter exits
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stderr == ""


# -- 6. backends named at start-up ------------------------------------------------------------


async def test_a_named_backend_is_bound_at_first_use() -> None:
    co.backends.unconfigure("protocol-test")
    with pytest.raises(co.ConfigurationError, match=r"Named\.Meta\.backend is 'protocol-test'"):
        await Named.get_or_none(id=1)
    backend = co.SimpleBackend()
    co.backends.configure(**{"protocol-test": backend})
    try:
        await Named.create(id=1)
        assert await backend.has("named:1")
        assert co.backends.get("protocol-test") is backend
        co.backends.configure(**{"protocol-test": "memory://?namespace=url"})  # a URL
        assert co.backends.get("protocol-test").namespace == "url"
        assert await Named.get_or_none(id=1) is None  # the new backend is used at once
    finally:
        co.backends.unconfigure("protocol-test")


async def test_override_swaps_backends_for_a_block_and_restores_them() -> None:
    outer = co.SimpleBackend()
    co.backends.configure(**{"protocol-test": outer})
    try:
        inner = co.SimpleBackend()
        with co.backends.override(**{"protocol-test": inner}):
            await Named.create(id=2)
            async with co.backends.override(**{"protocol-test": "memory://"}):
                assert await Named.get_or_none(id=2) is None
            assert await inner.has("named:2")
        assert co.backends.get("protocol-test") is outer
        assert not await outer.has("named:2")
        with co.backends.override(brand_new=inner):
            assert co.backends.get("brand_new") is inner
        with pytest.raises(co.ConfigurationError, match="brand_new"):
            co.backends.get("brand_new")
    finally:
        co.backends.unconfigure("protocol-test")


def test_configuration_errors() -> None:
    with pytest.raises(co.ConfigurationError, match="URL or a co"):
        co.backends.configure(main=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported backend URL scheme"):
        co.backends.configure(main="nope://x")
    assert "main" not in co.backends.configured()
    with pytest.raises(co.ConfigurationError, match="not 'redis://x'"):

        class Url(co.Model):
            class Meta:
                backend = "redis://x"
                serializer = "json"


async def test_one_query_object_in_two_concurrent_tasks_runs_twice() -> None:
    await Item.create(id=20, name="twice")
    query = Item.get(id=20)
    first, second = asyncio.create_task(query), asyncio.create_task(query)
    assert [(await first).name, (await second).name] == ["twice", "twice"]
    writes = Item.update(id=20, name=Item.name + "!")
    await asyncio.gather(asyncio.create_task(writes), asyncio.create_task(writes))
    assert (await Item.get(id=20)).name == "twice!!"
    assert await Item.delete(id=20)


async def test_a_query_driven_by_several_tasks_keeps_each_execution_apart() -> None:
    await Item.create(id=21, name="x")
    query = Item.get(id=21)
    tasks = [asyncio.create_task(query) for _ in range(3)]
    await asyncio.sleep(0)  # all three started (and wait for their read)
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0].name == results[2].name == "x"
    assert isinstance(results[1], asyncio.CancelledError)
    assert (await asyncio.create_task(query)).name == "x"  # a new run once all have ended
    assert query._coro is None and not query._coros  # no execution is kept once it ended
    assert await Item.delete(id=21)


# -- 4. the future face: gather, ensure_future, wait_for, shield without a task per read -------


class Batches:
    """A batch hook recording each batch's size and how many tasks were alive then."""

    def __init__(self) -> None:
        self.events: list[tuple[int, int]] = []

    def __call__(self, event: co.BatchEvent) -> None:
        self.events.append((len(event.batch.commands), len(asyncio.all_tasks())))

    def __enter__(self) -> Batches:
        co.add_batch_hook(self)
        return self

    def __exit__(self, *exc: object) -> None:
        co.remove_batch_hook(self)


async def test_gathered_reads_merge_into_one_batch_without_a_task_each() -> None:
    await Item.insert_many(*(Item(id=i, name=f"n{i}") for i in range(100, 400)))
    before = len(asyncio.all_tasks())
    with Batches() as batches:
        rows = await asyncio.gather(*(Item.get_by_id(i) for i in range(100, 400)))
    assert [r.name for r in rows] == [f"n{i}" for i in range(100, 400)]
    # one batch of 300 reads, run by one task: not a task per read
    assert len(batches.events) == 1
    size, tasks = batches.events[0]
    assert size == 300 and tasks - before <= 1
    assert await Item.delete_many(*range(100, 400)) == 300


async def test_a_read_is_a_future_to_asyncio_only_where_it_runs_without_a_task() -> None:
    read = Item.get_by_id(1)
    assert asyncio.iscoroutine(read) and asyncio.isfuture(read)
    assert not asyncio.isfuture(Item.query_many(1, 2))
    create = Item.create(id=1)
    assert not asyncio.isfuture(create)
    await create
    with pytest.raises(Item.DoesNotExist):
        await read  # the run that isfuture started, before the row was written
    assert (await read).id == 1  # claimed: a new run
    await Item.delete(id=1)


def test_outside_a_running_loop_a_read_is_a_coroutine_to_asyncio() -> None:
    async def setup() -> None:
        await Item.create(id=30, name="loop")

    asyncio.run(setup())
    query = Item.get(id=30)
    assert not asyncio.isfuture(query)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(query).name == "loop"  # a task, as before
        assert loop.run_until_complete(Item.delete(id=30))
    finally:
        loop.close()


async def test_missing_rows_and_errors_reach_gather_as_from_tasks() -> None:
    await Item.create(id=31, name="here")
    with pytest.raises(Item.DoesNotExist):
        await asyncio.gather(Item.get_by_id(31), Item.get_by_id(404))
    got = await asyncio.gather(
        Item.get_by_id(31), Item.get_by_id(404), Item.get_or_none(id=404), return_exceptions=True
    )
    assert got[0].name == "here" and got[2] is None
    assert isinstance(got[1], Item.DoesNotExist) and "404" in str(got[1])
    await store.set(Item._schema.key((32,)), b"not a row")
    got = await asyncio.gather(Item.get_by_id(31), Item.get_by_id(32), return_exceptions=True)
    assert got[0].name == "here" and isinstance(got[1], co.SerializationError)
    await store.delete(Item._schema.key((32,)))
    assert await Item.delete(id=31)


async def test_ensure_future_runs_a_read_at_once_and_await_takes_that_run() -> None:
    await Item.create(id=33, name="first")
    query = Item.get(id=33)
    fut = asyncio.ensure_future(query)
    assert fut is query and not fut.done()
    with pytest.raises(asyncio.InvalidStateError):
        fut.result()
    ended = asyncio.Event()
    fut.add_done_callback(lambda _: ended.set())
    async with asyncio.timeout(5):
        await ended.wait()  # it runs without being awaited, as a task would
    await Item.update(id=33, name="second")
    assert (await fut).name == "first"  # the outcome of the run that ensure_future started
    assert (await fut).name == "second"  # claimed: awaiting again runs the query again
    again = await asyncio.gather(query)  # and so does gathering it
    assert again[0].name == "second"
    assert await Item.delete(id=33)


async def test_gathering_the_same_read_twice_runs_it_each_time() -> None:
    await Item.create(id=34, name="a")
    query = Item.get(id=34)
    assert [r.name for r in await asyncio.gather(query, query)] == ["a", "a"]
    await Item.update(id=34, name="b")
    assert (await asyncio.gather(query))[0].name == "b"
    assert (await asyncio.wait_for(query, 5)).name == "b"
    assert (await asyncio.shield(query)).name == "b"
    done = [await f for f in asyncio.as_completed([query, Item.get_or_none(id=404)])]
    assert sorted(map(repr, done)) == sorted([repr(None), repr(query.result())])
    assert await Item.delete(id=34)


async def test_cancelling_gathered_reads() -> None:
    await Item.insert_many(*(Item(id=i) for i in range(40, 45)))
    reads = [Item.get_by_id(i) for i in range(40, 45)]
    assert [asyncio.ensure_future(read) for read in reads] == reads
    assert reads[1].cancel("stop") and not reads[1].cancel()
    got = await asyncio.gather(*reads, return_exceptions=True)
    assert isinstance(got[1], asyncio.CancelledError) and reads[1].cancelled()
    assert [g.id for i, g in enumerate(got) if i != 1] == [40, 42, 43, 44]
    # the whole gather cancelled: every read under way is cancelled, nothing else breaks
    outer = asyncio.gather(*(Item.get_by_id(i) for i in range(40, 45)))
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    # a task awaiting a read that is cancelled cancels the read, as awaiting a task does
    read = Item.get_by_id(40)
    assert asyncio.ensure_future(read) is read
    waiter = asyncio.ensure_future(asyncio.shield(read))
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (await read).id == 40  # shielded: the read itself went on
    assert await Item.delete_many(*range(40, 45)) == 5


@pytest.mark.parametrize("options", [{"auto_batch": False}, {"near_cache": co.NearCache()}])
async def test_without_a_window_to_join_a_gathered_read_runs_as_a_task(
    options: dict[str, Any],
) -> None:
    backend = co.SimpleBackend(**options)

    class Solo(co.Model):
        id = co.IntegerField(primary_key=True)
        Meta = type("Meta", (), {"backend": backend, "serializer": "json"})

    await Solo.insert_many(Solo(id=1), Solo(id=2))
    with Batches() as batches:
        got = await asyncio.gather(Solo.get_by_id(1), Solo.get_or_none(id=3), Solo.get_by_id(2))
    assert [g and g.id for g in got] == [1, None, 2]
    assert len(batches.events) >= 1
    with pytest.raises(Solo.DoesNotExist):
        await asyncio.gather(Solo.get_by_id(5))


async def test_a_read_joining_an_open_window_by_hand_answers_raises_and_closes() -> None:
    await Item.insert_many({"id": 41, "name": "a"}, {"id": 42, "name": "b"})
    seen: list[Any] = []

    async def by_hand() -> None:
        # The opener below waits for its batching window: these reads join it, each
        # driven as a task drives a coroutine (send, throw, close).
        answered, thrown, closed = Item.get(id=41), Item.get(id=42), Item.get(id=43)
        missing = Item.get(id=43)
        fut = answered.send(None)
        assert asyncio.isfuture(fut) and fut._asyncio_future_blocking
        absent = missing.send(None)
        thrown.send(None)
        closed.send(None)
        with pytest.raises(LookupError, match="thrown in"):
            thrown.throw(LookupError("thrown in"))
        closed.close()
        assert thrown._coro is None and closed._coro is None
        await asyncio.wait([fut, absent])  # the window's round trip answers them
        with pytest.raises(StopIteration) as stop:
            answered.send(None)
        seen.append(stop.value.value)
        with pytest.raises(Item.DoesNotExist, match="id=43"):
            missing.send(None)
        assert answered._coro is None and missing._coro is None

    opener = asyncio.ensure_future(Item.get(id=42))
    helper = asyncio.ensure_future(by_hand())
    assert (await opener).name == "b"
    await helper
    assert [row.name for row in seen] == ["a"]
    assert await Item.delete_many(41, 42) == 2


async def test_reads_awaited_in_tasks_share_a_window_each_with_its_own_answer() -> None:
    await Item.insert_many(*({"id": i, "name": f"n{i}"} for i in range(50, 80)))
    await store.set("item:60", b"corrupt")

    async def handler(i: int) -> Any:
        return await (Item.get(id=i) if i % 2 else Item.get_or_none(id=i))

    results = await asyncio.gather(*(handler(i) for i in range(50, 90)), return_exceptions=True)
    for i, got in zip(range(50, 90), results, strict=True):
        if i == 60:
            assert isinstance(got, co.SerializationError)
        elif i < 80:
            assert got.name == f"n{i}"
        elif i % 2:
            assert isinstance(got, Item.DoesNotExist) and f"id={i}" in str(got)
        else:
            assert got is None
    assert await Item.delete_many(*range(50, 80)) == 30


async def test_a_cancelled_read_leaves_its_place_in_the_window() -> None:
    """A run of a read answered by the batching window that is cancelled no longer stands in
    the window: a later run of the same query gets its own read's answer, never the one
    sent for the cancelled run."""
    await Item.create(id=60, name="v1")
    query = Item.get(id=60)
    assert asyncio.ensure_future(query) is query
    window = store.__dict__["_coalescer"].window
    assert query in window[-1].futures
    assert query.cancel()
    assert query not in window[-1].futures  # its place answers nobody now
    with pytest.raises(asyncio.CancelledError):
        query.result()
    await Item.update(id=60, name="v2")
    assert (await asyncio.gather(query))[0].name == "v2"
    assert await Item.delete(id=60)


async def test_gathered_reads_and_their_rows_are_freed_without_the_collector() -> None:
    """A read answered by the batching window makes no reference cycle (with itself, with
    its place in the window): once the gather is over, the queries and the rows they
    answered are freed as soon as nothing refers to them, not at some later collection
    (which would also have to walk them all)."""
    await Item.insert_many(*(Item(id=i, name=f"n{i}") for i in range(500, 520)))
    queries = [Item.get_by_id(i) for i in range(500, 520)]
    reads = [weakref.ref(q) for q in queries]
    gc.collect()
    gc.disable()
    try:
        rows = await asyncio.gather(*queries)
        assert [r.name for r in rows] == [f"n{i}" for i in range(500, 520)]
        del queries
        # the loop lets go of the gather (the handle that woke this task) at its next turn
        await asyncio.sleep(0)
        assert [read() for read in reads] == [None] * 20
        objects = len(gc.get_objects())
        del rows
        assert len(gc.get_objects()) <= objects - 20  # each row freed at once
    finally:
        gc.enable()
    assert await Item.delete_many(*range(500, 520)) == 20


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's shared-key dicts")
async def test_a_gathered_read_keeps_its_state_without_a_dict_of_its_own() -> None:
    """The state of a read's runs is kept in the key table its class shares, even when
    many queries were made before its first run (CPython adds a name to that table only
    while a class has few instances; past that, an instance setting a new name copies its
    attributes into a dict of its own, once per read)."""
    await Item.create(id=70, name="kept")
    made = [Item.get_by_id(i) for i in range(100)]  # queries that never run
    query = Item.get_by_id(70)
    assert (await asyncio.gather(query))[0].name == "kept"
    with pytest.raises(asyncio.CancelledError):
        ensured = asyncio.ensure_future(query)  # another run, cancelled
        assert ensured.cancel()
        await ensured
    assert not any(type(r) is dict for r in gc.get_referents(query)), "a dict of its own"
    assert len(made) == 100
    assert await Item.delete(id=70)
