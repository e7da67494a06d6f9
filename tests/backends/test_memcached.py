"""MemcachedBackend against real memcached nodes: ring placement, batching, key mapping,
TTLs, the incr/cas emulation, clear, and faults (dead, stalled and restarted nodes,
cancellation)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import acacheorm as co
from acacheorm._commands import KEEP_TTL, Batch, Cas, Delete, Get, Gets, Incr, Replace, Set
from acacheorm._executor import execute_batch
from acacheorm.backends.memcached import (
    HASHINGS,
    MAX_EXPTIME,
    KetamaRing,
    MemcachedBackend,
    exptime,
    parse_url,
)
from tests import servers
from tests.conftest import unique_namespace

Address = tuple[str, int]


# -- helpers ---------------------------------------------------------------------------------


async def raw(address: Address, payload: bytes, until: bytes = b"\r\n") -> bytes:
    """Send ``payload`` on a fresh connection and read until ``until`` ends the reply."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(payload)
        data = b""
        while not data.endswith(until):
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        writer.close()
        await writer.wait_closed()


async def remaining_ttl(address: Address, wire_key: bytes) -> int | None:
    """What memcached says is left of a key's TTL (-1: none; None: no such key)."""
    reply = await raw(address, b"mg %b t\r\n" % wire_key)
    if reply.startswith(b"EN"):
        return None
    return int(reply.split()[1][1:])


async def stat(address: Address, name: str) -> int:
    reply = await raw(address, b"stats\r\n", until=b"END\r\n")
    for line in reply.splitlines():
        words = line.split()
        if len(words) == 3 and words[1] == name.encode():
            return int(words[2])
    raise AssertionError(f"no stat {name}")


async def eventually(check: Callable[[], Awaitable[bool]], limit: float = 6.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met within the limit")


def node_of(backend: MemcachedBackend, key: str) -> Address:
    return backend.server_for(key)


@pytest.fixture
async def mc(memcached_servers: list[Address]) -> AsyncIterator[MemcachedBackend]:
    backend = MemcachedBackend(memcached_servers, namespace=unique_namespace("mc"))
    try:
        yield backend
    finally:
        try:
            await backend.clear()
        finally:
            await backend.close()


@pytest.fixture
def private_nodes() -> Iterator[list[servers.Memcached]]:
    """Two memcached processes owned by one test (stopped, paused, flushed at will)."""
    nodes = [servers.Memcached(), servers.Memcached()]
    for node in nodes:
        node.start()
    try:
        yield nodes
    finally:
        for node in nodes:
            if node.proc is not None:
                node.proc.send_signal(signal.SIGCONT)
            node.stop()


def keys_by_node(backend: MemcachedBackend, count: int, prefix: str = "k") -> dict[Address, str]:
    """One key for each node."""
    found: dict[Address, str] = {}
    for i in range(count):
        found.setdefault(node_of(backend, f"{prefix}{i}"), f"{prefix}{i}")
    return found


# -- the ring --------------------------------------------------------------------------------

# Vectors computed by libmemcached 1.1.4 itself (Debian bookworm's libmemcached11, through
# pylibmc 1.6.3's Client.hash, which is memcached_generate_hash: the index of the server a
# key goes to), with the behaviors named in each case.
VECTOR_KEYS = [f"key:{i}" for i in range(12)] + ["user:42", "a", "ns:~0f3a"]
THREE = [("10.0.0.1", 11211, 1), ("10.0.0.2", 11212, 1), ("cache-3.example", 11213, 1)]
LIBMEMCACHED_VECTORS = {
    # behaviors={"ketama_weighted": True}
    "ketama_weighted": "112200011111010",
    # behaviors={"ketama": True}
    "ketama": "122020222010202",
    # behaviors={"ketama": True, "hash": "md5"}
    "ketama_md5": "112020200111120",
}


@pytest.mark.parametrize("hashing", HASHINGS)
def test_ring_matches_libmemcached_vectors(hashing: str) -> None:
    ring = KetamaRing(THREE, hashing)
    got = "".join(str(ring.node_for(k.encode())) for k in VECTOR_KEYS)
    assert got == LIBMEMCACHED_VECTORS[hashing]
    points = 160 if hashing == "ketama_weighted" else 100
    assert len(ring) == 3 * points
    assert [ring.points_of(i) for i in range(3)] == [points] * 3


def test_ring_single_precision_point_count_like_libmemcached() -> None:
    # libmemcached sizes servers in float: 25 equal servers get 156 points each, not 160.
    ring = KetamaRing([(f"h{i}", 11211 + i, 1) for i in range(25)])
    assert len(ring) == 25 * 156
    got = [ring.node_for(k.encode()) for k in VECTOR_KEYS]
    assert got == [3, 21, 21, 8, 6, 11, 12, 22, 10, 18, 17, 16, 11, 20, 21]


def test_ring_weights_like_libmemcached() -> None:
    # pylibmc.Client(["a:1", "b:2:3", "c:3:7"], behaviors={"ketama_weighted": True})
    ring = KetamaRing([("a", 1, 1), ("b", 2, 3), ("c", 3, 7)])
    assert len(ring) == 472
    assert "".join(str(ring.node_for(k.encode())) for k in VECTOR_KEYS) == "222220122120220"
    with pytest.raises(ValueError, match="weights"):
        KetamaRing([("a", 1, 1), ("b", 2, 3)], "ketama")


def test_ring_point_strings() -> None:
    # libmemcached leaves the port out when it is the default one
    assert KetamaRing.point_label("10.0.0.1", 11211, 7) == b"10.0.0.1-7"
    assert KetamaRing.point_label("10.0.0.2", 11212, 0) == b"10.0.0.2:11212-0"
    one = KetamaRing([("10.0.0.1", 11211, 1)])
    first = hashlib.md5(b"10.0.0.1-0").digest()
    assert len(one) == 160
    assert int.from_bytes(first[:4], "little") in one._values
    assert int.from_bytes(first[12:], "little") in one._values


@pytest.mark.parametrize("hashing", HASHINGS)
def test_removing_a_node_moves_only_its_keys(hashing: str) -> None:
    full = KetamaRing(THREE, hashing)
    without = KetamaRing(THREE[:1] + THREE[2:], hashing)  # the middle node is gone
    keys = [f"user:{i}".encode() for i in range(3000)]
    moved = 0
    for key in keys:
        before = full.node_for(key)
        after = without.node_for(key)
        if before == 1:
            moved += 1
        else:
            assert (before, after) in ((0, 0), (2, 1))
    assert 600 < moved < 1400  # about a third of the keys lived there


def test_keys_hash_as_stored(memcached_servers: list[Address]) -> None:
    backend = MemcachedBackend(memcached_servers, namespace="app")
    # placement uses the key memcached stores (namespace included), like any other client
    ring = KetamaRing([(h, p, 1) for h, p in memcached_servers])
    for key in ("a", "user:1", "with space", "x" * 300):
        wire = backend.wire_key(backend.full_key(key))
        assert backend.server_for(key) == memcached_servers[ring.node_for(wire)]


# -- placement and round trips -------------------------------------------------------------


async def test_keys_spread_over_both_nodes(
    mc: MemcachedBackend, memcached_servers: list[Address]
) -> None:
    keys = [f"spread:{i}" for i in range(200)]
    await mc.set_many({k: k.encode() for k in keys})
    per_node = {address: 0 for address in memcached_servers}
    for key in keys:
        home = node_of(mc, key)
        per_node[home] += 1
        wire = mc.wire_key(mc.full_key(key))
        for address in memcached_servers:
            reply = await raw(address, b"mg %b v\r\n" % wire, until=b"\r\n")
            if address == home:
                assert reply.startswith(b"VA"), (key, address)
            else:
                assert reply == b"EN\r\n", (key, address)
    assert all(count > 40 for count in per_node.values()), per_node


async def test_get_many_is_one_request_per_node_without_duplicates(
    mc: MemcachedBackend, memcached_servers: list[Address]
) -> None:
    keys = [f"rt:{i}" for i in range(100)]
    await mc.set_many({k: k.encode() for k in keys})
    asked = keys + keys[:30] + ["rt:missing"]  # duplicates and a miss
    distinct = {
        address: {k for k in set(asked) if node_of(mc, k) == address}
        for address in memcached_servers
    }
    trips = {n.port: n.round_trips for n in mc._nodes}
    gets = {address: await stat(address, "cmd_get") for address in memcached_servers}

    got = await mc.get_many(*asked)

    assert got == [None if k == "rt:missing" else k.encode() for k in asked]
    for node in mc._nodes:
        assert node.round_trips - trips[node.port] == 1  # one request per node
    for address in memcached_servers:
        # memcached counts keys fetched: each distinct key was sent once
        assert await stat(address, "cmd_get") - gets[address] == len(distinct[address])


async def test_writes_are_one_request_per_node(mc: MemcachedBackend) -> None:
    await mc.get_many(*keys_by_node(mc, 100).values())  # a node's first use checks its version
    trips = [n.round_trips for n in mc._nodes]
    await mc.set_many({f"w:{i}": b"v" for i in range(300)}, ttl=60)
    assert [n.round_trips - t for n, t in zip(mc._nodes, trips, strict=True)] == [1, 1]
    trips = [n.round_trips for n in mc._nodes]
    assert await mc.delete_many(*[f"w:{i}" for i in range(300)]) == 300
    assert [n.round_trips - t for n, t in zip(mc._nodes, trips, strict=True)] == [1, 1]


async def test_a_lone_command_is_one_request_without_the_batch_machinery(
    mc: MemcachedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await mc.get_many(*keys_by_node(mc, 100).values())  # a node's first use checks its version
    await mc.set("lone", b"v1", ttl=60)

    async def grouped(*args: Any) -> Any:
        raise AssertionError("a one-command batch went through the per-node grouping")

    monkeypatch.setattr(mc, "_run_node", grouped)
    trips = sum(n.round_trips for n in mc._nodes)
    assert await mc.get("lone") == b"v1"
    [(value, token)] = await mc.execute(Batch((Gets("lone"),)))
    assert value == b"v1"
    # keeping the TTL: the TTL read and the write share one request
    assert await mc.execute(Batch((Cas("lone", b"v2", token, KEEP_TTL),))) == [True]
    assert await mc.execute(Batch((Cas("lone", b"v3", token, KEEP_TTL),))) == [False]
    assert await mc.get("lone") == b"v2"
    assert await mc.get("absent") is None
    assert sum(n.round_trips for n in mc._nodes) - trips == 6
    left = await remaining_ttl(mc.server_for("lone"), mc.wire_key(mc.full_key("lone")))
    assert left is not None and 55 <= left <= 61


async def test_a_lone_model_read_skips_the_batch_layers_with_the_same_answers(
    memcached_servers: list[Address], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone model read is the backend's one-key read (no batch built, not through
    `execute`): the same answers (hit, miss, ``DoesNotExist``), one round trip each; a
    subclass wrapping ``_execute`` and a batch hook still see it."""
    from acacheorm.cli._demo import define_models

    seen: list[list[str]] = []

    class Watched(MemcachedBackend):
        async def _execute(self, batch: Batch) -> list[Any]:
            seen.append([c.key for c in batch.commands])
            return await super()._execute(batch)

    for cls in (MemcachedBackend, Watched):
        backend = cls(memcached_servers, namespace=unique_namespace())
        try:
            User, _, _ = define_models(backend, "msgpack")
            await User.insert_many({"id": 1, "name": "a", "height": 1.0}, ttl=60)
            await backend.get_many(*keys_by_node(backend, 100).values())  # versions checked
            real = backend.execute
            if cls is MemcachedBackend:

                async def batched(batch: Batch) -> list[Any]:
                    raise AssertionError("a lone model read went through execute")

                monkeypatch.setattr(backend, "execute", batched)
            seen.clear()
            trips = sum(n.round_trips for n in backend._nodes)
            assert (await User.get_by_id(1)).name == "a"
            assert await User.get_or_none(id=2) is None
            with pytest.raises(User.DoesNotExist):
                await User.get(id=3)
            # an update: its Gets and its Cas keeping the TTL, one round trip each
            assert (await User.update(id=1, height=2.0)).height == 2.0
            assert await User.update(id=4, height=2.0) is None
            assert sum(n.round_trips for n in backend._nodes) - trips == 6
            assert (await User.get_by_id(1)).height == 2.0
            watched = cls is Watched
            full = [backend.full_key(f"user:{i}") for i in (1, 2, 3, 1, 1, 4, 1)]
            assert seen == ([[key] for key in full] if watched else [])
            left = await remaining_ttl(
                backend.server_for("user:1"), backend.wire_key(backend.full_key("user:1"))
            )
            assert left is not None and 50 <= left <= 61
            # a failure in the slot of a lone command is named as a batch names it
            big = "x" * backend.max_value_size
            with pytest.raises(co.ValueTooLargeError, match=r"command #1 \(Cas 'user:1'\)"):
                await User.update(id=1, email=big)
            assert (await User.get_by_id(1)).email is None
            monkeypatch.setattr(backend, "execute", real)
            events: list[co.BatchEvent] = []
            co.add_batch_hook(events.append)
            try:
                assert (await User.get_by_id(1)).name == "a"
            finally:
                co.remove_batch_hook(events.append)
            assert [[c.key for c in e.batch.commands] for e in events] == [["user:1"]]
        finally:
            try:
                await backend.clear()
            finally:
                await backend.close()


async def test_a_batch_of_gets_is_one_request_per_node_with_usable_tokens(
    mc: MemcachedBackend,
) -> None:
    keys = [f"g:{i}" for i in range(60)]
    await mc.set_many({k: k.encode() for k in keys}, ttl=60)
    asked = [*keys, *keys[:5], "g:missing"]
    trips = [n.round_trips for n in mc._nodes]
    results = await mc.execute(Batch(tuple(Gets(k) for k in asked)))
    assert [n.round_trips - t for n, t in zip(mc._nodes, trips, strict=True)] == [1, 1]
    assert results[-1] is None
    assert [value for value, _ in results[:-1]] == [k.encode() for k in asked[:-1]]
    # the tokens are a lone Gets' tokens: a cas with one keeps the TTL, a stale one loses
    first = {k: token for k, (_, token) in zip(keys, results, strict=False)}
    writes = await mc.execute(Batch(tuple(Cas(k, b"new", first[k], KEEP_TTL) for k in keys)))
    assert writes == [True] * len(keys)
    assert await mc.execute(Batch((Cas(keys[0], b"newer", first[keys[0]], None),))) == [False]
    assert await mc.get_many(*keys) == [b"new"] * len(keys)
    left = await remaining_ttl(mc.server_for(keys[1]), mc.wire_key(mc.full_key(keys[1])))
    assert left is not None and 55 <= left <= 61


async def test_same_key_commands_stay_in_order(mc: MemcachedBackend) -> None:
    results = await execute_batch(
        mc,
        Batch(
            (
                Incr("n", -1, None),  # emulated: read, then cas
                Get("n"),
                Set("n", b"5", None),
                Incr("n", 2, None),  # native
                Get("n"),
                Delete("n"),
                Get("n"),
                Get("other"),
            )
        ),
    )
    assert results == [-1, b"-1", True, 7, b"7", True, None, None]


# -- keys ------------------------------------------------------------------------------------


async def test_unsafe_keys_round_trip_without_collisions(
    mc: MemcachedBackend, memcached_servers: list[Address]
) -> None:
    plain = "plain:key"
    unsafe = [
        "x" * 251,
        "y" * 5000,
        "with space",
        "tab\t",
        "crlf\r\n",
        "ünïcødé",
        "nul\x00",
        "",
        "\x7f",
        "~tilde",
        "\ud800 lone surrogate",
    ]
    mapped_form = mc.wire_key(mc.full_key("with space")).decode()
    collider = mapped_form[len(mc.namespace) + 1 :]  # a user key equal to a mapped one
    keys = [plain, *unsafe, collider]
    await mc.set_many({k: f"value {i}".encode() for i, k in enumerate(keys)})
    assert await mc.get_many(*keys) == [f"value {i}".encode() for i in range(len(keys))]

    wires = [mc.wire_key(mc.full_key(k)) for k in keys]
    assert len(set(wires)) == len(keys)
    prefix = f"{mc.namespace}:".encode()
    for key, wire in zip(keys, wires, strict=True):
        assert wire.startswith(prefix) and len(wire) <= 250
        assert all(0x21 <= b <= 0x7E for b in wire)
        if key == plain:
            assert wire == prefix + b"plain:key"  # safe keys are stored as they are
        else:
            assert wire[len(prefix) : len(prefix) + 1] == b"~"
    # the same key maps the same way every time, in any backend with that namespace
    other = MemcachedBackend(memcached_servers, namespace=mc.namespace)
    try:
        assert await other.get("ünïcødé") == f"value {keys.index('ünïcødé')}".encode()
    finally:
        await other.close()


def test_wire_keys_for_odd_namespaces(memcached_servers: list[Address]) -> None:
    for namespace in ("with space", "ünï", "~x", "n" * 240):
        backend = MemcachedBackend(memcached_servers, namespace=namespace)
        wire = backend.wire_key(backend.full_key("k"))
        assert wire.startswith(b"~") and len(wire) <= 250 and b":" in wire
        assert all(0x21 <= b <= 0x7E for b in wire)
    backend = MemcachedBackend(memcached_servers)
    assert backend.wire_key("plain") == b"plain"
    assert backend.wire_key("~plain").startswith(b"~") and len(backend.wire_key("~p")) == 41
    assert len(backend.wire_key("z" * 250)) == 250
    assert len(backend.wire_key("z" * 251)) == 41


_KEY_CHARS = st.sampled_from(["a", "Z", ":", "!", "~", " ", "\t", "\x00", "\x7f", "é", "\ud800"])


@given(
    namespace=st.sampled_from(["", "app", "a b", "~x", "é"]),
    keys=st.lists(
        st.one_of(
            st.text(_KEY_CHARS, max_size=4),
            st.sampled_from(["a" * 243, "a" * 244, "a" * 250, "a" * 251, "app", "app:"]),
        ),
        min_size=1,
        max_size=6,
    ),
    prefixed=st.booleans(),
)
def test_a_batch_maps_its_keys_as_each_key_alone(
    namespace: str, keys: list[str], prefixed: bool
) -> None:
    # a batch converts its keys all at once when it can: it must match key by key
    backend = MemcachedBackend([("127.0.0.1", 11211)], namespace=namespace)
    full = [backend.full_key(k) if prefixed else k for k in keys]
    assert backend._wire_keys(full) == [backend.wire_key(k) for k in full]


# -- values and TTLs -------------------------------------------------------------------------


async def test_oversize_value_is_refused_and_writes_nothing(mc: MemcachedBackend) -> None:
    await mc.set("big", b"old")
    with pytest.raises(co.ValueTooLargeError, match="'big'"):
        await mc.set("big", b"x" * (1024 * 1024))
    assert await mc.get("big") == b"old"  # memcached would have dropped it on a failed set
    with pytest.raises(co.ValueTooLargeError):
        await mc.set_many({"big": b"x" * (1024 * 1024), "small": b"s"})
    assert await mc.get("big") == b"old"
    assert await mc.get("small") == b"s"  # errors are per command in a batch
    # what fits is stored byte for byte
    fits = bytes(range(256)) * 4000
    await mc.set("fits", fits)
    assert await mc.get("fits") == fits


async def test_oversize_by_the_server_limit(memcached_servers: list[Address]) -> None:
    # told the server takes 2 MiB, the client sends; the server's refusal is still an error
    async with MemcachedBackend(
        memcached_servers, namespace=unique_namespace("mc"), max_value_size=2 * 1024 * 1024
    ) as backend:
        with pytest.raises(co.ValueTooLargeError, match="'huge'"):
            await backend.set("huge", b"x" * (1536 * 1024))
        await backend.set("after", b"ok")  # the connection is still in step
        assert await backend.get("after") == b"ok"
        # in a batch, the refusal is the refused command's error; the rest are written
        results = await backend.execute(
            Batch((Set("huge", b"x" * (1536 * 1024), None), Set("small", b"s", 60)))
        )
        assert isinstance(results[0], co.ValueTooLargeError) and "'huge'" in str(results[0])
        assert results[1] is True
        assert await backend.get_many("small", "after", "huge") == [b"s", b"ok", None]
    async with MemcachedBackend(
        memcached_servers, namespace=unique_namespace("mc"), max_value_size=4096
    ) as small:
        await small.set("k", b"x" * 4000)  # with key and overhead: within 4096
        with pytest.raises(co.ValueTooLargeError):
            await small.set("k", b"x" * 4040)
        assert await small.get("k") == b"x" * 4000
        await small.clear()


def test_exptime_conversion() -> None:
    assert exptime(None) == 0
    assert exptime(1) == 2  # never early on memcached's one-second clock
    assert exptime(0.2) == 2
    assert exptime(59.5) == 61
    assert exptime(2_591_998) == 2_591_999  # still relative
    now = time.time()
    assert abs(exptime(2_592_000) - (now + 2_592_001)) <= 2  # 30 days: a unix time
    assert abs(exptime(90 * 86400) - (now + 90 * 86400 + 1)) <= 2
    # memcached's clock ends in January 2038 (signed 32 bits); it drops an item given a later
    # exptime while answering that it stored it, so a TTL reaching past it ends then
    assert exptime(20 * 365 * 86400) == MAX_EXPTIME == 2**31 - 1
    assert exptime(MAX_EXPTIME - now - 3600) < MAX_EXPTIME


async def test_a_ttl_past_2038_keeps_the_row_until_then(mc: MemcachedBackend) -> None:
    twenty_years = 20 * 365 * 86400
    await mc.set("k", b"v", ttl=twenty_years)
    await mc.set_many({"a": b"1", "b": b"2"}, ttl=twenty_years)
    assert await mc.get_many("k", "a", "b") == [b"v", b"1", b"2"]
    left = await remaining_ttl(node_of(mc, "k"), mc.wire_key(mc.full_key("k")))
    assert left is not None and abs(left - (MAX_EXPTIME - time.time())) <= 5


async def test_long_ttls_are_stored_and_short_ones_expire(mc: MemcachedBackend) -> None:
    for key, ttl in (("month", 30 * 86400), ("quarter", 90 * 86400), ("almost", 29 * 86400)):
        await mc.set(key, b"v", ttl=ttl)
        assert await mc.get(key) == b"v"
        left = await remaining_ttl(node_of(mc, key), mc.wire_key(mc.full_key(key)))
        assert left is not None and ttl - 5 <= left <= ttl + 5, (key, left)
    await mc.set("short", b"v", ttl=1)
    assert await mc.get("short") == b"v"

    async def short_gone() -> bool:
        return await mc.get("short") is None

    await eventually(short_gone, limit=4)
    assert await mc.get("month") == b"v"


async def test_cas_keeps_the_remaining_ttl(mc: MemcachedBackend) -> None:
    wire = mc.wire_key(mc.full_key("k"))
    home = node_of(mc, "k")
    await mc.set("k", b"one", ttl=100)
    [(_, token)] = await mc.execute(Batch((Gets("k"),)))
    assert await mc.execute(Batch((Cas("k", b"two", token, KEEP_TTL),))) == [True]
    left = await remaining_ttl(home, wire)
    assert left is not None and 98 <= left <= 101
    # an explicit TTL replaces it; None removes it
    [(_, token)] = await mc.execute(Batch((Gets("k"),)))
    assert await mc.execute(Batch((Cas("k", b"three", token, 500),))) == [True]
    left = await remaining_ttl(home, wire)
    assert left is not None and 499 <= left <= 502
    [(_, token)] = await mc.execute(Batch((Gets("k"),)))
    assert await mc.execute(Batch((Cas("k", b"four", token, None),))) == [True]
    assert await remaining_ttl(home, wire) == -1
    [(_, token)] = await mc.execute(Batch((Gets("k"),)))
    assert await mc.execute(Batch((Cas("k", b"five", token, KEEP_TTL),))) == [True]
    assert await remaining_ttl(home, wire) == -1
    assert await mc.get("k") == b"five"
    [result] = await mc.execute(Batch((Cas("k", b"x", "not a token", KEEP_TTL),)))
    assert isinstance(result, co.BackendError)


@pytest.mark.parametrize("touched_to", [1000, 50, None])
async def test_a_touch_between_the_read_and_the_cas_is_kept(
    mc: MemcachedBackend, touched_to: int | None
) -> None:
    """A touch does not change the cas unique: the Cas succeeds after it, and must not put
    back the TTL that Gets read."""
    wire = mc.wire_key(mc.full_key("k"))
    home = node_of(mc, "k")
    await mc.set("k", b"one", ttl=100)
    [(_, token)] = await mc.execute(Batch((Gets("k"),)))
    assert await mc.touch("k", touched_to) is True
    assert await mc.execute(Batch((Cas("k", b"two", token, KEEP_TTL),))) == [True]
    assert await mc.get("k") == b"two"
    left = await remaining_ttl(home, wire)
    if touched_to is None:
        assert left == -1
    else:
        assert left is not None and touched_to - 2 <= left <= touched_to + 2, left
    # and through a model's update, which keeps the TTL the same way
    await mc.touch("k", 300)
    [(_, token)] = await mc.execute(Batch((Gets("k"),)))
    await mc.touch("k", 700)
    assert await mc.execute(Batch((Cas("k", b"three", token, KEEP_TTL),))) == [True]
    left = await remaining_ttl(home, wire)
    assert left is not None and 698 <= left <= 702, left


async def test_a_cas_keeping_the_ttl_and_reads_of_its_key_share_one_round_trip(
    mc: MemcachedBackend,
) -> None:
    """The TTL check rides in the Cas's own write; later gets of the key need not wait for
    it (only a touch found meanwhile costs more round trips), later writes do."""
    await mc.set("k", b"one", ttl=100)
    [(_, token)] = await mc.execute(Batch((Gets("k"),)))
    node = next(n for n in mc._nodes if (n.host, n.port) == node_of(mc, "k"))
    before = node.round_trips
    batch = Batch((Get("k"), Cas("k", b"two", token, KEEP_TTL), Get("k"), Get("k")))
    assert await mc.execute(batch) == [b"one", True, b"two", b"two"]
    assert node.round_trips - before == 1
    # a write after it waits for the next round, and so does everything after that write
    [(_, token)] = await mc.execute(Batch((Gets("k"),)))
    before = node.round_trips
    batch = Batch((Cas("k", b"three", token, KEEP_TTL), Set("k", b"four"), Get("k")))
    assert await mc.execute(batch) == [True, True, b"four"]
    assert node.round_trips - before == 2


async def test_a_cas_that_loses_after_a_touch_writes_nothing(mc: MemcachedBackend) -> None:
    await mc.set("k", b"one", ttl=100)
    [(_, token)] = await mc.execute(Batch((Gets("k"),)))
    await mc.touch("k", 1000)
    await mc.set("k", b"other", ttl=50)  # a write: the cas unique changes
    assert await mc.execute(Batch((Cas("k", b"two", token, KEEP_TTL),))) == [False]
    assert await mc.get("k") == b"other"
    await mc.delete("k")
    assert await mc.execute(Batch((Cas("k", b"two", token, KEEP_TTL),))) == [False]
    assert await mc.get("k") is None


async def test_replace_keeping_ttl(mc: MemcachedBackend) -> None:
    assert await execute_batch(mc, Batch((Replace("r", b"x", KEEP_TTL),))) == [False]
    await mc.set("r", b"one", ttl=200)
    assert await execute_batch(mc, Batch((Replace("r", b"two", KEEP_TTL),))) == [True]
    left = await remaining_ttl(node_of(mc, "r"), mc.wire_key(mc.full_key("r")))
    assert left is not None and 198 <= left <= 201
    assert await mc.get("r") == b"two"


# -- incr ------------------------------------------------------------------------------------


async def test_incr_emulates_signed_counters(mc: MemcachedBackend) -> None:
    assert await mc.decr("c", 5) == -5
    assert await mc.get("c") == b"-5"
    assert await mc.incr("c", 2) == -3
    assert await mc.incr("c", 10) == 7
    assert await mc.decr("c", 10) == -3  # memcached's own decr would stop at 0
    await mc.set("big", str(2**64 - 2).encode())
    assert await mc.incr("big", 5) == 2**64 + 3  # past memcached's 64 bits, exactly
    assert await mc.incr("big", 1) == 2**64 + 4
    assert await mc.incr("huge", 2**70) == 2**70
    await mc.set("padded", b"007")
    assert await mc.incr("padded") == 8


async def test_incr_ttl_applies_on_creation_only(mc: MemcachedBackend) -> None:
    home, wire = node_of(mc, "n"), mc.wire_key(mc.full_key("n"))
    assert await mc.incr("n", 1, ttl=300) == 1
    left = await remaining_ttl(home, wire)
    assert left is not None and 298 <= left <= 302
    assert await mc.incr("n", 1, ttl=10) == 2
    assert await mc.decr("n", 5, ttl=10) == -3
    left = await remaining_ttl(home, wire)
    assert left is not None and left > 290  # kept, by the native and the emulated path
    assert await mc.incr("forever", -1) == -1
    assert await remaining_ttl(node_of(mc, "forever"), mc.wire_key(mc.full_key("forever"))) == -1


async def test_incr_non_numeric_is_a_slot_error(mc: MemcachedBackend) -> None:
    await mc.set("s", b"abc")
    results = await execute_batch(
        mc, Batch((Incr("s", 1, None), Incr("t", 1, None), Incr("s", -1, None)))
    )
    assert isinstance(results[0], co.BackendError) and "'" in str(results[0])
    assert results[1] == 1
    assert isinstance(results[2], co.BackendError)
    assert await mc.get("s") == b"abc"


async def test_concurrent_signed_counter_is_exact(mc: MemcachedBackend) -> None:
    async def worker(delta: int) -> None:
        for _ in range(15):
            await mc.incr("ctr", delta)

    await asyncio.gather(*(worker(d) for d in (3, -2, 1, -4, 5, -1)))
    assert await mc.get("ctr") == str(15 * (3 - 2 + 1 - 4 + 5 - 1)).encode()


# -- batches ---------------------------------------------------------------------------------


async def test_atomic_batches_are_refused(mc: MemcachedBackend) -> None:
    with pytest.raises(co.AtomicityError):
        await mc.execute(Batch((Set("a", b"1", None), Set("b", b"2", None)), atomic=True))
    assert await mc.get_many("a", "b") == [None, None]  # nothing was sent
    # one command is all-or-nothing by itself
    assert await mc.execute(Batch((Set("a", b"1", None),), atomic=True)) == [True]


# -- clear -----------------------------------------------------------------------------------


async def test_clear_removes_only_its_namespace(memcached_servers: list[Address]) -> None:
    mine = MemcachedBackend(memcached_servers, namespace=unique_namespace("mine"))
    other = MemcachedBackend(memcached_servers, namespace=unique_namespace("other"))
    odd = MemcachedBackend(memcached_servers, namespace="odd name ü " + unique_namespace())
    try:
        keys = [f"k{i}" for i in range(100)] + ["with space", "x" * 300, "ü"]
        for backend in (mine, other, odd):
            await backend.set_many({k: b"v" for k in keys})
        await mine.clear()
        assert await mine.get_many(*keys) == [None] * len(keys)
        assert await other.get_many(*keys) == [b"v"] * len(keys)
        assert await odd.get_many(*keys) == [b"v"] * len(keys)
        await odd.clear()
        assert await odd.get_many(*keys) == [None] * len(keys)
        assert await other.get_many(*keys) == [b"v"] * len(keys)
    finally:
        for backend in (mine, other, odd):
            await backend.clear()
            await backend.close()


async def test_clear_without_namespace_flushes_every_node(
    private_nodes: list[servers.Memcached],
) -> None:
    addresses = [n.address for n in private_nodes]
    async with MemcachedBackend(addresses) as backend:
        await backend.set_many({f"k{i}": b"v" for i in range(50)})
        await backend.clear()
        assert await backend.get_many(*[f"k{i}" for i in range(50)]) == [None] * 50
        for address in addresses:
            assert await stat(address, "curr_items") == 0


# -- faults ----------------------------------------------------------------------------------


async def test_dead_node_costs_only_its_keys_and_comes_back(
    private_nodes: list[servers.Memcached],
) -> None:
    addresses = [n.address for n in private_nodes]
    async with MemcachedBackend(addresses, timeout=2) as backend:
        home = keys_by_node(backend, 100)
        victim, survivor = private_nodes
        dead_key, live_key = home[victim.address], home[survivor.address]
        await backend.set_many({dead_key: b"d", live_key: b"l"})

        await asyncio.to_thread(victim.stop)
        async with asyncio.timeout(5):
            started = time.monotonic()
            with pytest.raises(co.BackendUnavailable):
                await backend.get(dead_key)
            with pytest.raises(co.BackendUnavailable):
                await backend.set(dead_key, b"x")
            with pytest.raises(co.BackendUnavailable):
                await backend.get_many(live_key, dead_key)  # the batch reports the dead node
            assert time.monotonic() - started < 2.5
            assert await backend.get(live_key) == b"l"
            await backend.set(live_key, b"still")
            assert await backend.get(live_key) == b"still"

        await asyncio.to_thread(victim.start)  # same port, empty memory
        async with asyncio.timeout(5):
            assert await backend.get(dead_key) is None
            await backend.set(dead_key, b"back")
            assert await backend.get_many(dead_key, live_key) == [b"back", b"still"]


async def test_a_batch_of_gets_goes_straight_to_the_multi_get_with_the_same_answers(
    private_nodes: list[servers.Memcached],
) -> None:
    """A batch of several plain reads (the merged reads of a batching window) skips the
    namespaced copy of the batch: the same values, misses and slot errors (naming the
    command, without the namespace) as through ``_execute``, which a subclass wrapping it
    still sees."""
    seen: list[list[str]] = []

    class Watched(MemcachedBackend):
        async def _execute(self, batch: Batch) -> list[Any]:
            seen.append([c.key for c in batch.commands])
            return await super()._execute(batch)

    victim, survivor = private_nodes
    addresses = [n.address for n in private_nodes]
    answers: list[list[Any]] = []
    async with MemcachedBackend(addresses, namespace="ns", timeout=2) as backend:
        dead = keys_by_node(backend, 100)[victim.address]
        live, absent = (keys_by_node(backend, 100, p)[survivor.address] for p in ("l", "a"))
        await backend.set(live, b"here")
    await asyncio.to_thread(victim.stop)
    for cls in (MemcachedBackend, Watched):
        async with cls(addresses, namespace="ns", timeout=2) as backend:
            if cls is MemcachedBackend:

                async def copied(batch: Batch) -> list[Any]:
                    raise AssertionError("the batch of gets was copied for _execute")

                backend._execute = copied  # type: ignore[method-assign]
            batch = Batch((Get(live), Get(absent), Get(dead), Get(live)))
            answers.append(await backend.execute(batch))
    assert seen == [[f"ns:{live}", f"ns:{absent}", f"ns:{dead}", f"ns:{live}"]]
    for results in answers:
        assert results[0] == results[3] == b"here" and results[1] is None
        assert isinstance(results[2], co.BackendUnavailable)
        assert str(results[2]).startswith(f"command #3 (Get {dead!r}) of the batch: ")
    assert str(answers[0][2]) == str(answers[1][2])


async def test_stalled_node_times_out_and_its_late_reply_is_never_read(
    private_nodes: list[servers.Memcached],
) -> None:
    node = private_nodes[0]
    assert node.proc is not None
    async with MemcachedBackend([node.address], timeout=0.5, pool_size=1) as backend:
        await backend.set_many({"k1": b"v1", "k2": b"v2"})
        servers.freeze(node.proc)
        try:
            async with asyncio.timeout(5):
                started = time.monotonic()
                with pytest.raises(co.BackendUnavailable):
                    await backend.get("k1")
                assert time.monotonic() - started < 1.5
        finally:
            node.proc.send_signal(signal.SIGCONT)
        # memcached now answers the abandoned request; that reply must go nowhere
        async with asyncio.timeout(5):
            assert await backend.get("k2") == b"v2"
            assert await backend.get_many("k2", "k1", "missing") == [b"v2", b"v1", None]


async def test_cancelled_requests_never_hand_replies_to_others(
    mc: MemcachedBackend, memcached_servers: list[Address]
) -> None:
    rng = random.Random(20240607)
    keys = [f"cancel:{i}" for i in range(400)]
    await mc.set_many({k: f"value of {k}".encode() for k in keys})
    backend = MemcachedBackend(memcached_servers, namespace=mc.namespace, pool_size=2)
    try:
        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(backend.get(k)) for k in keys]
        doomed = set(rng.sample(range(len(tasks)), len(tasks) // 2))
        for i in doomed:  # at scattered moments: waiting for a connection, mid-write, mid-read
            loop.call_later(rng.uniform(0, 0.02), tasks[i].cancel)
        async with asyncio.timeout(20):
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for i, (key, outcome) in enumerate(zip(keys, outcomes, strict=True)):
            if isinstance(outcome, asyncio.CancelledError):
                assert i in doomed
            else:
                assert outcome == f"value of {key}".encode()
        assert any(isinstance(o, asyncio.CancelledError) for o in outcomes)
        async with asyncio.timeout(20):
            again = await asyncio.gather(*(backend.get(k) for k in keys))
        assert again == [f"value of {k}".encode() for k in keys]
        for node in backend._nodes:
            assert node.pool.size() <= backend.pool_size
    finally:
        await backend.close()


async def test_cancelled_in_flight_requests_leave_no_reply_behind(
    private_nodes: list[servers.Memcached],
) -> None:
    node = private_nodes[0]
    assert node.proc is not None
    keys = [f"f{i}" for i in range(60)]
    async with MemcachedBackend([node.address], timeout=10, pool_size=3) as backend:
        await backend.set_many({k: k.encode() for k in keys})
        servers.freeze(node.proc)  # requests now sit unanswered on the wire
        try:
            tasks = [asyncio.create_task(backend.get(k)) for k in keys]
            await asyncio.sleep(0.2)  # the first three hold the connections, sent and waiting
            doomed = {0, 2} | set(random.Random(3).sample(range(3, len(keys)), 25))
            for i in doomed:
                tasks[i].cancel()
            await asyncio.sleep(0.05)
        finally:
            node.proc.send_signal(signal.SIGCONT)
        async with asyncio.timeout(10):
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            for i, outcome in enumerate(outcomes):
                if i in doomed:
                    assert isinstance(outcome, asyncio.CancelledError)
                else:
                    assert outcome == keys[i].encode()
            for _ in range(3):
                assert await backend.get_many(*keys) == [k.encode() for k in keys]
                assert await asyncio.gather(*(backend.get(k) for k in keys)) == [
                    k.encode() for k in keys
                ]


async def test_a_connection_holding_bytes_nobody_asked_for_is_not_reused(
    mc: MemcachedBackend,
) -> None:
    await mc.set("k", b"v")
    [node] = [n for n in mc._nodes if (n.host, n.port) == mc.server_for("k")]
    pool = node.pool
    conn = pool.take()
    assert conn is not None
    conn.data_received(b"HD\r\n")  # as if the server had answered more than was asked
    pool.release(conn, clean=True)
    assert pool.take() is None  # closed, not kept: its next reader would read that reply
    assert await mc.get("k") == b"v"  # on a new connection


async def test_connections_read_replies_in_pieces_below_the_allocators_mapping_size(
    memcached_servers: list[Address],
) -> None:
    # asyncio reads 256 KiB at a time: a bytes object that large is mapped and unmapped by
    # the C allocator for every reply. The backend's connections read 64 KiB at most; a
    # large value (several reads) still arrives whole.
    small, large = b"s" * 100, bytes(range(256)) * 3000  # 768,000 bytes
    async with MemcachedBackend(
        memcached_servers[:1], namespace=unique_namespace("mc"), pool_size=1
    ) as mc:
        await mc.set_many({"small": small, "large": large})
        for _ in range(2):
            assert await mc.get("small") == small
            assert await mc.get("large") == large
            assert await mc.get_many("small", "large", "none") == [small, large, None]
        [node] = mc._nodes
        conn = node.pool.take()
        assert conn is not None
        node.pool.release(conn, clean=True)
        assert conn._transport is not None
        assert conn._transport.max_size == 64 * 1024  # type: ignore[attr-defined]
        await mc.clear()


async def test_cancelled_mixed_batches_keep_connections_in_step(mc: MemcachedBackend) -> None:
    rng = random.Random(7)
    loop = asyncio.get_running_loop()

    async def batch(i: int) -> list[Any]:
        return await mc.execute(
            Batch((Set(f"m{i}", str(i).encode(), None), Get(f"m{i}"), Incr(f"c{i}", -1, None)))
        )

    for _ in range(3):
        tasks = [asyncio.create_task(batch(i)) for i in range(120)]
        for task in rng.sample(tasks, 60):
            loop.call_later(rng.uniform(0, 0.01), task.cancel)
        async with asyncio.timeout(20):
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for i, outcome in enumerate(outcomes):
            if not isinstance(outcome, BaseException):
                assert outcome[:2] == [True, str(i).encode()]
    got = await mc.get_many(*[f"m{i}" for i in range(120)])
    assert all(value in (None, str(i).encode()) for i, value in enumerate(got))


async def test_servers_without_meta_commands_are_refused_before_anything_is_sent() -> None:
    # memcached < 1.6.10 would read an "ms" value as commands of its own. A stand-in
    # server that speaks as 1.5.22 must see nothing but the version check.
    received = bytearray()

    async def old_memcached(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            received.extend(line)
            writer.write(b"VERSION 1.5.22\r\n" if line == b"version\r\n" else b"ERROR\r\n")
        writer.close()

    server = await asyncio.start_server(old_memcached, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with MemcachedBackend(("127.0.0.1", port), timeout=2) as backend:
            with pytest.raises(co.BackendError, match=r"1\.5\.22.*1\.6\.10"):
                await backend.set("k", b"flush_all\r\n")
            with pytest.raises(co.BackendError):
                await backend.get("k")
    finally:
        server.close()
        await server.wait_closed()
    assert bytes(received) == b"version\r\n" * 2


# -- construction ----------------------------------------------------------------------------


def test_server_specs() -> None:
    b = MemcachedBackend(("10.0.0.1", 11211))
    assert b.servers == (("10.0.0.1", 11211),)
    b = MemcachedBackend(["10.0.0.1", "10.0.0.2:11212", ("10.0.0.3", 11213), "[::1]:11214"])
    assert b.servers == (
        ("10.0.0.1", 11211),
        ("10.0.0.2", 11212),
        ("10.0.0.3", 11213),
        ("::1", 11214),
    )
    assert "10.0.0.2:11212" in repr(b) and "[::1]:11214" in repr(b)
    b = MemcachedBackend("h1:1,h2:2:3")
    assert b.servers == (("h1", 1), ("h2", 2))
    for bad in ([], ["h:x"], [("h", 0)], ["h:1", "h:1"], 42, [("h", 1, 0)]):
        with pytest.raises((ValueError, TypeError)):
            MemcachedBackend(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hashing"):
        MemcachedBackend("h:1", hashing="modula")
    with pytest.raises(ValueError):
        MemcachedBackend("h:1", pool_size=0)


def test_urls() -> None:
    servers_, options = parse_url("memcached://h1:11211,h2:11212?namespace=app&timeout=2.5")
    assert servers_ == [("h1", 11211, 1), ("h2", 11212, 1)]
    assert options == {"namespace": "app", "timeout": 2.5}
    b = MemcachedBackend.from_url(
        "memcached://h1,[::1]:11212/?pool_size=3&max_value_size=4096&hashing=ketama"
        "&auto_batch=false&timeout=none",
        namespace="override",
    )
    assert b.servers == (("h1", 11211), ("::1", 11212))
    assert (b.pool_size, b.max_value_size, b.hashing, b.auto_batch, b.timeout) == (
        3,
        4096,
        "ketama",
        False,
        None,
    )
    assert b.namespace == "override"
    assert MemcachedBackend("memcached://h9:1").servers == (("h9", 1),)
    for bad in (
        "redis://h:1",
        "memcached://u:p@h:1",
        "memcached://h:1/db",
        "memcached://h:1?x=1",
        "memcached://h:1?timeout=soon",
    ):
        with pytest.raises(ValueError):
            MemcachedBackend.from_url(bad)
    built = co.backend_from_url("memcached://127.0.0.1:11211,127.0.0.1:11212?namespace=x")
    assert isinstance(built, MemcachedBackend) and built.namespace == "x"


async def test_needs_no_driver(
    monkeypatch: pytest.MonkeyPatch, memcached_servers: list[Address]
) -> None:
    """The backend speaks the protocol on connections of its own: no aiomcache needed."""
    monkeypatch.setitem(sys.modules, "aiomcache", None)
    monkeypatch.setitem(sys.modules, "aiomcache.pool", None)
    backend = MemcachedBackend(memcached_servers, namespace=unique_namespace())
    try:
        await backend.set("k", b"v")
        assert await backend.get("k") == b"v"
        await backend.clear()
    finally:
        await backend.close()


def test_capabilities() -> None:
    caps = MemcachedBackend.capabilities
    assert caps.native_cas and not caps.atomic_batch
    # what memcached lacks the executor runs as gets/cas plan steps
    assert not caps.negative_incr and not caps.replace_keep_ttl
    assert "memcached" in MemcachedBackend.url_schemes
