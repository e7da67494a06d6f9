"""A backend made at import time works in whichever event loop awaits it: two
``asyncio.run`` calls one after the other, or a runner per test as pytest-asyncio makes
them; each loop gets its own connections, closed when that loop shuts down."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import acacheorm as co
from acacheorm.backends.base import Backend
from tests import servers
from tests.conftest import make_backend, unique_namespace
from tests.test_near_cache import eventually


def make_model(backend: Backend) -> Any:
    attrs: dict[str, Any] = {
        "__module__": __name__,
        "id": co.IntegerField(primary_key=True),
        "hits": co.IntegerField(default=0),
        "Meta": type("Meta", (), {"backend": backend, "serializer": "msgpack"}),
    }
    return type("Visit", (co.Model,), attrs)


async def round_trip(model: Any, n: int) -> int:
    await model.create(id=1, hits=n)
    await model.update(id=1, hits=model.hits + 1)  # takes a per-loop row lock
    got = await model.get(id=1)
    rows = await asyncio.gather(*(model.query(id=1) for _ in range(5)))  # merged batches
    assert all(r.hits == got.hits for r in rows)
    return int(got.hits)


def _wait_for(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.01)


def test_one_backend_in_consecutive_event_loops(
    backend_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    options: dict[str, Any] = {}
    if backend_name in ("redis", "redis-cluster"):
        options["client_name"] = f"loops{unique_namespace()}"
    backend = make_backend(backend_name, request, tmp_path, unique_namespace(), **options)
    model = make_model(backend)  # defined before any loop runs, as at import time

    def connections() -> int | None:
        if backend_name == "redis":
            server = request.getfixturevalue("redis_server")
            if isinstance(server, str):
                return None
            listing = server.command("CLIENT", "LIST").decode()
            return listing.count(f"name={options['client_name']} ")
        if backend_name == "memcached":
            total = 0
            for _host, port in request.getfixturevalue("memcached_servers"):
                stats = servers._ask(port, b"stats\r\n").decode()
                for line in stats.splitlines():
                    if line.startswith("STAT curr_connections "):
                        total += int(line.split()[2])
            return total
        return None

    before = connections()
    assert asyncio.run(round_trip(model, 1)) == 2
    if before is not None:  # the first loop's connections were closed with it
        _wait_for(lambda: connections() == before, "closing the first loop's connections")
    assert asyncio.run(round_trip(model, 10)) == 11
    with asyncio.Runner() as runner:  # as pytest-asyncio runs a test
        assert runner.run(round_trip(model, 20)) == 21
        assert runner.run(model.get(id=1)).hits == 21
    if before is not None:
        _wait_for(lambda: connections() == before, "closing the last loop's connections")

    async def cleanup() -> None:
        await backend.clear()
        await backend.close()

    asyncio.run(cleanup())


def test_close_in_a_loop_then_use_in_the_next(
    backend_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    backend = make_backend(backend_name, request, tmp_path, unique_namespace())
    model = make_model(backend)

    async def write_and_close() -> None:
        await model.create(id=5, hits=5)
        await backend.close()
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    async def read_and_clean() -> int:
        try:
            return int((await model.get(id=5)).hits)
        finally:
            await backend.clear()
            await backend.close()

    asyncio.run(write_and_close())
    assert asyncio.run(read_and_clean()) == 5


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "redis-cluster"])
def test_a_near_cache_follows_its_backend_into_the_next_event_loop(
    cluster: bool, request: pytest.FixtureRequest
) -> None:
    """The near cache's tracking channel belongs to the loop that opened it: in the next
    loop it is opened again, so local reads are served (and invalidated) there too."""
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    backend = co.RedisBackend(
        url, cluster=cluster, namespace=unique_namespace(), near_cache=co.NearCache()
    )
    model = make_model(backend)
    writer = co.RedisBackend(url, cluster=cluster, namespace=backend.namespace)
    other = make_model(writer)

    async def one(n: int) -> tuple[int, int]:
        await model.create(id=1, hits=n)
        near = backend.near_cache
        assert near is not None
        await near.wait_ready()
        assert (await model.get(id=1)).hits == n  # a miss fills the near cache
        before = near.stats().hits
        assert (await model.get(id=1)).hits == n  # answered locally
        hits = near.stats().hits - before
        await other.update(id=1, hits=n + 100)  # another client writes: invalidated

        async def seen() -> bool:
            return bool((await model.get(id=1)).hits == n + 100)

        await eventually(seen, "the other client's write")
        await writer.close()
        return hits, (await model.get(id=1)).hits

    assert asyncio.run(one(1)) == (1, 101)
    assert asyncio.run(one(2)) == (1, 102)

    async def close() -> None:
        await backend.close()

    asyncio.run(close())
