"""The benchmark cases: each pairs an acacheorm operation with its best raw-client twin."""

from __future__ import annotations

import asyncio
import datetime
import gc
import json
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

import acacheorm as co
from acacheorm.cli._demo import Gender, define_models
from tests import servers as srv

TTL = 3600


#: memcached's worker threads in the benchmarks: one, as Redis has, so that both sides are
#: served by the same thread. With memcached's default of four, on a 2-core machine where
#: client and server share the cores, how a client spreads its requests over server threads
#: moves a sequential get by a third: aiomcache's pool hands out its (four) connections in
#: turn, each on another server thread, 65-80 us per get, against 84-104 us for the same
#: client with pool_size=1 and for acacheorm (its pool hands out the connection used last).
MEMCACHED_THREADS = 1


class Servers:
    """Starts the servers the chosen backends need (loopback, free ports) and stops them."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.redis: srv.RedisServer | None = None
        self.cluster: srv.RedisCluster | None = None
        self.memcached: srv.Memcached | None = None

    async def __aenter__(self) -> Servers:
        if "redis" in self.backends:
            self.redis = srv.RedisServer()
            self.redis.start()
        if "redis-cluster" in self.backends:
            self.cluster = srv.RedisCluster()
            self.cluster.start()
        if "memcached" in self.backends:
            self.memcached = srv.Memcached(threads=MEMCACHED_THREADS)
            self.memcached.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for s in (self.redis, self.cluster, self.memcached):
            if s is not None:
                s.stop()


# -- raw clients: the best hand-written code, one per backend ---------------------------------


class Raw:
    """get / mget / set_many(ttl) / gather of gets, written directly against the client."""

    async def get(self, key: str) -> bytes | None:
        raise NotImplementedError

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        raise NotImplementedError

    async def set_many(self, items: list[tuple[str, bytes]], ttl: int) -> None:
        raise NotImplementedError

    async def set_keepttl(self, key: str, value: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class RawMemory(Raw):
    """A dict behind an async API: each call is one event-loop turn (``sleep(0)``), as an
    awaited round trip is, so the in-process ratios compare against "a dict read + decode +
    one loop turn" (without the turn, an ``async def`` that never suspends costs no more
    than a function call, and the gather of the concurrent case never interleaves)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        await asyncio.sleep(0)
        return self.data.get(key)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        await asyncio.sleep(0)
        get = self.data.get
        return [get(k) for k in keys]

    async def set_many(self, items: list[tuple[str, bytes]], ttl: int) -> None:
        await asyncio.sleep(0)
        self.data.update(items)

    async def set_keepttl(self, key: str, value: bytes) -> None:
        await asyncio.sleep(0)
        self.data[key] = value


class RawRedis(Raw):
    def __init__(self, url: str, cluster: bool) -> None:
        import redis.asyncio as redis
        from redis.asyncio.cluster import RedisCluster

        self.cluster = cluster
        # The same pool size as the backend's client (redis-py's default, 100 connections),
        # waiting for a free connection rather than failing, as the backend does.
        # RedisCluster fails beyond 100 connections per node: hand-written code bounds its
        # concurrency with a semaphore.
        self.gate = asyncio.Semaphore(100)
        if cluster:
            self.client: Any = RedisCluster.from_url(url)
        else:
            pool = redis.BlockingConnectionPool.from_url(url, max_connections=100)
            self.client = redis.Redis(connection_pool=pool)

    async def get(self, key: str) -> bytes | None:
        if self.cluster:
            async with self.gate:
                return await self.client.get(key)  # type: ignore[no-any-return]
        return await self.client.get(key)  # type: ignore[no-any-return]

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        if self.cluster:
            return await self.client.mget_nonatomic(keys)  # type: ignore[no-any-return]
        return await self.client.mget(keys)  # type: ignore[no-any-return]

    async def set_many(self, items: list[tuple[str, bytes]], ttl: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for k, v in items:
            pipe.set(k, v, ex=ttl)
        await pipe.execute()

    async def set_keepttl(self, key: str, value: bytes) -> None:
        await self.client.set(key, value, keepttl=True)

    async def close(self) -> None:
        await self.client.aclose()


class RawMemcached(Raw):
    def __init__(self, host: str, port: int) -> None:
        import aiomcache

        self.client = aiomcache.Client(host, port, pool_size=4)

    async def get(self, key: str) -> bytes | None:
        return await self.client.get(key.encode())  # type: ignore[no-any-return]

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return list(await self.client.multi_get(*(k.encode() for k in keys)))

    async def set_many(self, items: list[tuple[str, bytes]], ttl: int) -> None:
        await asyncio.gather(*(self.client.set(k.encode(), v, exptime=ttl) for k, v in items))

    async def set_keepttl(self, key: str, value: bytes) -> None:
        await self.client.set(key.encode(), value)

    async def close(self) -> None:
        await self.client.close()


def make(servers: Servers, name: str) -> tuple[co.Backend, Raw]:
    ns = "bench"
    if name == "memory":
        return co.SimpleBackend(namespace=ns), RawMemory()
    if name == "redis":
        assert servers.redis is not None
        return co.RedisBackend(servers.redis.url, namespace=ns), RawRedis(servers.redis.url, False)
    if name == "redis-cluster":
        assert servers.cluster is not None
        url = servers.cluster.url
        return co.RedisBackend(url, cluster=True, namespace=ns), RawRedis(url, True)
    if name == "memcached":
        assert servers.memcached is not None
        host, port = servers.memcached.address
        return co.MemcachedBackend([(host, port)], namespace=ns), RawMemcached(host, port)
    raise ValueError(name)


# -- codecs for the raw side -----------------------------------------------------------------


def codec(serializer: str) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    if serializer == "msgpack":
        packer = msgpack.Packer(use_bin_type=True)
        return packer.pack, lambda b: msgpack.unpackb(b, raw=False)

    def dumps(d: Any) -> bytes:
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()

    return dumps, json.loads


def raw_row(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": f"user{i}",
        "height": 1.5 + (i % 50) / 100,
        "married": i % 2 == 0,
        "gender": i % 3,
        "email": f"u{i}@example.com",
        "phones": ["+1 555 0100"],
        "created_at": "2026-11-23T12:00:00+00:00",
    }


def orm_row(i: int) -> dict[str, Any]:
    r = raw_row(i)
    r["gender"] = Gender(r["gender"])
    r["created_at"] = datetime.datetime(2026, 11, 23, 12, tzinfo=datetime.UTC)
    return r


class Case:
    def __init__(self, name: str, backend_name: str, rows: int, note: str = "") -> None:
        self.name = name
        self.backend_name = backend_name
        self.rows = rows
        self.note = note
        self.setup_fn: Callable[[], Awaitable[None]] | None = None
        self.teardown_fn: Callable[[], Awaitable[None]] | None = None
        self.orm: Callable[[], Awaitable[int]]
        self.raw: Callable[[], Awaitable[int]]

    async def setup(self) -> None:
        if self.setup_fn:
            await self.setup_fn()

    async def teardown(self) -> None:
        if self.teardown_fn:
            await self.teardown_fn()


def all_cases(servers: Servers, backend_name: str, serializer: str, scale: float) -> list[Case]:
    dumps, loads = codec(serializer)
    state: dict[str, Any] = {}

    def n(x: int) -> int:
        return max(10, int(x * scale))

    async def open_() -> None:
        backend, raw = make(servers, backend_name)
        User, Article, _ = define_models(backend, serializer)
        state.update(backend=backend, raw=raw, User=User, Article=Article)

    async def close() -> None:
        await state["backend"].clear()
        await state["backend"].close()
        await state["raw"].close()

    def case(name: str, rows: int, note: str = "") -> Case:
        c = Case(name, backend_name, rows, note)
        cases.append(c)
        return c

    cases: list[Case] = []

    # 1. sequential single get
    N_GET = n(2000)

    async def setup_get() -> None:
        await open_()
        await state["User"].insert_many(*(orm_row(i) for i in range(N_GET)))
        await state["raw"].set_many([(f"raw:{i}", dumps(raw_row(i))) for i in range(N_GET)], TTL)

    async def orm_get() -> int:
        get = state["User"].get_by_id
        for i in range(N_GET):
            await get(i)
        return N_GET

    async def raw_get() -> int:
        raw = state["raw"]
        for i in range(N_GET):
            dict(loads(await raw.get(f"raw:{i}")))
        return N_GET

    c = case("get (sequential)", 1, f"{N_GET} awaits")
    c.setup_fn, c.teardown_fn, c.orm, c.raw = setup_get, close, orm_get, raw_get

    # 2. query_many of 10,000 rows
    N_MANY = n(10_000)

    async def setup_many() -> None:
        await open_()
        await state["User"].insert_many(*(orm_row(i) for i in range(N_MANY)))
        await state["raw"].set_many([(f"raw:{i}", dumps(raw_row(i))) for i in range(N_MANY)], TTL)

    async def orm_many() -> int:
        rows = await state["User"].query_many(*range(N_MANY))
        assert rows[-1] is not None
        return N_MANY

    async def raw_many() -> int:
        values = await state["raw"].mget([f"raw:{i}" for i in range(N_MANY)])
        rows = [dict(loads(v)) for v in values if v is not None]
        assert len(rows) == N_MANY
        return N_MANY

    c = case("query_many", N_MANY)
    c.setup_fn, c.teardown_fn, c.orm, c.raw = setup_many, close, orm_many, raw_many

    # 3. insert_many of 10,000 rows with a TTL
    async def setup_insert() -> None:
        await open_()
        state["instances"] = [state["User"](**orm_row(i)) for i in range(N_MANY)]

    async def orm_insert() -> int:
        await state["User"].insert_many(*state["instances"], ttl=TTL)
        return N_MANY

    async def raw_insert() -> int:
        await state["raw"].set_many([(f"raw:{i}", dumps(raw_row(i))) for i in range(N_MANY)], TTL)
        return N_MANY

    c = case("insert_many + ttl", N_MANY, "orm from built instances")
    c.setup_fn, c.teardown_fn, c.orm, c.raw = setup_insert, close, orm_insert, raw_insert

    # 4. update of one field (orm: atomic CAS; raw: GET + SET KEEPTTL, not atomic)
    N_UPD = n(500)

    async def orm_update() -> int:
        update = state["User"].update
        for i in range(N_UPD):
            await update(id=i, height=2.0)
        return N_UPD

    async def raw_update() -> int:
        raw = state["raw"]
        for i in range(N_UPD):
            key = f"raw:{i}"
            row = loads(await raw.get(key))
            row["height"] = 2.0
            await raw.set_keepttl(key, dumps(row))
        return N_UPD

    c = case("update one field", 1, f"{N_UPD} awaits; raw is not atomic")
    c.setup_fn, c.teardown_fn, c.orm, c.raw = setup_get, close, orm_update, raw_update

    # 5. select_related over 1,000 articles by 50 authors
    N_ART = n(1000)

    async def setup_related() -> None:
        await open_()
        await state["User"].insert_many(*(orm_row(i) for i in range(50)))
        await state["Article"].insert_many(
            *({"id": i, "author": i % 50, "title": f"t{i}"} for i in range(N_ART))
        )
        await state["raw"].set_many([(f"rawu:{i}", dumps(raw_row(i))) for i in range(50)], TTL)
        await state["raw"].set_many(
            [
                (f"rawa:{i}", dumps({"id": i, "author": i % 50, "title": f"t{i}", "content": ""}))
                for i in range(N_ART)
            ],
            TTL,
        )

    async def orm_related() -> int:
        rows = await state["Article"].query_many(*range(N_ART)).select_related("author")
        assert rows[-1].author.name
        return N_ART

    async def raw_related() -> int:
        raw = state["raw"]
        arts = [loads(v) for v in await raw.mget([f"rawa:{i}" for i in range(N_ART)])]
        ids = list({a["author"] for a in arts})
        authors = dict(
            zip(ids, [loads(v) for v in await raw.mget([f"rawu:{i}" for i in ids])], strict=True)
        )
        for a in arts:
            a["author"] = authors[a["author"]]
        return N_ART

    c = case("select_related", N_ART, "50 authors")
    c.setup_fn, c.teardown_fn, c.orm, c.raw = setup_related, close, orm_related, raw_related

    # 6. 1,000 concurrent tasks each awaiting one get_by_id
    N_CONC = n(1000)

    async def orm_concurrent() -> int:
        get = state["User"].get_by_id
        await asyncio.gather(*(get(i) for i in range(N_CONC)))
        return N_CONC

    async def raw_concurrent() -> int:
        raw = state["raw"]

        async def one(i: int) -> dict[str, Any]:
            return dict(loads(await raw.get(f"raw:{i}")))

        await asyncio.gather(*(one(i) for i in range(N_CONC)))
        return N_CONC

    c = case("concurrent get_by_id", 1, f"gather of {N_CONC} reads")
    c.setup_fn, c.teardown_fn, c.orm, c.raw = setup_get, close, orm_concurrent, raw_concurrent

    # 7. the same reads, each awaited in a task of its own (1,000 request handlers)
    async def orm_in_tasks() -> int:
        get = state["User"].get_by_id

        async def one(i: int) -> Any:
            return await get(i)

        await asyncio.gather(*(one(i) for i in range(N_CONC)))
        return N_CONC

    c = case("get_by_id in tasks", 1, f"{N_CONC} tasks each awaiting one")
    c.setup_fn, c.teardown_fn, c.orm, c.raw = setup_get, close, orm_in_tasks, raw_concurrent
    return cases


def memory_footprint(serializer: str, count: int) -> dict[str, float]:
    """Bytes per in-memory instance vs a dict of the same fields; stored bytes per row."""
    User, _, _ = define_models(co.SimpleBackend(), serializer)
    dumps, _ = codec(serializer)

    def measure(build: Callable[[int], Any]) -> float:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        keep = [build(i) for i in range(count)]
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del keep
        return (after - before) / count

    dict_bytes = measure(orm_row)
    inst_bytes = measure(lambda i: User(**orm_row(i)))
    obj = User(**orm_row(1))
    stored = len(User._schema.encode(obj))
    bare = len(dumps(User._schema.to_primitives(obj)))
    return {
        "bytes per dict of the fields": dict_bytes,
        "bytes per instance": inst_bytes,
        "instance / dict": inst_bytes / dict_bytes,
        f"stored bytes per row ({serializer})": stored,
        f"bare {serializer} bytes per row": bare,
        "envelope overhead (bytes)": stored - bare,
    }


# -- scaling: how cost grows with the amount of work (python -m benchmarks --scaling) --------

SCALING_ROWS = (100, 10_000, 100_000)
SCALING_TASKS = (10, 100, 1_000, 10_000)


def scaling_cases(servers: Servers, backend_name: str, serializer: str, scale: float) -> list[Case]:
    """query_many at 100 / 10k / 100k rows and concurrent get_by_id at 10 ... 10,000 tasks,
    over one data set of the largest row count (loaded once per backend)."""
    dumps, loads = codec(serializer)
    state: dict[str, Any] = {}
    top = max(10, int(max(SCALING_ROWS) * scale))
    cases: list[Case] = []

    async def open_() -> None:
        if "backend" in state:
            return
        backend, raw = make(servers, backend_name)
        User, _, _ = define_models(backend, serializer)
        state.update(backend=backend, raw=raw, User=User)
        for start in range(0, top, 10_000):
            stop = min(top, start + 10_000)
            await User.insert_many(*(orm_row(i) for i in range(start, stop)))
            await raw.set_many([(f"raw:{i}", dumps(raw_row(i))) for i in range(start, stop)], TTL)

    async def close() -> None:
        await state["backend"].clear()
        await state["backend"].close()
        await state["raw"].close()
        state.clear()

    async def keep() -> None:
        pass

    def many(count: int) -> tuple[Callable[[], Awaitable[int]], Callable[[], Awaitable[int]]]:
        async def orm() -> int:
            rows = await state["User"].query_many(*range(count))
            assert rows[-1] is not None
            return count

        async def raw() -> int:
            values = await state["raw"].mget([f"raw:{i}" for i in range(count)])
            rows = [dict(loads(v)) for v in values if v is not None]
            assert len(rows) == count
            return count

        return orm, raw

    def concurrent(
        tasks: int,
    ) -> tuple[Callable[[], Awaitable[int]], Callable[[], Awaitable[int]]]:
        async def orm() -> int:
            get = state["User"].get_by_id
            await asyncio.gather(*(get(i) for i in range(tasks)))
            return tasks

        async def raw() -> int:
            client = state["raw"]

            async def one(i: int) -> dict[str, Any]:
                return dict(loads(await client.get(f"raw:{i}")))

            await asyncio.gather(*(one(i) for i in range(tasks)))
            return tasks

        return orm, raw

    plan: list[tuple[str, int, str, Any]] = []
    for rows in SCALING_ROWS:
        count = max(10, int(rows * scale))
        plan.append(("query_many", count, "", many(count)))
    for tasks in SCALING_TASKS:
        count = max(10, int(tasks * scale))
        plan.append(("concurrent get_by_id", 1, f"gather of {count}", concurrent(count)))
    for index, (name, rows, note, (orm, raw)) in enumerate(plan):
        c = Case(name, backend_name, rows, note)
        c.setup_fn = open_
        c.teardown_fn = close if index == len(plan) - 1 else keep
        c.orm, c.raw = orm, raw
        cases.append(c)
    return cases


async def scaling_memory(
    servers: Servers, backend_name: str, serializer: str, count: int
) -> dict[str, Any]:
    """Bytes held per row by the result of one query_many of ``count`` rows (instances) and by
    the raw side's list of decoded dicts, read back from the backend."""
    dumps, loads = codec(serializer)
    backend, raw = make(servers, backend_name)
    User, _, _ = define_models(backend, serializer)
    try:
        for start in range(0, count, 10_000):
            stop = min(count, start + 10_000)
            await User.insert_many(*(orm_row(i) for i in range(start, stop)))
            await raw.set_many([(f"raw:{i}", dumps(raw_row(i))) for i in range(start, stop)], TTL)

        async def held(read: Callable[[], Awaitable[list[Any]]]) -> float:
            gc.collect()
            tracemalloc.start()
            try:
                rows = await read()
                gc.collect()
                # what the result keeps alive once the read's transient buffers are gone
                size = tracemalloc.get_traced_memory()[0]
                assert len(rows) == count
            finally:
                tracemalloc.stop()
            del rows
            return size / count

        async def orm_read() -> list[Any]:
            return list(await User.query_many(*range(count)))

        async def raw_read() -> list[Any]:
            values = await raw.mget([f"raw:{i}" for i in range(count)])
            return [dict(loads(v)) for v in values if v is not None]

        orm_bytes = await held(orm_read)
        raw_bytes = await held(raw_read)
    finally:
        await backend.clear()
        await backend.close()
        await raw.close()
    return {
        "backend": backend_name,
        "rows": count,
        "orm_bytes": orm_bytes,
        "raw_bytes": raw_bytes,
        "ratio": orm_bytes / raw_bytes,
    }
