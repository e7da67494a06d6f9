"""No lost data under concurrency: many tasks updating one row, on every backend.

Two backend objects on the same server (same namespace) play two clients, so the
compare-and-swap really races (updates through one backend object take turns locally)."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

import acacheorm as co
from acacheorm.backends.base import Backend

TASKS = 50
UPDATES = 100
FIELDS = 10


def counter_model(store: Backend) -> type[co.Model]:
    attrs: dict[str, Any] = {
        "__module__": __name__,
        "id": co.IntegerField(primary_key=True),
        "visits": co.IntegerField(default=0),
        **{f"f{i}": co.IntegerField(default=0) for i in range(FIELDS)},
        "Meta": type("Meta", (), {"backend": store, "serializer": "msgpack"}),
    }
    return type("Counter", (co.Model,), attrs)


@pytest.fixture
def two_clients(backend: Backend, backend_name: str, backend_factory: Any) -> list[Backend]:
    if backend_name == "memory":
        return [backend]  # an in-process store has no second client
    return [backend, backend_factory(namespace=backend.namespace)]


async def test_updates_of_different_fields_are_all_kept(two_clients: list[Backend]) -> None:
    models = [counter_model(b) for b in two_clients]
    await models[0].create(id=1)
    done = [0] * FIELDS

    async def worker(t: int) -> None:
        model = models[t % len(models)]
        field = f"f{t % FIELDS}"
        for _ in range(UPDATES):
            await model.update(id=1, **{field: getattr(model, field) + 1})
        done[t % FIELDS] += UPDATES

    await asyncio.wait_for(asyncio.gather(*(worker(t) for t in range(TASKS))), 120)
    row = await models[0].get(id=1)
    assert [getattr(row, f"f{i}") for i in range(FIELDS)] == done
    assert sum(done) == TASKS * UPDATES
    for b in two_clients[1:]:
        await b.close()


async def test_increments_are_exact(two_clients: list[Backend]) -> None:
    models = [counter_model(b) for b in two_clients]
    await models[0].create(id=2)

    async def worker(t: int) -> None:
        model = models[t % len(models)]
        for _ in range(UPDATES):
            await model.update(id=2, visits=model.visits + 1)

    await asyncio.wait_for(asyncio.gather(*(worker(t) for t in range(TASKS))), 120)
    assert (await models[0].get(id=2)).visits == TASKS * UPDATES
    for b in two_clients[1:]:
        await b.close()


def _process_worker(path: str, namespace: str, tasks: int, updates: int) -> None:
    async def main() -> None:
        store = co.FileSystemBackend(path, namespace=namespace)
        model = counter_model(store)

        async def one() -> None:
            for _ in range(updates):
                await model.update(id=3, visits=model.visits + 1)

        await asyncio.gather(*(one() for _ in range(tasks)))
        await store.close()

    asyncio.run(main())


async def test_filesystem_increments_across_two_processes(tmp_path: Path) -> None:
    path, ns = str(tmp_path / "shared"), "procs"
    async with co.FileSystemBackend(path, namespace=ns) as store:
        model = counter_model(store)
        await model.create(id=3)
        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(target=_process_worker, args=(path, ns, TASKS // 2, UPDATES))
            for _ in range(2)
        ]
        for p in procs:
            p.start()
        loop = asyncio.get_running_loop()
        for p in procs:
            await loop.run_in_executor(None, p.join, 120)
            assert p.exitcode == 0
        assert (await model.get(id=3)).visits == TASKS * UPDATES
