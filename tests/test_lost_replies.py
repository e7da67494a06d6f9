"""At most once: a write whose reply is lost is never sent again.

A fault proxy (tests/faultproxy.py, ``lose_reply``) forwards a request to the real server,
then drops the reply and cuts the connection: the server ran the command, the client never
hears back. On Redis, Redis Cluster (a proxy in front of every master) and memcached, for a
counter ``incr``, ``update(n=Counter.n + 1)``, ``update_many``, ``get_or_create``,
``delete_by_id``, a pipelined batch and a ``MULTI``:

- the call raises `co.BackendUnavailable` saying that the outcome is unknown (or, for a
  read, rides through: reads are the only commands sent again);
- what the store holds afterwards (read by a second backend, not through the proxy) shows
  that the command ran exactly once: an increment stored once, never twice; a row created
  by the caller is never reported to it as found (``created=False``); a row deleted by the
  caller is never reported as missing (`DoesNotExist`).

`SUMMARY` counts the faults injected and what was checked; the last test prints it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio.cluster import RedisCluster

import acacheorm as co
from acacheorm._commands import Batch, Incr
from acacheorm.backends.base import Backend
from acacheorm.backends.memcached import MemcachedBackend
from acacheorm.backends.redis import RedisBackend
from tests import servers
from tests.conftest import BACKENDS, unique_namespace
from tests.faultproxy import FaultProxy

TIMEOUT = 2.0
OUTCOME_UNKNOWN = "the outcome of the writes is unknown"  # what the error must say
SUMMARY: collections.Counter[str] = collections.Counter()


def counter_model(store: Backend) -> Any:
    attrs: dict[str, Any] = {
        "__module__": __name__,
        "id": co.IntegerField(primary_key=True),
        "n": co.IntegerField(default=0),
        "Meta": type("Meta", (), {"backend": store, "serializer": "msgpack"}),
    }
    return type("Counter", (co.Model,), attrs)


@dataclass
class Rig:
    """A backend whose traffic goes through fault proxies, and one that reads directly."""

    kind: str
    backend: Backend  # through the proxies
    direct: Backend  # same namespace, own connections: to see what the store holds
    proxies: dict[int, FaultProxy]  # by the port the backend connects to
    counter: Any  # Counter on ``backend``
    stored: Any  # Counter on ``direct``

    def proxy_for(self, key: str) -> FaultProxy:
        """The proxy that carries the commands on ``key`` (a key as given to the backend)."""
        b = self.backend
        if isinstance(b, MemcachedBackend):
            return self.proxies[b.server_for(key)[1]]
        assert isinstance(b, RedisBackend)
        client = b.client
        if isinstance(client, RedisCluster):
            node = client.get_node_from_key(b.full_key(key).encode())
            return self.proxies[node.port]
        return next(iter(self.proxies.values()))

    def row_key(self, pk: int) -> str:
        key: str = self.counter._schema.key((pk,))
        return key


def _needs(kind: str) -> None:
    if kind not in BACKENDS:
        pytest.skip(f"{kind} is not in ACACHEORM_TEST_BACKENDS")


@pytest.fixture(params=["redis", "redis-cluster", "memcached"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    kind = str(request.param)
    _needs(kind)
    namespace = unique_namespace("once")
    proxies: dict[int, FaultProxy] = {}
    backend: Backend
    direct: Backend
    client: RedisCluster | None = None
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        parts = urlsplit(url)
        proxy = FaultProxy((parts.hostname or "127.0.0.1", parts.port or 6379), name=kind)
        await proxy.start()
        proxies[proxy.port] = proxy
        backend = RedisBackend(
            parts._replace(netloc=f"127.0.0.1:{proxy.port}").geturl(),
            timeout=TIMEOUT,
            namespace=namespace,
        )
        direct = RedisBackend(url, namespace=namespace)
    elif kind == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")
        if isinstance(cluster, str):
            pytest.skip("needs the suite's own cluster (a proxy in front of each master)")
        by_port: dict[int, FaultProxy] = {}
        for node in cluster.nodes:
            proxy = FaultProxy((servers.HOST, node.port), name=f"master:{node.port}")
            await proxy.start()
            by_port[node.port] = proxy
            proxies[proxy.port] = proxy

        def remap(address: tuple[str, int]) -> tuple[str, int]:
            proxy = by_port.get(address[1])
            return address if proxy is None else proxy.address

        first = by_port[cluster.nodes[0].port]
        client = RedisCluster(host=servers.HOST, port=first.port, address_remap=remap)
        backend = RedisBackend(client, timeout=TIMEOUT, namespace=namespace)
        direct = RedisBackend(cluster.url, cluster=True, namespace=namespace)
    else:
        addresses = request.getfixturevalue("memcached_servers")
        for i, address in enumerate(addresses):
            proxy = FaultProxy(address, name=f"memcached{i}")
            await proxy.start()
            proxies[proxy.port] = proxy
        through = [p.address for p in proxies.values()]
        backend = MemcachedBackend(through, timeout=TIMEOUT, namespace=namespace)
        # The ring places keys by the addresses it is given, so the second backend goes
        # through the proxies too (on connections of its own; no fault is on when it reads).
        direct = MemcachedBackend(through, namespace=namespace)
    rig = Rig(kind, backend, direct, proxies, counter_model(backend), counter_model(direct))
    try:
        yield rig
    finally:
        for proxy in proxies.values():
            proxy.clear()
        try:
            await direct.clear()
        finally:
            await backend.close()
            await direct.close()
            if client is not None:
                await client.aclose()
            for proxy in proxies.values():
                await proxy.close()


def _request_word(rig: Rig, redis: bytes, memcached: bytes) -> bytes:
    return memcached if rig.kind == "memcached" else redis


async def lose_reply(
    rig: Rig, key: str, match: bytes, call: Callable[[], Awaitable[Any]]
) -> BaseException | Any:
    """Run ``call`` with the reply to the next request containing ``match`` lost; the
    exception it raised, or its value. The fault must have bitten."""
    proxy = rig.proxy_for(key)
    lost = proxy.stats.lost
    proxy.lose_reply(match)
    SUMMARY["faults injected (lost replies)"] += 1
    outcome: BaseException | Any
    try:
        async with asyncio.timeout(TIMEOUT * 4):
            outcome = await call()
    except co.CacheORMError as exc:
        outcome = exc
    finally:
        proxy.clear()
    assert proxy.stats.lost == lost + 1, f"no reply was lost ({match!r} never sent?)"
    return outcome


def assert_unknown(outcome: Any) -> None:
    """The caller was told that the write's outcome is unknown, nothing else."""
    assert isinstance(outcome, co.BackendUnavailable), f"expected BackendUnavailable: {outcome!r}"
    assert OUTCOME_UNKNOWN in str(outcome), str(outcome)
    SUMMARY["writes reported with an unknown outcome"] += 1


async def warm(rig: Rig, *keys: str) -> None:
    """Open the connections (and check the server) before the fault, so that the request
    the fault waits for is the command itself."""
    for key in keys:
        await rig.backend.get(key)


# -- the tests -------------------------------------------------------------------------------


async def test_incr_runs_once(rig: Rig) -> None:
    await warm(rig, "hits")
    outcome = await lose_reply(
        rig, "hits", _request_word(rig, b"INCRBY", b"ma "), lambda: rig.backend.incr("hits")
    )
    assert_unknown(outcome)
    assert await rig.direct.get("hits") == b"1"  # ran once: never twice
    SUMMARY["stored values checked"] += 1
    assert await rig.backend.incr("hits") == 2  # and the backend works on


async def test_incr_with_ttl_runs_once(rig: Rig) -> None:
    await rig.backend.incr("hits", 0, ttl=60)  # creates it, and loads the script on its node
    outcome = await lose_reply(
        rig,
        "hits",
        _request_word(rig, b"EVALSHA", b"ma "),
        lambda: rig.backend.incr("hits", 5, ttl=60),
    )
    assert_unknown(outcome)
    assert await rig.direct.get("hits") == b"5"
    SUMMARY["stored values checked"] += 1


async def test_update_with_an_expression_runs_once(rig: Rig) -> None:
    counter = rig.counter
    await counter.create(id=1, n=5)
    await counter.update(id=1, n=counter.n + 1)  # warm: connections and the script
    outcome = await lose_reply(
        rig,
        rig.row_key(1),
        _request_word(rig, b"EVALSHA", b"ms "),
        lambda: counter.update(id=1, n=counter.n + 1),
    )
    assert_unknown(outcome)
    assert (await rig.stored.get(id=1)).n == 7  # 6 + 1, never + 2
    SUMMARY["stored values checked"] += 1


async def test_update_many_runs_once(rig: Rig) -> None:
    counter = rig.counter
    await counter.insert_many(*({"id": pk, "n": 10 * pk} for pk in (1, 2, 3)))
    changes = [{"id": pk, "n": counter.n + 1} for pk in (1, 2, 3)]
    await counter.update_many(*changes)  # warm
    # on Cluster the rows may live on several masters: lose the reply on the first's
    outcome = await lose_reply(
        rig,
        rig.row_key(1),
        _request_word(rig, b"EVALSHA", b"ms "),
        lambda: counter.update_many(*changes),
    )
    assert_unknown(outcome)
    rows = await rig.stored.query_many(1, 2, 3)
    # each row got exactly one increment from the lost call: every write was forwarded
    # (those whose reply was lost too), and none was sent twice
    assert [r.n for r in rows] == [12, 22, 32]
    SUMMARY["stored values checked"] += 3


async def test_get_or_create_never_reports_its_own_row_as_found(rig: Rig) -> None:
    counter = rig.counter
    await warm(rig, rig.row_key(1))
    outcome = await lose_reply(
        rig,
        rig.row_key(1),
        _request_word(rig, b"\r\nSET\r\n", b"ms "),
        lambda: counter.get_or_create(id=1, defaults={"n": 3}),
    )
    # never (row, False): that caller created the row
    assert not isinstance(outcome, tuple), f"get_or_create returned {outcome!r}"
    assert_unknown(outcome)
    assert (await rig.stored.get(id=1)).n == 3  # created, once
    SUMMARY["stored values checked"] += 1


async def test_delete_by_id_never_reports_its_own_delete_as_missing(rig: Rig) -> None:
    counter = rig.counter
    await counter.create(id=1, n=1)
    await warm(rig, rig.row_key(1))
    outcome = await lose_reply(
        rig,
        rig.row_key(1),
        _request_word(rig, b"UNLINK", b"md "),
        lambda: counter.delete_by_id(1),
    )
    assert not isinstance(outcome, co.DoesNotExist), "the caller's own delete was reported missing"
    assert_unknown(outcome)
    assert await rig.stored.get_or_none(id=1) is None  # deleted
    SUMMARY["stored values checked"] += 1


async def test_batch_of_increments_runs_once(rig: Rig) -> None:
    """Several commands in one round trip (a pipeline; per node on Cluster)."""
    await warm(rig, "a", "b")
    batch = Batch((Incr("a", 1), Incr("b", 2), Incr("a", 3)))
    outcome = await lose_reply(
        rig, "a", _request_word(rig, b"INCRBY", b"ma "), lambda: rig.backend.execute(batch)
    )
    if isinstance(outcome, list):  # Cluster/memcached: only the faulted node's slots failed
        assert rig.kind != "redis"
        failed = [r for r in outcome if isinstance(r, BaseException)]
        assert failed, outcome
        for r in failed:
            assert_unknown(r)
    else:
        assert_unknown(outcome)
    # Redis got the whole batch in one write and ran it; memcached sends a second command
    # on a key only once the first answered, so the second increment of "a" never left.
    assert await rig.direct.get("a") == (b"1" if rig.kind == "memcached" else b"4")
    assert await rig.direct.get("b") == b"2"
    SUMMARY["stored values checked"] += 2


async def test_atomic_batch_runs_once(rig: Rig) -> None:
    if rig.kind == "memcached":
        pytest.skip("memcached has no atomic batches")
    keys = ("{t}a", "{t}b")  # one hash slot
    await warm(rig, *keys)
    batch = Batch((Incr(keys[0], 1), Incr(keys[1], 2)), atomic=True)
    outcome = await lose_reply(rig, keys[0], b"MULTI", lambda: rig.backend.execute(batch))
    assert_unknown(outcome)
    assert [await rig.direct.get(k) for k in keys] == [b"1", b"2"]
    SUMMARY["stored values checked"] += 2


async def test_a_read_whose_reply_is_lost_is_read_again(rig: Rig) -> None:
    """Reads are the one thing sent again (standalone Redis and Cluster; memcached never
    sends anything twice)."""
    await rig.backend.set("k", b"value")
    outcome = await lose_reply(
        rig, "k", _request_word(rig, b"GET", b"get "), lambda: rig.backend.get("k")
    )
    if rig.kind == "memcached":
        assert isinstance(outcome, co.BackendUnavailable)
        assert OUTCOME_UNKNOWN not in str(outcome)  # a read: nothing to be unsure about
    else:
        assert outcome == b"value"
    SUMMARY["reads checked"] += 1


async def test_a_multi_get_whose_reply_is_lost_is_read_again(rig: Rig) -> None:
    """A multi-get alone in its batch (``query_many``), sent by acacheorm itself on a
    standalone server, is read again through redis-py when its reply is lost."""
    if rig.kind != "redis":
        pytest.skip("standalone Redis: a lone MGET's own path")
    keys = ["{mg}a", "{mg}b", "{mg}c"]  # one hash slot: one MGET on Cluster too
    for key in keys:
        await rig.backend.set(key, key.encode())
    outcome = await lose_reply(rig, keys[0], b"MGET", lambda: rig.backend.get_many(*keys))
    assert outcome == [b"{mg}a", b"{mg}b", b"{mg}c"]
    SUMMARY["reads checked"] += 1


@pytest.mark.parametrize("kind", ["redis", "memcached"])
async def test_a_write_that_never_left_is_not_reported_unknown(kind: str) -> None:
    """A refused connection means nothing was sent: the error says unavailable, not that
    the outcome is unknown."""
    _needs(kind)
    port = servers.free_port()  # nothing listens there
    backend: Backend
    if kind == "redis":
        backend = RedisBackend(f"redis://127.0.0.1:{port}/0", timeout=TIMEOUT)
    else:
        backend = MemcachedBackend([("127.0.0.1", port)], timeout=TIMEOUT)
    async with backend:
        for call in (lambda: backend.set("k", b"v"), lambda: backend.incr("n")):
            with pytest.raises(co.BackendUnavailable) as info:
                await call()
            assert OUTCOME_UNKNOWN not in str(info.value)


def test_zz_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Print the counts for the issue notes (no -s needed)."""
    lines = ["lost-reply summary:"]
    lines += [f"  {k}: {v}" for k, v in sorted(SUMMARY.items())]
    lines.append("  writes applied twice: 0, rows lost: 0 (any would have failed a test)")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
