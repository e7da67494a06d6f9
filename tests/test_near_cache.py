"""NearCache: reads answered in the process, kept fresh by server-assisted invalidation on
Redis and Redis Cluster, bounded staleness (max_ttl) on Memcached and the filesystem.

Two backend objects on one server play two hosts. Every wait is a poll with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import acacheorm as co
from acacheorm._commands import Get, Set
from acacheorm._executor import execute_batch
from acacheorm.backends.base import Backend
from acacheorm.backends.near import ENTRY_OVERHEAD
from acacheorm.cli._demo import define_models
from tests import servers
from tests.conftest import BACKENDS, make_backend, unique_namespace
from tests.faultproxy import FaultProxy

DEADLINE = 10.0
REDIS_KINDS = [k for k in ("redis", "redis-cluster") if k in BACKENDS]


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds, failing after DEADLINE seconds."""
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE}s: {what}")
        await asyncio.sleep(0.005)


def _needs(kind: str) -> None:
    if kind not in BACKENDS:
        pytest.skip(f"{kind} not in ACACHEORM_TEST_BACKENDS")


class Hosts:
    """Backends built for a test, closed (and their namespace cleared) at the end."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.request = request
        self.tmp_path = tmp_path
        self.made: list[Backend] = []

    def make(self, kind: str, namespace: str, **options: Any) -> Backend:
        backend = make_backend(kind, self.request, self.tmp_path, namespace, **options)
        self.made.append(backend)
        return backend

    async def close(self) -> None:
        for backend in self.made:
            try:
                await backend.clear()
            except co.BackendError:
                pass
            await backend.close()


@pytest.fixture
async def hosts(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Hosts]:
    h = Hosts(request, tmp_path)
    try:
        yield h
    finally:
        await h.close()


def _near(backend: Backend) -> co.NearCache:
    assert backend.near_cache is not None
    return backend.near_cache


async def _fill(backend: Backend, *keys: str) -> None:
    """Read ``keys`` until the near cache holds them all (a write's own invalidation may
    arrive during the first read and keep it from being held)."""
    data = _near(backend)._data

    async def held() -> bool:
        await backend.get_many(*keys)
        return all(backend.full_key(k) in data for k in keys)

    await eventually(held, f"{keys} held")


def _tracker(backend: Backend) -> Any:
    return _near(backend)._tracker


async def _plain_client(kind: str, request: pytest.FixtureRequest) -> Any:
    import redis.asyncio
    import redis.asyncio.cluster

    if kind == "redis":
        return redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"))
    cluster = redis.asyncio.cluster.RedisCluster.from_url(
        request.getfixturevalue("redis_cluster_url")
    )
    await cluster.initialize()
    return cluster


# -- configuration -------------------------------------------------------------------------


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        co.NearCache(max_entries=0)
    with pytest.raises(ValueError, match="max_bytes"):
        co.NearCache(max_bytes=-1)
    with pytest.raises(ValueError, match="max_ttl"):
        co.NearCache(max_ttl=0)
    with pytest.raises(TypeError, match="max_ttl"):
        co.NearCache(max_ttl="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="near_cache must be a NearCache"):
        co.SimpleBackend(near_cache=object())  # type: ignore[arg-type]


def test_one_near_cache_serves_one_backend() -> None:
    near = co.NearCache()
    co.SimpleBackend(near_cache=near)
    with pytest.raises(co.ConfigurationError, match="already serves"):
        co.SimpleBackend(near_cache=near)


@pytest.mark.parametrize("kind", ["memcached", "filesystem"])
def test_backends_without_invalidation_need_max_ttl(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    _needs(kind)
    with pytest.raises(co.ConfigurationError, match="max_ttl"):
        make_backend(kind, request, tmp_path, unique_namespace(), near_cache=co.NearCache())


# -- the read path -------------------------------------------------------------------------


async def test_hot_read_needs_no_round_trip_and_no_yield() -> None:
    backend = co.SimpleBackend(near_cache=co.NearCache())
    user_model, _, _ = define_models(backend, "msgpack")
    await user_model.create(id=1, name="Sam", height=1.8)
    events: list[co.BatchEvent] = []
    co.add_batch_hook(events.append)
    try:
        await user_model.get_by_id(1)  # held from the write (this process's own)
        awaiting = user_model.get_by_id(1).__await__()
        with pytest.raises(StopIteration) as done:
            awaiting.send(None)  # completes without ever suspending
    finally:
        co.remove_batch_hook(events.append)
    assert done.value.value.name == "Sam"
    assert [e.near_hits for e in events] == [1, 1]
    assert _near(backend).stats().hits == 2


async def test_instances_are_never_shared() -> None:
    backend = co.SimpleBackend(near_cache=co.NearCache())
    user_model, _, _ = define_models(backend, "msgpack")
    await user_model.create(id=1, name="Sam", height=1.8, phones=["1"])
    first = await user_model.get_by_id(1)
    first.name = "changed"
    first.phones.append("2")
    second = await user_model.get_by_id(1)
    assert second is not first
    assert (second.name, second.phones) == ("Sam", ["1"])
    assert _near(backend).stats().hits == 2


async def test_partial_hits_send_only_the_misses() -> None:
    backend = co.SimpleBackend(near_cache=co.NearCache())
    await backend.set_many({"a": b"1", "b": b"2", "c": b"3"})
    _near(backend).clear()
    await backend.get("b")
    events: list[co.BatchEvent] = []
    co.add_batch_hook(events.append)
    try:
        got = await execute_batch(backend, co.Batch((Get("a"), Get("b"), Get("c"))))
    finally:
        co.remove_batch_hook(events.append)
    assert got == [b"1", b"2", b"3"]
    assert [e.near_hits for e in events] == [1]
    assert _near(backend).stats().entries == 3


async def test_mixed_batches_answer_reads_of_keys_they_do_not_write() -> None:
    backend = co.SimpleBackend(near_cache=co.NearCache())
    await backend.set_many({"a": b"1", "b": b"2"})
    events: list[co.BatchEvent] = []
    co.add_batch_hook(events.append)
    try:
        batch = co.Batch((Get("a"), Set("b", b"new"), Get("b"), Get("zz")))
        got = await execute_batch(backend, batch)
    finally:
        co.remove_batch_hook(events.append)
    assert got == [b"1", True, b"new", None]
    assert [e.near_hits for e in events] == [1]  # "a" only: "b" is written by the batch
    assert [type(c).__name__ for c in events[0].batch.commands] == ["Get", "Set", "Get", "Get"]


async def test_lru_bounds_by_entries_and_bytes() -> None:
    backend = co.SimpleBackend(near_cache=co.NearCache(max_entries=3))
    near = _near(backend)
    for key in "abc":
        await backend.set(key, b"v")
    assert await backend.get("a") == b"v"  # a is now the most recently used
    await backend.set("d", b"v")
    assert list(near._data) == ["c", "a", "d"]
    assert near.stats().evictions == 1

    size = 1 + 100 + ENTRY_OVERHEAD
    backend = co.SimpleBackend(near_cache=co.NearCache(max_bytes=2 * size))
    near = _near(backend)
    for key in "abc":
        await backend.set(key, b"x" * 100)
    assert list(near._data) == ["b", "c"]
    assert near.stats().bytes == 2 * size
    await backend.set("big", b"x" * (3 * size))  # larger than the whole bound: not held
    assert "big" not in near._data
    assert await backend.get("big") == b"x" * (3 * size)


async def test_failed_write_drops_the_entry() -> None:
    backend = co.SimpleBackend(max_entries=1, near_cache=co.NearCache())
    await backend.set("a", b"1")
    assert "a" in _near(backend)._data
    with pytest.raises(co.BackendError):
        await backend.set_many({"a": b"2", "b": b"2"})  # refused whole: too many keys
    assert "a" not in _near(backend)._data
    assert await backend.get("a") == b"1"


@pytest.mark.parametrize("kind", ["memory", "filesystem", "redis", "redis-cluster", "memcached"])
async def test_entries_expire_with_the_row(kind: str, hosts: Hosts) -> None:
    _needs(kind)
    ns = unique_namespace()
    options: dict[str, Any] = {}
    if kind in ("memcached", "filesystem"):
        options["max_ttl"] = 60
    reader = hosts.make(kind, ns, near_cache=co.NearCache(**options))
    writer = reader if kind == "memory" else hosts.make(kind, ns)
    assert await _near(reader).wait_ready()
    ttl = 2.0 if kind == "memcached" else 0.5
    await writer.set("k", b"v", ttl=ttl)
    before = time.monotonic()
    _near(reader).clear()
    await _fill(reader, "k")
    entry = _near(reader)._data[reader.full_key("k")]
    # Never past the row's own expiry: memcached's clock ticks once a second and its items
    # may live up to a second longer than their TTL.
    assert entry[1] <= before + ttl + (1.0 if kind == "memcached" else 0.01)
    assert await reader.get("k") == b"v"
    assert _near(reader).stats().hits >= 1

    async def gone() -> bool:
        return await reader.get("k") is None

    await eventually(gone, "the row's expiry seen through the near cache")
    assert reader.full_key("k") not in _near(reader)._data


# -- Redis and Cluster: two hosts ------------------------------------------------------------


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_two_hosts_see_each_others_writes(
    kind: str, hosts: Hosts, request: pytest.FixtureRequest
) -> None:
    ns = unique_namespace()
    a = hosts.make(kind, ns, near_cache=co.NearCache())
    b = hosts.make(kind, ns, near_cache=co.NearCache())
    assert await _near(a).wait_ready() and await _near(b).wait_ready()
    keys = [f"k{i}" for i in range(20)]
    await a.set_many({k: b"v1" for k in keys})
    await _fill(b, *keys)
    assert await b.get_many(*keys) == [b"v1"] * 20  # now from b's near cache
    assert _near(b).stats().hits >= 20

    await a.set_many({k: b"v2" for k in keys})

    async def all_new() -> bool:
        return await b.get_many(*keys) == [b"v2"] * 20

    await eventually(all_new, "b reads a's writes")
    await a.delete_many(*keys[:10])

    async def deleted() -> bool:
        return await b.get_many(*keys) == [None] * 10 + [b"v2"] * 10

    await eventually(deleted, "b reads a's deletes")

    # A plain client (no acacheorm) invalidates too.
    plain = await _plain_client(kind, request)
    try:
        assert await b.get(keys[15]) == b"v2"
        await plain.set(b.full_key(keys[15]), b"plain")

        async def plain_seen() -> bool:
            return await b.get(keys[15]) == b"plain"

        await eventually(plain_seen, "b reads a plain client's write")
    finally:
        await plain.aclose()

    # Models: an update on one host is what the other reads next.
    user_a, _, _ = define_models(a, "msgpack")
    user_b, _, _ = define_models(b, "msgpack")
    await user_a.create(id=7, name="Sam", height=1.8)
    assert (await user_b.get_by_id(7)).name == "Sam"
    await _fill(b, "user:7")
    awaiting = user_b.get_by_id(7).__await__()
    with pytest.raises(StopIteration) as done:
        awaiting.send(None)  # held: answered without a round trip or a yield
    assert done.value.value.name == "Sam"
    await user_a.update(id=7, name="Max")

    async def renamed() -> bool:
        return (await user_b.get_by_id(7)).name == "Max"

    await eventually(renamed, "b reads a's model update")
    assert _near(b).stats().invalidations > 0


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_own_writes_drop_local_entries_at_once(kind: str, hosts: Hosts) -> None:
    a = hosts.make(kind, unique_namespace(), near_cache=co.NearCache())
    assert await _near(a).wait_ready()
    await a.set("k", b"v1")
    await a.set("n", b"1")
    writes: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("k", lambda: a.set("k", b"v2")),
        ("n", lambda: a.incr("n")),
        ("k", lambda: a.touch("k", ttl=100)),
        ("k", lambda: a.replace("k", b"v3")),
    ]
    for key, write in writes:
        await a.get(key)
        await a.get(key)
        assert a.full_key(key) in _near(a)._data
        await write()
        assert a.full_key(key) not in _near(a)._data
    assert await a.get("n") == b"2"
    assert await a.get("k") == b"v3"
    await a.delete("k")
    assert await a.get("k") is None


@pytest.mark.parametrize("kind", ["memory", "filesystem", "memcached"])
async def test_own_writes_update_local_entries(kind: str, hosts: Hosts) -> None:
    _needs(kind)
    a = hosts.make(kind, unique_namespace(), near_cache=co.NearCache(max_ttl=60))
    await a.set("k", b"v1", ttl=100)
    assert _near(a)._data[a.full_key("k")][0] == b"v1"
    hits = _near(a).stats().hits
    assert await a.get("k") == b"v1"
    assert _near(a).stats().hits == hits + 1
    assert await a.incr("k2") == 1
    assert await a.delete("k")
    assert a.full_key("k") not in _near(a)._data
    assert await a.get("k") is None


@pytest.mark.parametrize("kind", ["filesystem", "memcached"])
async def test_bounded_staleness_without_invalidation(kind: str, hosts: Hosts) -> None:
    _needs(kind)
    ns = unique_namespace()
    max_ttl = 0.3
    a = hosts.make(kind, ns, near_cache=co.NearCache(max_ttl=max_ttl))
    b = hosts.make(kind, ns)
    await b.set("k", b"v1")
    assert await a.get("k") == b"v1"
    assert _near(a)._data[a.full_key("k")][1] <= time.monotonic() + max_ttl
    await b.set("k", b"v2")

    async def fresh() -> bool:
        return await a.get("k") == b"v2"

    await eventually(fresh, "a reads b's write after max_ttl")


# -- the fill race and cancellation ------------------------------------------------------------


@pytest.fixture
async def proxied(
    request: pytest.FixtureRequest, hosts: Hosts
) -> AsyncIterator[tuple[Backend, Backend, FaultProxy]]:
    """A near-cached backend through a fault proxy, and a direct one on the same namespace."""
    _needs("redis")
    url = request.getfixturevalue("redis_url")
    parts = urlsplit(url)
    proxy = FaultProxy((parts.hostname or "127.0.0.1", parts.port or 6379), name="near")
    await proxy.start()
    ns = unique_namespace()
    try:
        reader = co.RedisBackend(
            f"redis://127.0.0.1:{proxy.port}/0",
            namespace=ns,
            timeout=2.0,
            near_cache=co.NearCache(heartbeat=0.05, heartbeat_timeout=1.0),
        )
        hosts.made.append(reader)
        direct = hosts.make("redis", ns)
        yield reader, direct, proxy
    finally:
        proxy.clear()
        await hosts.close()
        hosts.made.clear()
        await proxy.close()


async def _set_and_settle(reader: Backend, direct: Backend, key: str, value: bytes) -> None:
    """Write through ``direct`` and wait until ``reader`` received the invalidation."""
    near = _near(reader)
    received = near._received
    await direct.set(key, value)

    async def heard() -> bool:
        return near._received > received

    await eventually(heard, "the write's invalidation received")


async def _in_flight(backend: Backend, key: str) -> None:
    async def pending() -> bool:
        return backend.full_key(key) in _near(backend)._pending

    await eventually(pending, f"a read of {key!r} in flight")


async def test_read_overlapping_an_invalidation_is_not_stored(
    proxied: tuple[Backend, Backend, FaultProxy],
) -> None:
    reader, direct, proxy = proxied
    near = _near(reader)
    assert await near.wait_ready()
    await _set_and_settle(reader, direct, "k", b"old")
    proxy.latency(0.2)  # the read's reply comes late
    read = asyncio.ensure_future(reader.get("k"))
    await _in_flight(reader, "k")
    # The invalidation for the key arrives while the read is in flight (as it can: it comes
    # on another connection than the reply).
    near._invalidate([reader.full_key("k")])
    assert await read == b"old"  # the caller gets what the server answered...
    assert reader.full_key("k") not in near._data  # ...but it is not held
    proxy.clear()


async def _script_calls(backend: Backend) -> int:
    """How many script calls (the near cache's reads) the server has run."""
    stats = await backend.client.info("commandstats")  # type: ignore[union-attr]
    names = ("cmdstat_evalsha", "cmdstat_eval")
    return sum(int(v["calls"]) for k, v in stats.items() if k in names)


async def test_fill_race_with_a_real_write(request: pytest.FixtureRequest, hosts: Hosts) -> None:
    """The reader's data connections go through a proxy that delays replies while its
    tracking connection stays direct: a write by another client lands after the read ran on
    the server, its invalidation overtakes the read's (old) reply, and that reply must not
    be held."""
    _needs("redis")
    url = request.getfixturevalue("redis_url")
    parts = urlsplit(url)
    async with FaultProxy((parts.hostname or "127.0.0.1", parts.port or 6379)) as proxy:
        ns = unique_namespace()
        reader = hosts.make("redis", ns, near_cache=co.NearCache())
        writer = hosts.make("redis", ns)
        near = _near(reader)
        assert await near.wait_ready()  # tracking: a direct connection
        await _set_and_settle(reader, writer, "k", b"old")
        pool = reader.client.connection_pool  # type: ignore[union-attr]
        pool.connection_kwargs["port"] = proxy.port  # data: through the proxy from now on
        await pool.disconnect()
        await reader.get("warm-up")  # a pooled connection through the proxy, handshake done
        scripts = await _script_calls(writer)
        proxy.latency(1.0)  # far longer than an invalidation takes on loopback
        read = asyncio.ensure_future(reader.get("k"))

        async def ran() -> bool:  # the read ran on the server; its reply is held back
            return await _script_calls(writer) > scripts

        await eventually(ran, "the read run on the server")
        received = near._received
        await writer.set("k", b"new")

        async def heard() -> bool:
            return near._received > received

        await eventually(heard, "the invalidation, ahead of the read's reply")
        assert not read.done()
        assert await read == b"old"
        assert reader.full_key("k") not in near._data
        proxy.clear()
        assert await reader.get("k") == b"new"
        pool.connection_kwargs["port"] = parts.port or 6379
        await pool.disconnect()


async def test_read_spanning_a_lost_channel_is_not_stored(
    proxied: tuple[Backend, Backend, FaultProxy],
) -> None:
    reader, direct, proxy = proxied
    near = _near(reader)
    assert await near.wait_ready()
    await _set_and_settle(reader, direct, "k", b"old")
    proxy.latency(0.2)
    read = asyncio.ensure_future(reader.get("k"))
    await _in_flight(reader, "k")
    near._channel_down()
    near._channel_up(asyncio.get_running_loop())  # a new epoch
    assert await read == b"old"
    assert reader.full_key("k") not in near._data
    proxy.clear()


async def test_cancelled_read_leaves_nothing_behind(
    proxied: tuple[Backend, Backend, FaultProxy],
) -> None:
    reader, direct, proxy = proxied
    near = _near(reader)
    assert await near.wait_ready()
    await _set_and_settle(reader, direct, "k", b"v")
    proxy.latency(0.2)
    read = asyncio.ensure_future(reader.get("k"))
    await _in_flight(reader, "k")
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
    assert near._pending == {}
    assert reader.full_key("k") not in near._data
    proxy.clear()
    assert await near.wait_ready()
    assert await reader.get("k") == b"v"
    await _fill(reader, "k")


async def test_silent_channel_empties_the_near_cache(
    proxied: tuple[Backend, Backend, FaultProxy],
) -> None:
    reader, direct, proxy = proxied
    near = _near(reader)
    assert await near.wait_ready()
    await direct.set("k", b"v")
    await _fill(reader, "k")
    assert near.stats().entries == 1
    sessions = _tracker(reader).sessions
    proxy.pause()  # the tracking connection goes silent: no pong

    async def not_serving() -> bool:
        return not near.stats().serving

    await eventually(not_serving, "the silent channel detected")
    assert near.stats().entries == 0
    proxy.clear()
    assert await near.wait_ready(timeout=DEADLINE)
    assert _tracker(reader).sessions > sessions
    await _fill(reader, "k")
    assert await reader.get("k") == b"v"


# -- losing the channel ----------------------------------------------------------------------


async def _tracking_ids(client: Any, name: str, node: Any = None) -> list[int]:
    kwargs = {} if node is None else {"target_nodes": node}
    listing = await client.execute_command("CLIENT", "LIST", **kwargs)
    if isinstance(listing, dict):
        listing = "\n".join(
            v.decode() if isinstance(v, bytes) else str(v) for v in listing.values()
        )
    if isinstance(listing, bytes):
        listing = listing.decode()
    ids = []
    for line in listing.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("name") == name:
            ids.append(int(fields["id"]))
    return ids


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_client_kill_empties_the_near_cache_and_it_comes_back(
    kind: str, hosts: Hosts, request: pytest.FixtureRequest
) -> None:
    ns = unique_namespace()
    a = hosts.make(kind, ns, near_cache=co.NearCache())
    writer = hosts.make(kind, ns)
    near = _near(a)
    assert await near.wait_ready()
    keys = [f"k{i}" for i in range(10)]
    await writer.set_many({k: b"v1" for k in keys})
    await _fill(a, *keys)
    assert near.stats().entries == 10
    sessions = _tracker(a).sessions
    plain = await _plain_client(kind, request)
    try:
        if kind == "redis":
            ids = await _tracking_ids(plain, _tracker(a).client_name)
            assert len(ids) == 1
            await plain.execute_command("CLIENT", "KILL", "ID", ids[0])
        else:
            node = plain.get_primaries()[1]
            ids = await _tracking_ids(plain, _tracker(a).client_name, node)
            assert len(ids) == 1
            await plain.execute_command("CLIENT", "KILL", "ID", ids[0], target_nodes=node)

        async def new_session() -> bool:
            return _tracker(a).sessions > sessions

        await eventually(new_session, "tracking re-established")
        assert near.stats().entries == 0  # emptied, and nothing read since
        await writer.set_many({k: b"v2" for k in keys})
        assert await a.get_many(*keys) == [b"v2"] * 10
        await writer.set(keys[0], b"v3")

        async def seen() -> bool:
            return await a.get(keys[0]) == b"v3"

        await eventually(seen, "invalidation after the channel came back")
    finally:
        await plain.aclose()


async def test_server_restart_and_flushall() -> None:
    _needs("redis")
    server = servers.RedisServer()
    server.start()
    backend = co.RedisBackend(
        server.url,
        namespace="app",
        timeout=1.0,
        near_cache=co.NearCache(heartbeat=0.1, heartbeat_timeout=0.5),
    )
    try:
        near = _near(backend)
        assert await near.wait_ready()
        await backend.set("k", b"v")
        await _fill(backend, "k")
        server.command("FLUSHALL")

        async def flushed() -> bool:
            return near.stats().entries == 0

        await eventually(flushed, "FLUSHALL empties the near cache")
        assert await backend.get("k") is None
        await backend.set("k", b"v")
        await _fill(backend, "k")
        server.stop()

        async def not_serving() -> bool:
            return not near.stats().serving

        await eventually(not_serving, "the lost server noticed")
        assert near.stats().entries == 0
        with pytest.raises(co.BackendUnavailable):
            await backend.get("k")
        server.start()
        assert await near.wait_ready(timeout=DEADLINE)
        await backend.set("k", b"again")
        await _fill(backend, "k")
        assert await backend.get("k") == b"again"
    finally:
        await backend.close()
        server.stop()


# -- lifecycle --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_close_leaves_no_task_or_socket(
    kind: str, hosts: Hosts, request: pytest.FixtureRequest
) -> None:
    backend = hosts.make(kind, unique_namespace(), near_cache=co.NearCache())
    async with co.lifespan(backend)(None):
        assert _near(backend).stats().serving  # lifespan opened the channel
        await backend.set("k", b"v")
        await backend.get("k")
        name = _tracker(backend).client_name
        assert any(name in t.get_name() for t in asyncio.all_tasks())
    assert not any(name in t.get_name() for t in asyncio.all_tasks())
    assert _near(backend).stats().entries == 0
    plain = await _plain_client(kind, request)
    try:
        nodes = plain.get_primaries() if kind == "redis-cluster" else [None]

        async def no_connection() -> bool:
            for node in nodes:
                if await _tracking_ids(plain, name, node):
                    return False
            return True

        await eventually(no_connection, "no tracking connection left on the server")
    finally:
        await plain.aclose()


async def test_stats_count_hits_misses_and_invalidations() -> None:
    backend = co.SimpleBackend(near_cache=co.NearCache())
    near = _near(backend)
    assert await near.wait_ready()
    await backend.set("a", b"1")
    assert await backend.get("a") == b"1"  # hit (own write held)
    assert await backend.get("zz") is None  # miss
    assert await backend.has("a")  # hit
    await backend.delete("a")
    s = near.stats()
    assert (s.hits, s.misses, s.invalidations, s.entries, s.bytes) == (2, 1, 1, 0, 0)
    assert "entries=0" in repr(near)


async def test_cluster_slot_migration_keeps_invalidations_flowing(
    hosts: Hosts, request: pytest.FixtureRequest
) -> None:
    _needs("redis-cluster")
    if isinstance(request.getfixturevalue("redis_cluster"), str):
        pytest.skip("migrates a hash slot: only on the suite's own cluster")
    from acacheorm.backends.redis import RedisBackend
    from tests.backends.test_redis import SlotMover, raw

    ns = unique_namespace()
    a = hosts.make("redis-cluster", ns, near_cache=co.NearCache())
    b = hosts.make("redis-cluster", ns)
    assert isinstance(b, RedisBackend)
    assert await _near(a).wait_ready()
    key = "{acacheorm-near-migration}k"
    await b.set(key, b"v1")
    await _fill(a, key)
    await b.client.initialize()  # type: ignore[union-attr]
    mover = SlotMover(b, key)
    sessions = _tracker(a).sessions
    try:
        await mover.start_migration()
        owner = mover.admins[mover.owner.name]
        await owner.execute_command(
            "MIGRATE", mover.target.host, mover.target.port, "", 0, 5000, "KEYS", raw(b, key)
        )
        await mover.give_to(mover.target)

        async def dropped() -> bool:
            return a.full_key(key) not in _near(a)._data

        await eventually(dropped, "the migrated key invalidated")
        await b.set(key, b"v2")  # on the new owner

        async def seen() -> bool:
            return await a.get(key) == b"v2"

        await eventually(seen, "a write on the new owner seen")
        await _fill(a, key)
        await b.set(key, b"v3")

        async def seen_again() -> bool:
            return await a.get(key) == b"v3"

        await eventually(seen_again, "the new owner's invalidation received")
        assert _tracker(a).sessions == sessions  # the primaries did not change
    finally:
        await b.delete(key)
        await mover.give_to(mover.owner)
        await mover.aclose()


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_model_reads_auto_batched_and_select_related(kind: str, hosts: Hosts) -> None:
    backend = hosts.make(kind, unique_namespace(), near_cache=co.NearCache())
    assert await _near(backend).wait_ready()
    user_model, article_model, _ = define_models(backend, "msgpack")
    for i in range(1, 6):
        await user_model.create(id=i, name=f"u{i}", height=1.5)
        await article_model.create(id=i, author=i, title=f"t{i}")
    await _fill(backend, *(f"user:{i}" for i in (1, 2, 3)))
    events: list[co.BatchEvent] = []
    co.add_batch_hook(events.append)
    try:
        users = await asyncio.gather(*(user_model.get_by_id(i) for i in range(1, 6)))
        sent = [c.key for e in events if not e.near_hits for c in e.batch.commands]
        events.clear()
        articles = await article_model.query_many(1, 2, 3, 4, 5).select_related("author")
    finally:
        co.remove_batch_hook(events.append)
    assert [u.name for u in users] == [f"u{i}" for i in range(1, 6)]
    # Three answered in the process before any round trip; only the misses went out.
    assert sorted(sent) == ["user:4", "user:5"]
    assert [a.author.name for a in articles] == [f"u{i}" for i in range(1, 6)]
    assert sum(e.near_hits for e in events) >= 3  # the authors held before


async def test_cluster_failover_re_establishes_tracking(tmp_path: Path) -> None:
    """A replica joins a primary and takes over (CLUSTER FAILOVER): the set of primaries
    changes, every channel is opened again, and the new primary's invalidations arrive."""
    _needs("redis-cluster")
    import redis.asyncio as aredis

    cluster = servers.RedisCluster()
    workdir = tmp_path / "replica"
    workdir.mkdir()
    replica = servers.RedisServer(
        servers.free_cluster_port(),
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
        workdir=workdir,
    )
    backends: list[Backend] = []
    admins: list[Any] = []
    try:
        cluster.start()
        replica.start()
        master = cluster.nodes[0]
        admin = aredis.Redis(host=servers.HOST, port=replica.port)
        admin_master = aredis.Redis(host=servers.HOST, port=master.port)
        admins += [admin, admin_master]
        master_id = (await admin_master.execute_command("CLUSTER", "MYID")).decode()
        ns = unique_namespace()
        a = co.RedisBackend(
            cluster.url,
            cluster=True,
            namespace=ns,
            near_cache=co.NearCache(heartbeat=0.1, heartbeat_timeout=1.0),
        )
        b = co.RedisBackend(cluster.url, cluster=True, namespace=ns)
        backends += [a, b]
        assert await _near(a).wait_ready()
        await b.client.initialize()  # type: ignore[union-attr]
        key = next(
            f"k{i}"
            for i in range(1000)
            if b.client.get_node_from_key(b.full_key(f"k{i}")).port == master.port  # type: ignore[union-attr]
        )
        await b.set(key, b"v1")
        await _fill(a, key)

        await admin.execute_command("CLUSTER", "MEET", servers.HOST, master.port)

        async def joined() -> bool:
            nodes = (await admin.execute_command("CLUSTER", "NODES")).decode()
            return master_id in nodes and nodes.count("master") >= 4

        await eventually(joined, "the new node joined")
        await admin.execute_command("CLUSTER", "REPLICATE", master_id)

        async def in_sync() -> bool:
            info = await admin.info("replication")
            return info.get("master_link_status") == "up"

        await eventually(in_sync, "the replica in sync")
        sessions = _tracker(a).sessions
        await admin.execute_command("CLUSTER", "FAILOVER")

        async def promoted() -> bool:
            info = await admin.info("replication")
            return info.get("role") == "master"

        await eventually(promoted, "the replica promoted")
        new_name = f"{servers.HOST}:{replica.port}"

        async def re_established() -> bool:
            return _tracker(a).sessions > sessions and new_name in _tracker(a)._tracked

        await eventually(re_established, "tracking on the new primary")
        await b.set(key, b"v2")  # MOVED to the new primary

        async def seen() -> bool:
            return await a.get(key) == b"v2"

        await eventually(seen, "the write on the new primary seen")
        await _fill(a, key)
        await b.set(key, b"v3")

        async def invalidated() -> bool:
            return await a.get(key) == b"v3"

        await eventually(invalidated, "the new primary's invalidation received")
    finally:
        for backend in backends:
            await backend.close()
        for admin_client in admins:
            await admin_client.aclose()
        replica.stop()
        cluster.stop()


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_a_key_of_another_type_fails_only_its_slot(
    kind: str, hosts: Hosts, request: pytest.FixtureRequest
) -> None:
    backend = hosts.make(kind, unique_namespace("{w}"), near_cache=co.NearCache())
    assert await _near(backend).wait_ready()
    plain = await _plain_client(kind, request)
    try:
        await plain.hset(backend.full_key("h"), "field", "1")
        await backend.set("s", b"x")
        results = await backend.execute(co.Batch((Get("h"), Get("s"))))
    finally:
        await plain.aclose()
    assert isinstance(results[0], co.BackendError) and "WRONGTYPE" in str(results[0])
    assert results[1] == b"x"
    assert backend.full_key("h") not in _near(backend)._data
