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
