"""RedisBackend against real servers: URL forms, client ownership, round trips per operation,
Redis Cluster (slot splitting, node concurrency, atomicity), faults and cancellation.

The conformance suite (test_conformance.py) covers behaviour shared with every backend; this
module covers what is specific to Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection

import acacheorm as co
from acacheorm._commands import (
    KEEP_TTL,
    Add,
    Batch,
    Cas,
    Delete,
    Get,
    Gets,
    Has,
    Incr,
    Replace,
    Set,
    Touch,
)
from acacheorm.backends.redis import RedisBackend
from tests import servers
from tests.conftest import BACKENDS, unique_namespace

_STANDALONE = {"rb", "redis_url", "redis_server", "own_server"}
_CLUSTER = {"rc", "redis_cluster_url", "redis_cluster"}

# -- helpers ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _only_chosen_backends(request: pytest.FixtureRequest) -> None:
    """Honour ACACHEORM_TEST_BACKENDS (see conftest): no server is started for a skipped kind."""
    names = set(request.fixturenames)
    param = getattr(request.node, "callspec", None)
    kind = param.params.get("either") if param is not None else None
    if (names & _STANDALONE or kind == "redis") and "redis" not in BACKENDS:
        pytest.skip("redis is not in ACACHEORM_TEST_BACKENDS")
    if (names & _CLUSTER or kind == "cluster") and "redis-cluster" not in BACKENDS:
        pytest.skip("redis-cluster is not in ACACHEORM_TEST_BACKENDS")


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Poll ``check`` until true, bounded."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met within the timeout")


class Wire:
    """Records every request written to Redis (one per round trip) and every reply read."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int | str]] = []
        self.recording = False

    @property
    def sends(self) -> list[int | str]:
        return [where for what, where in self.events if what == "send"]

    @contextlib.contextmanager
    def record(self) -> Iterator[Wire]:
        self.events.clear()
        self.recording = True
        try:
            yield self
        finally:
            self.recording = False


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    recorder = Wire()
    send = AbstractConnection.send_packed_command
    read = AbstractConnection.read_response

    def where(conn: Any) -> int | str:
        return getattr(conn, "port", None) or getattr(conn, "path", "?")

    async def send_packed_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        if recorder.recording:
            recorder.events.append(("send", where(self)))
        return await send(self, *args, **kwargs)

    async def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        reply = await read(self, *args, **kwargs)
        if recorder.recording:
            recorder.events.append(("read", where(self)))
        return reply

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send_packed_command)
    monkeypatch.setattr(AbstractConnection, "read_response", read_response)
    return recorder


async def commandstats(client: Any) -> dict[str, int]:
    info = await client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


@pytest.fixture
async def rb(redis_url: str) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(redis_url, namespace=unique_namespace("r"))
    try:
        yield backend
    finally:
        try:
            await backend.clear()
        finally:
            await backend.close()


@pytest.fixture
async def rc(redis_cluster_url: str) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(redis_cluster_url, cluster=True, namespace=unique_namespace("c"))
    try:
        yield backend
    finally:
        try:
            await backend.clear()
        finally:
            await backend.close()


@pytest.fixture(params=["redis", "cluster"])
def either(request: pytest.FixtureRequest) -> RedisBackend:
    """The standalone backend, then the Cluster one."""
    backend: RedisBackend = request.getfixturevalue("rb" if request.param == "redis" else "rc")
    return backend


@pytest.fixture
async def own_server() -> AsyncIterator[servers.RedisServer]:
    """A standalone server of this test's own, to stop, freeze and restart."""
    server = servers.RedisServer()
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def raw(backend: RedisBackend, key: str) -> bytes:
    """The key as Redis stores it."""
    return backend.full_key(key).encode("utf-8", "surrogatepass")


async def smoke(backend: RedisBackend) -> None:
    """Every operation once, through the public byte API and a mixed batch."""
    await backend.set("a", b"1", ttl=30)
    assert await backend.get("a") == b"1"
    assert await backend.add("a", b"x") is False
    assert await backend.replace("a", b"2") is True
    assert await backend.has("a") is True
    assert await backend.incr("n", 5, ttl=30) == 5
    assert await backend.decr("n") == 4
    assert await backend.touch("a", None) is True
    await backend.set_many({"b": b"2", "c": b"3"}, ttl=30)
    assert await backend.get_many("c", "zz", "b") == [b"3", None, b"2"]
    [(value, token)] = await backend.execute(Batch((Gets("a"),)))
    assert value == b"2"
    assert await backend.execute(Batch((Cas("a", b"3", token),))) == [True]
    assert await backend.delete_many("a", "b", "c", "n") == 4


# -- construction, URLs, ownership ----------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
async def test_url_protocol_option(redis_url: str, protocol: int) -> None:
    async with RedisBackend(
        f"{redis_url}?protocol={protocol}", namespace=unique_namespace()
    ) as backend:
        await smoke(backend)
        info = await backend.client.execute_command("CLIENT", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        assert f"resp={protocol}" in text
        await backend.clear()


@pytest.mark.parametrize("protocol", [2, 3])
async def test_cluster_url_scheme_and_protocol(redis_cluster_url: str, protocol: int) -> None:
    address = redis_cluster_url.split("://", 1)[1].split("/", 1)[0]
    url = f"redis+cluster://{address}?protocol={protocol}"
    async with RedisBackend(url, namespace=unique_namespace()) as backend:
        assert isinstance(backend.client, RedisCluster)
        assert repr(backend).startswith(f"<RedisBackend redis+cluster://{address}")
        await smoke(backend)
        await backend.clear()


async def test_unix_socket_url() -> None:
    if "redis" not in BACKENDS:
        pytest.skip("redis is not in ACACHEORM_TEST_BACKENDS")
    sockdir = tempfile.mkdtemp(prefix="acor-")
    path = os.path.join(sockdir, "redis.sock")
    server = servers.RedisServer(None, "--unixsocket", path, "--unixsocketperm", "700")
    await asyncio.to_thread(server.start)
    try:
        async with RedisBackend(f"unix://{path}?db=2", namespace="u") as backend:
            assert repr(backend) == f"<RedisBackend unix://{path}?db=2 namespace='u'>"
            await smoke(backend)
            await backend.set("k", b"v")
            # It went to db 2 of that server, under the namespace.
            check = aredis.Redis(unix_socket_path=path, db=2)
            try:
                assert await check.get(b"u:k") == b"v"
            finally:
                await check.aclose()
            # Without a namespace, clear() empties the database it points at, and only that.
            async with RedisBackend(f"unix://{path}?db=3") as whole:
                await whole.set("x", b"1")
                await whole.clear()
                assert await whole.get("x") is None
            assert await backend.get("k") == b"v"
    finally:
        server.stop()
        shutil.rmtree(sockdir, ignore_errors=True)
        shutil.rmtree(server.workdir, ignore_errors=True)


async def test_given_client_is_not_closed(redis_url: str) -> None:
    client = aredis.Redis.from_url(redis_url)
    try:
        backend = RedisBackend(client, namespace=unique_namespace())
        assert backend.client is client
        await backend.set("k", b"v")
        await backend.clear()
        await backend.close()
        assert await client.ping() is True
        async with RedisBackend(client, namespace=unique_namespace()) as again:
            await again.set("k", b"v")
            await again.clear()
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_a_single_connection_client_works(redis_url: str) -> None:
    """Writes are sent on the client's one connection, taking turns with redis-py's own."""
    client = aredis.Redis.from_url(redis_url, single_connection_client=True)
    try:
        backend = RedisBackend(client, namespace=unique_namespace(), auto_batch=False)
        async with backend:
            await smoke(backend)
            got = await asyncio.gather(
                *(backend.incr("n") for _ in range(50)), *(backend.get("n") for _ in range(50))
            )
            assert sorted(got[:50]) == list(range(1, 51))
            assert await backend.get("n") == b"50"
            await backend.clear()
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_given_cluster_client_is_not_closed(redis_cluster_url: str) -> None:
    client = RedisCluster.from_url(redis_cluster_url)
    try:
        async with RedisBackend(client, namespace=unique_namespace()) as backend:
            await smoke(backend)
            await backend.clear()
        assert await client.ping() is True
    finally:
        await client.aclose()


async def _client_names(redis_url: str) -> list[str]:
    admin = aredis.Redis.from_url(redis_url)
    try:
        return [c.get("name", "") for c in await admin.client_list()]
    finally:
        await admin.aclose()


async def test_owned_client_is_closed(redis_url: str) -> None:
    name = f"acacheorm-owned-{os.getpid()}-{random.randrange(10**9)}"
    backend = RedisBackend(redis_url, namespace=unique_namespace(), client_name=name)
    await backend.set("k", b"v")
    assert name in await _client_names(redis_url)
    await backend.clear()
    await backend.close()

    async def disconnected() -> bool:
        return name not in await _client_names(redis_url)

    await eventually(disconnected)


def test_repr_never_shows_credentials() -> None:
    backend = RedisBackend("redis://alice:s3cret-pw@127.0.0.1:6390/4", namespace="app")
    assert repr(backend) == "<RedisBackend redis://127.0.0.1:6390/4 namespace='app'>"
    tls = RedisBackend("rediss://:s3cret-pw@cache.example:6380/0")
    assert repr(tls) == "<RedisBackend rediss://cache.example:6380/0>"
    client = aredis.Redis(host="127.0.0.1", port=6391, password="s3cret-pw", username="bob")
    given = RedisBackend(client)
    for b in (backend, tls, given):
        assert "s3cret" not in repr(b)
        assert "alice" not in repr(b) and "bob" not in repr(b)
    assert repr(given) == "<RedisBackend redis://127.0.0.1:6391/0>"


def test_owned_client_gets_the_timeout() -> None:
    backend = RedisBackend("redis://127.0.0.1:6390/0", timeout=1.5)
    kwargs = backend.client.connection_pool.connection_kwargs  # type: ignore[union-attr]
    assert kwargs["socket_connect_timeout"] == 1.5
    assert kwargs["socket_timeout"] is None  # reads are bounded by the batch's timeout
    explicit = RedisBackend("redis://127.0.0.1:6390/0", timeout=1.5, socket_timeout=9.0)
    assert explicit.client.connection_pool.connection_kwargs["socket_timeout"] == 9.0  # type: ignore[union-attr]


async def test_calls_beyond_max_connections_wait_for_a_connection(redis_url: str) -> None:
    async with RedisBackend(redis_url, namespace=unique_namespace(), max_connections=4) as b:
        keys = [f"k{i}" for i in range(300)]
        await b.set_many({k: k.encode() for k in keys})
        got = await asyncio.gather(*(b.get(k) for k in keys))
        assert got == [k.encode() for k in keys]
        await b.clear()


async def test_round_trips_keep_one_connection_out_of_the_pool(redis_url: str) -> None:
    """A standalone client built here lends the backend one connection for good: one
    round trip at a time takes it without the pool's taking and giving back, and that
    connection and the batches' never exceed ``max_connections`` (one batch fewer runs at
    once). Closing gives it up; a client given to the backend lends none."""
    from redis.asyncio.connection import ConnectionPool

    from acacheorm.cli._demo import define_models

    taken = 0
    get_connection = ConnectionPool.get_connection

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal taken
        taken += 1
        return await get_connection(self, *args, **kwargs)

    backend = RedisBackend(redis_url, namespace=unique_namespace(), max_connections=4)
    async with backend:
        user, _, _ = define_models(backend, "msgpack")
        await user.insert(id=1, name="a", height=1.5)
        pool = backend.client.connection_pool  # type: ignore[union-attr]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ConnectionPool, "get_connection", counted)
            for _ in range(5):
                assert (await user.get_by_id(1)).name == "a"
                assert (await user.update(id=1, height=2.0)).height == 2.0
                assert await backend.get_many("a", "b") == [None, None]
            assert taken == 0
            # Concurrent batches while that connection is kept: never a fifth connection
            # (redis-py's pool would refuse it: "Too many connections").
            keys = [f"k{i}" for i in range(300)]
            await backend.set_many({k: k.encode() for k in keys})
            patch.setattr(backend, "auto_batch", False)  # a round trip each
            got = await asyncio.gather(*(backend.get_many(k, "none") for k in keys))
            assert got == [[k.encode(), None] for k in keys]
            assert 0 < taken and len(pool._in_use_connections | {*pool._available_connections}) <= 4
        await backend.clear()
    assert backend._spare is not None and backend._spare.kept is None  # given up

    client = aredis.Redis.from_url(redis_url)
    try:
        given = RedisBackend(client, namespace=unique_namespace())
        async with given:
            await given.set("k", b"v")
            assert given._spare is None and not client.connection_pool._in_use_connections
            await given.clear()
    finally:
        await client.aclose()


def test_configuration_errors() -> None:
    with pytest.raises(co.ConfigurationError) as info:
        RedisBackend("http://user:s3cret@127.0.0.1:6379/0")
    assert "s3cret" not in str(info.value)
    with pytest.raises(co.ConfigurationError):
        RedisBackend("unix:///tmp/x.sock", cluster=True)
    with pytest.raises(co.ConfigurationError):
        RedisBackend("redis://127.0.0.1/0", decode_responses=True)
    with pytest.raises(co.ConfigurationError):
        RedisBackend("redis://127.0.0.1/0?decode_responses=true")
    with pytest.raises(co.ConfigurationError):
        RedisBackend(aredis.Redis(decode_responses=True))
    with pytest.raises(co.ConfigurationError):
        RedisBackend(aredis.Redis(), cluster=True)
    with pytest.raises(TypeError):
        RedisBackend(aredis.Redis(), max_connections=3)
    with pytest.raises(TypeError):
        RedisBackend(6379)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RedisBackend("redis://127.0.0.1/0", timeout=0)
    assert {"redis", "rediss", "unix", "redis+cluster"} <= set(RedisBackend.url_schemes)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://127.0.0.1:1/0?protocol=9", "protocol must be either 2 or 3"),
        ("redis+cluster://127.0.0.1:1?protocol=9", "protocol must be either 2 or 3"),
        ("rediss://127.0.0.1:1/0?ssl_cert_reqs=bogus", "Invalid SSL Certificate"),
        ("rediss+cluster://127.0.0.1:1?ssl_cert_reqs=bogus", "Invalid SSL Certificate"),
        ("unix:///tmp/none.sock?db=0&protocol=9", "protocol must be either 2 or 3"),
    ],
)
def test_bad_connection_options_fail_at_construction(url: str, says: str) -> None:
    """Not at first use, where they looked like a server that is down."""
    with pytest.raises(co.ConfigurationError, match=says):
        RedisBackend(url)
    with pytest.raises(co.ConfigurationError, match=says):
        co.backend_from_url(url)
    with pytest.raises(co.ConfigurationError, match=says):
        RedisBackend(url.split("?")[0], **dict([url.split("?")[1].split("&")[-1].split("=")]))
    # the same options, valid, build a backend (no connection is made)
    good = url.replace("protocol=9", "protocol=3").replace("bogus", "none")
    assert isinstance(RedisBackend(good), RedisBackend)


def test_import_without_redis_installed(tmp_path: Any) -> None:
    code = (
        "import sys\n"
        "sys.modules['redis'] = None\n"  # makes `import redis` fail as if not installed
        "import acacheorm, acacheorm.backends.redis as r\n"
        "try:\n"
        "    r.RedisBackend('redis://127.0.0.1/0')\n"
        "except acacheorm.ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "pip install 'acacheorm[redis]'" in out.stdout


# -- keys, values, TTLs ------------------------------------------------------------------------


async def test_keys_are_utf8_exactly(either: RedisBackend) -> None:
    backend = either
    keys = ["", "\x00", "nul\x00mid", "ünï", "x" * 10_240, "{tag}", "*?[]\\", "\ud800"]
    await backend.set_many({k: k.encode("utf-8", "surrogatepass") for k in keys})
    for k in keys:
        assert await backend.client.get(raw(backend, k)) == k.encode("utf-8", "surrogatepass")
        assert await backend.get(k) == k.encode("utf-8", "surrogatepass")


async def test_ttls_are_milliseconds_rounded_up(rb: RedisBackend) -> None:
    client = rb.client
    await rb.set("a", b"v", ttl=1.5)
    assert 1400 < await client.pttl(raw(rb, "a")) <= 1500
    await rb.set("b", b"v", ttl=0.0001)  # never rounded down to "no expiry" or an error
    assert await client.pttl(raw(rb, "b")) in (-2, 0, 1)
    await rb.set_many({"c": b"1", "d": b"2"}, ttl=100)
    assert 99_000 < await client.pttl(raw(rb, "d")) <= 100_000


async def test_ttl_semantics_per_command(rb: RedisBackend) -> None:
    pttl = rb.client.pttl

    async def ttl_of(key: str) -> int:
        return int(await pttl(raw(rb, key)))

    # Incr applies its TTL only when it creates the key.
    assert await rb.incr("n", 1, ttl=100) == 1
    assert 0 < await ttl_of("n") <= 100_000
    await rb.set("m", b"10")
    assert await rb.incr("m", 1, ttl=100) == 11
    assert await ttl_of("m") == -1
    # Replace keeps the TTL with KEEP_TTL, removes it with None, sets it with seconds.
    await rb.set("r", b"1", ttl=100)
    assert await rb.execute(Batch((Replace("r", b"2", KEEP_TTL),))) == [True]
    assert 0 < await ttl_of("r") <= 100_000
    assert await rb.replace("r", b"3") is True
    assert await ttl_of("r") == -1
    assert await rb.replace("r", b"4", ttl=50) is True
    assert 0 < await ttl_of("r") <= 50_000
    # Cas: KEEP_TTL keeps, None removes, seconds set.
    [(_, token)] = await rb.execute(Batch((Gets("r"),)))
    assert await rb.execute(Batch((Cas("r", b"5", token, KEEP_TTL),))) == [True]
    assert 0 < await ttl_of("r") <= 50_000
    assert await rb.execute(Batch((Cas("r", b"6", b"5", None),))) == [True]
    assert await ttl_of("r") == -1
    assert await rb.execute(Batch((Cas("r", b"7", b"6", 20),))) == [True]
    assert 0 < await ttl_of("r") <= 20_000
    # Touch: True for a key with or without a TTL, False for a missing one.
    assert await rb.touch("r", None) is True
    assert await ttl_of("r") == -1
    assert await rb.touch("r", None) is True  # PERSIST would say 0 here
    assert await rb.touch("missing", None) is False
    assert await rb.touch("r", 10) is True
    assert 0 < await ttl_of("r") <= 10_000


async def test_errors_stay_in_their_slot(either: RedisBackend) -> None:
    backend = either
    results = await backend.execute(
        Batch(
            (
                Set("s", b"abc"),
                Incr("s"),
                Incr("s", 1, 60.0),
                Get("s"),
                Incr("n", 2),
            )
        )
    )
    assert results[0] is True
    for err in results[1:3]:
        assert isinstance(err, co.BackendError)
        assert not isinstance(err, co.BackendUnavailable)
        assert "not an integer" in str(err)
    assert results[3:] == [b"abc", 2]
    with pytest.raises(co.BackendError):
        await backend.incr("s", ttl=5)
    assert await backend.get("s") == b"abc"
    assert await backend.client.pttl(raw(backend, "s")) == -1


async def test_wrong_type_is_a_backend_error(rb: RedisBackend) -> None:
    await rb.client.rpush(raw(rb, "list"), b"x")
    with pytest.raises(co.BackendError) as info:
        await rb.get("list")
    assert info.value.__cause__ is not None


async def test_connections_read_replies_in_pieces_below_the_allocators_mapping_size(
    either: RedisBackend,
) -> None:
    # asyncio reads 256 KiB at a time: a bytes object that large is mapped and unmapped by
    # the C allocator for every reply. The backend's connections read 64 KiB at most
    # (redis-py's reader takes 64 KiB per read anyway); a large value still arrives whole.
    backend = either
    big = bytes(range(256)) * 4000  # 1,024,000 bytes
    await backend.set("{t}big", big)
    await backend.set("{t}small", b"s")
    assert await backend.get("{t}small") == b"s"
    assert await backend.get("{t}big") == big
    assert await backend.get_many("{t}big", "{t}small", "{t}none") == [big, b"s", None]
    client: Any = backend.client
    if isinstance(client, RedisCluster):
        conns = list(client.get_node_from_key(backend.full_key("{t}big"))._free)
    else:
        conns = list(client.connection_pool._available_connections)
        if backend._spare is not None and backend._spare.kept is not None:
            conns.append(backend._spare.kept[1])  # the connection kept out of the pool
    transports = [c._writer.transport for c in conns if c._writer]
    assert transports
    assert {t.max_size for t in transports} == {64 * 1024}


# -- round trips -------------------------------------------------------------------------------


async def test_round_trips_per_operation(rb: RedisBackend, wire: Wire) -> None:
    client = rb.client
    await rb.set("warm", b"up")  # the connection exists before counting
    keys = [f"k{i}" for i in range(100)]
    await rb.set_many({k: b"v" for k in keys})
    [(_, token)] = await rb.execute(Batch((Gets("warm"),)))

    operations: list[tuple[str, Callable[[], Awaitable[Any]], dict[str, int]]] = [
        ("get", lambda: rb.get("k1"), {"get": 1}),
        ("set", lambda: rb.set("k1", b"w"), {"set": 1}),
        ("set ttl", lambda: rb.set("k1", b"w", ttl=9), {"set": 1}),
        ("get_many 100", lambda: rb.get_many(*keys), {"mget": 1}),
        ("set_many 100 ttl", lambda: rb.set_many({k: b"t" for k in keys}, ttl=60), {"evalsha": 1}),
        ("set_many 100", lambda: rb.set_many({k: b"u" for k in keys}), {"mset": 1}),
        ("add", lambda: rb.add("new", b"1", ttl=5), {"set": 1}),
        ("replace", lambda: rb.replace("k2", b"1"), {"set": 1}),
        ("add_many 100", lambda: rb.add_many({k: b"a" for k in keys}), {"set": 100}),
        ("has", lambda: rb.has("k1"), {"exists": 1}),
        ("incr", lambda: rb.incr("n"), {"incrby": 1}),
        ("incr ttl", lambda: rb.incr("n2", ttl=60), {"evalsha": 1}),
        ("touch", lambda: rb.touch("k1", 60), {"pexpire": 1}),
        ("touch None", lambda: rb.touch("k1", None), {"exists": 1, "persist": 1}),
        ("cas", lambda: rb.execute(Batch((Cas("warm", b"x", token),))), {"evalsha": 1}),
        ("delete", lambda: rb.delete("k3"), {"unlink": 1}),
        ("delete_many 100", lambda: rb.delete_many(*keys), {"unlink": 100}),
        (
            "mixed batch",
            lambda: rb.execute(
                Batch((Get("a"), Get("b"), Set("c", b"1", 5.0), Incr("d"), Has("a"), Delete("e")))
            ),
            {"mget": 1, "set": 1, "incrby": 1, "exists": 1, "unlink": 1},
        ),
        (
            "atomic batch",
            lambda: rb.execute(Batch((Set("c", b"1"), Incr("d"), Get("c")), atomic=True)),
            {"multi": 1, "exec": 1, "set": 1, "incrby": 1, "get": 1},
        ),
    ]
    for name, operation, expected in operations:
        await client.config_resetstat()
        with wire.record():
            await operation()
        stats = await commandstats(client)
        stats.pop("config|resetstat", None)
        assert len(wire.sends) == 1, name
        called = {cmd: n for cmd, n in stats.items() if cmd not in ("info",)}
        for cmd, n in expected.items():
            assert called.get(cmd) == n, (name, called)
        if name.startswith("get_many"):
            assert "get" not in called


async def test_large_batches_are_chunked_in_one_round_trip(rb: RedisBackend, wire: Wire) -> None:
    await rb.set("warm", b"up")
    await rb.set_many({"warm": b"up", "warm2": b"up"}, ttl=60)  # script loaded: no NOSCRIPT below
    pairs = {f"k{i}": str(i).encode() for i in range(2500)}
    await rb.client.config_resetstat()
    with wire.record():
        await rb.set_many(pairs, ttl=60)
        got = await rb.get_many(*pairs)
    assert got == list(pairs.values())
    assert len(wire.sends) == 2
    stats = await commandstats(rb.client)
    assert stats["evalsha"] == 3 and stats["mget"] == 3


async def test_scripts_survive_a_flushed_script_cache(either: RedisBackend) -> None:
    backend = either
    flush = backend.client.script_flush
    # A lone script call after a flush (server restart, SCRIPT FLUSH) is re-sent with its body.
    for operation in (
        lambda: backend.set_many({"{t}a": b"1", "{t}b": b"2"}, ttl=60),
        lambda: backend.incr("n", ttl=60),
        lambda: backend.execute(Batch((Cas("{t}a", b"3", b"1"),))),
    ):
        await flush()
        await operation()
    assert await backend.get_many("{t}a", "{t}b", "n") == [b"3", b"2", b"1"]

    # In a batch, what the other commands see is unchanged: a script call on a key that
    # another command of the batch uses carries its body from the start (here a and k).
    await backend.set("{t}k", b"v")
    for atomic in (False, True):  # one hash tag: atomic works on Cluster too
        await flush()
        token = b"w" if atomic else b"v"
        results = await backend.execute(
            Batch(
                (
                    Set("{t}a", b"1", 60.0),
                    Set("{t}b", b"2", 60.0),
                    Incr("{t}n", 1, 60.0),
                    Cas("{t}k", b"w", token, KEEP_TTL),
                    Get("{t}a"),
                    Get("{t}k"),
                    Incr("{t}n2", 1, 60.0),
                ),
                atomic=atomic,
            )
        )
        assert results == [True, True, 1 + atomic, True, b"1", b"w", 1 + atomic]


async def test_multi_never_carries_evalsha(rb: RedisBackend) -> None:
    # Inside MULTI a NOSCRIPT does not abort the other commands, so there is none to get.
    await rb.client.script_flush()
    await rb.client.config_resetstat()
    results = await rb.execute(
        Batch((Incr("n", 1, 60.0), Cas("k", b"w", b"v"), Set("a", b"1", 5.0)), atomic=True)
    )
    assert results == [1, False, True]
    stats = await commandstats(rb.client)
    assert "evalsha" not in stats and stats["eval"] == 2 and stats["exec"] == 1


async def test_atomic_batch_is_multi_exec(rb: RedisBackend) -> None:
    await rb.set("s", b"text")
    results = await rb.execute(
        Batch(
            (
                Set("a", b"1"),
                Incr("s"),
                Add("a", b"2"),
                Get("a"),
                Touch("a", 30.0),
            ),
            atomic=True,
        )
    )
    # Redis runs the rest of a MULTI when one command fails at run time; the slot says so.
    assert results[0] is True and isinstance(results[1], co.BackendError)
    assert results[2:] == [False, b"1", True]


# -- cluster -----------------------------------------------------------------------------------


async def keys_on_every_master(backend: RedisBackend, per_node: int = 3) -> list[str]:
    """Keys (without namespace) that land on every primary, ``per_node`` each, interleaved."""
    client = backend.client
    assert isinstance(client, RedisCluster)
    await client.initialize()
    primaries = {n.name for n in client.get_primaries()}
    assert len(primaries) >= 3
    found: dict[str, list[str]] = {name: [] for name in primaries}
    i = 0
    while any(len(v) < per_node for v in found.values()):
        key = f"spread{i}"
        node = client.get_node_from_key(raw(backend, key))
        assert node is not None
        if len(found[node.name]) < per_node:
            found[node.name].append(key)
        i += 1
    keys = [k for ks in zip(*found.values(), strict=True) for k in ks]
    return keys


async def test_cluster_batches_span_every_master(rc: RedisBackend) -> None:
    client = rc.client
    assert isinstance(client, RedisCluster)
    keys = await keys_on_every_master(rc)
    assert len({client.keyslot(raw(rc, k)) for k in keys}) == len(keys)
    values = {k: f"value of {k}".encode() for k in keys}

    await rc.set_many(values, ttl=60)
    assert await rc.get_many(*reversed(keys)) == [values[k] for k in reversed(keys)]
    assert await rc.add_many({k: b"x" for k in keys[:4]} | {"fresh": b"f"}) == [
        False,
        False,
        False,
        False,
        True,
    ]
    assert await rc.replace_many({k: b"r" for k in keys[::2]} | {"absent": b"a"}) == [
        *([True] * len(keys[::2])),
        False,
    ]
    assert await rc.execute(Batch(tuple(Incr(f"{k}:n", i) for i, k in enumerate(keys)))) == list(
        range(len(keys))
    )
    assert await rc.execute(Batch(tuple(Incr(f"{k}:n", 1, 60.0) for k in keys))) == list(
        range(1, len(keys) + 1)
    )
    mixed = await rc.execute(
        Batch(
            tuple(cmd for k in keys for cmd in (Get(k), Has(k), Touch(k, 30.0), Delete(f"{k}:n")))
        )
    )
    for i, k in enumerate(keys):
        expected = b"r" if k in keys[::2] else values[k]
        assert mixed[4 * i : 4 * i + 4] == [expected, True, True, True]
    assert await rc.delete_many(*keys, "fresh", "nothing") == len(keys) + 1
    assert await rc.get_many(*keys) == [None] * len(keys)


async def test_cluster_get_many_one_request_per_master_concurrently(
    rc: RedisBackend, wire: Wire
) -> None:
    keys = await keys_on_every_master(rc, per_node=34)
    random.Random(7).shuffle(keys)
    await rc.set_many({k: k.encode() for k in keys})
    await rc.get_many(*keys)  # every node has a pooled connection now
    with wire.record():
        got = await rc.get_many(*keys)
    assert got == [k.encode() for k in keys]
    sends = wire.sends
    assert len(sends) == 3 and len(set(sends)) == 3  # one request per master
    # Concurrent, not one node after the other: every request was written before any reply
    # came back.
    first_read = next(i for i, (what, _) in enumerate(wire.events) if what == "read")
    assert all(what == "send" for what, _ in wire.events[:3]) and first_read == 3


async def test_cluster_replies_already_received_are_not_read_one_by_one(
    rc: RedisBackend, wire: Wire
) -> None:
    """A node's replies that arrived together are taken from the parser's buffer, not each
    by a read through redis-py (a few coroutines per reply)."""
    keys = await keys_on_every_master(rc, per_node=100)
    await rc.set_many({k: k.encode() for k in keys})
    await rc.get_many(*keys)
    with wire.record():
        got = await rc.get_many(*keys)
    assert got == [k.encode() for k in keys]
    assert len(wire.sends) == 3
    assert len(wire.events) - len(wire.sends) < len(keys) // 10  # reads


async def test_cluster_lone_get_goes_straight_to_its_node(
    rc: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from acacheorm.backends.redis import _cluster

    await rc.set("lone", b"v")
    client = rc.client
    assert isinstance(client, RedisCluster)
    through_redis_py: list[tuple[Any, ...]] = []
    command = client.execute_command

    async def counted(*args: Any, **kwargs: Any) -> Any:
        through_redis_py.append(args)
        return await command(*args, **kwargs)

    monkeypatch.setattr(client, "execute_command", counted)
    assert await rc.get("lone") == b"v"
    assert await rc.get("absent") is None
    assert await rc.execute(Batch((Has("lone"),))) == [True]
    assert through_redis_py == []

    # A node that cannot be reached so: redis-py's command path, with its retries, reads.
    async def unreachable(*args: Any) -> None:
        raise RedisConnectionError("refused")

    monkeypatch.setattr(_cluster, "_node_round_trip", unreachable)
    assert await rc.get("lone") == b"v"
    assert through_redis_py == [("GET", raw(rc, "lone"))]


async def test_cluster_atomic_across_slots_is_refused(rc: RedisBackend, wire: Wire) -> None:
    keys = await keys_on_every_master(rc, per_node=1)
    batch = Batch(tuple(Set(k, b"v") for k in keys), atomic=True)
    with wire.record(), pytest.raises(co.AtomicityError):
        await rc.execute(batch)
    assert wire.sends == []  # refused before anything was sent
    assert await rc.get_many(*keys) == [None] * len(keys)


async def test_cluster_atomic_with_a_hash_tag(rc: RedisBackend, wire: Wire) -> None:
    await rc.set("{user1}:s", b"text", ttl=60)
    await rc.set("{user1}:c", b"old")
    await rc.client.script_flush()
    with wire.record():
        results = await rc.execute(
            Batch(
                (
                    Set("{user1}:a", b"1", 60.0),
                    Set("{user1}:b", b"2", 60.0),
                    Incr("{user1}:n", 5, 60.0),
                    Add("{user1}:a", b"x"),
                    Replace("{user1}:b", b"3", KEEP_TTL),
                    Get("{user1}:a"),
                    Cas("{user1}:c", b"new", b"old", None),
                    Incr("{user1}:s"),
                    Touch("{user1}:b", None),
                    Delete("{user1}:zz"),
                    Get("{user1}:b"),
                ),
                atomic=True,
            )
        )
    assert len(wire.sends) == 1
    assert results[:7] == [True, True, 5, False, True, b"1", True]
    assert isinstance(results[7], co.BackendError)
    assert results[8:] == [True, False, b"3"]
    assert await rc.get("{user1}:c") == b"new"


async def test_cluster_atomic_batch_follows_a_moved_slot(
    rc: RedisBackend, redis_cluster: servers.RedisCluster | str
) -> None:
    if isinstance(redis_cluster, str):
        pytest.skip("moves a hash slot: only on the suite's own cluster")
    client = rc.client
    assert isinstance(client, RedisCluster)
    await client.initialize()
    key = "{acacheorm-moved-slot}"
    slot = client.keyslot(raw(rc, key))
    owner = client.get_node_from_key(raw(rc, key))
    assert owner is not None
    target = next(n for n in client.get_primaries() if n.name != owner.name)
    admins = {n.name: aredis.Redis(host=n.host, port=n.port) for n in client.get_primaries()}

    async def give_slot_to(node_name: str) -> None:
        node_id = await admins[node_name].execute_command("CLUSTER", "MYID")
        for admin in admins.values():
            await admin.execute_command("CLUSTER", "SETSLOT", slot, "NODE", node_id)

    try:
        await give_slot_to(target.name)  # the slot is empty; the client does not know yet
        batch = Batch((Set(f"{key}a", b"1"), Incr(f"{key}n", 2), Get(f"{key}a")), atomic=True)
        assert await rc.execute(batch) == [True, 2, b"1"]
        assert await target.execute_command("GET", raw(rc, f"{key}a")) == b"1"
        await rc.delete_many(f"{key}a", f"{key}n")
    finally:
        await give_slot_to(owner.name)
        for admin in admins.values():
            await admin.aclose()
    assert await rc.execute(batch) == [True, 2, b"1"]  # and back again


class SlotMover:
    """Moves one hash slot between the primaries of the suite's own cluster, behind the
    client's back (its slot map goes stale), and puts it back afterwards."""

    def __init__(self, backend: RedisBackend, key: str) -> None:
        client = backend.client
        assert isinstance(client, RedisCluster)
        self.client = client
        self.slot = client.keyslot(raw(backend, key))
        owner = client.get_node_from_key(raw(backend, key))
        assert owner is not None
        self.owner = owner
        self.target = next(n for n in client.get_primaries() if n.name != owner.name)
        self.admins = {
            n.name: aredis.Redis(host=n.host, port=n.port, single_connection_client=True)
            for n in client.get_primaries()
        }

    async def node_id(self, node: Any) -> Any:
        return await self.admins[node.name].execute_command("CLUSTER", "MYID")

    async def give_to(self, node: Any) -> None:
        node_id = await self.node_id(node)
        for admin in self.admins.values():
            await admin.execute_command("CLUSTER", "SETSLOT", self.slot, "NODE", node_id)

    async def start_migration(self) -> None:
        """The owner answers ASK for keys it no longer has; the target takes them (ASKING)."""
        target = self.admins[self.target.name]
        owner = self.admins[self.owner.name]
        await target.execute_command(
            "CLUSTER", "SETSLOT", self.slot, "IMPORTING", await self.node_id(self.owner)
        )
        await owner.execute_command(
            "CLUSTER", "SETSLOT", self.slot, "MIGRATING", await self.node_id(self.target)
        )

    async def on_target(self, *args: Any) -> Any:
        """A command on the target while it imports the slot."""
        target = self.admins[self.target.name]
        await target.execute_command("ASKING")
        return await target.execute_command(*args)

    async def stop_migration(self) -> None:
        for admin in self.admins.values():
            await admin.execute_command("CLUSTER", "SETSLOT", self.slot, "STABLE")

    async def aclose(self) -> None:
        for admin in self.admins.values():
            await admin.aclose()


async def test_cluster_batch_follows_a_moved_slot(
    rc: RedisBackend, redis_cluster: servers.RedisCluster | str
) -> None:
    if isinstance(redis_cluster, str):
        pytest.skip("moves a hash slot: only on the suite's own cluster")
    await rc.client.initialize()  # type: ignore[union-attr]
    others = await keys_on_every_master(rc, per_node=2)
    tag = "{acacheorm-moved-batch}"
    mover = SlotMover(rc, tag)
    target = mover.admins[mover.target.name]

    def batch(round_: int) -> Batch:
        # Commands on the moved slot between commands on every master (one of them on the
        # moved slot's old owner): Incrs say whether anything ran twice.
        return Batch(
            (
                Set(others[0], b"a"),
                Incr(f"{tag}n", 2),
                Incr(f"{others[1]}:n"),
                Set(f"{tag}a", b"1", 60.0),
                Get(others[0]),
                Get(f"{tag}a"),
                Incr(f"{tag}n", 3),
                Incr(f"{tag}s"),
                *(Incr(f"{k}:n") for k in others[2:]),
                Get(f"{tag}n"),
            )
        )

    try:
        await mover.give_to(mover.target)  # the slot is empty; the client does not know yet
        await target.set(raw(rc, f"{tag}s"), b"text")
        results = await rc.execute(batch(1))
        assert results[:7] == [True, 2, 1, True, b"a", b"1", 5]
        assert isinstance(results[7], co.BackendError) and "not an integer" in str(results[7])
        assert results[8:] == [1] * len(others[2:]) + [b"5"]
        assert await target.get(raw(rc, f"{tag}n")) == b"5"
        assert (await rc.execute(batch(2)))[:7] == [True, 7, 2, True, b"a", b"1", 10]
    finally:
        await target.delete(*(raw(rc, f"{tag}{x}") for x in "nas"))
        await mover.give_to(mover.owner)
        await mover.aclose()
    await rc.set(f"{tag}s", b"text")
    results = await rc.execute(batch(3))  # and back again
    assert results[:7] == [True, 2, 3, True, b"a", b"1", 5]
    assert results[8:] == [3] * len(others[2:]) + [b"5"]


async def test_cluster_batch_follows_ask_while_a_slot_migrates(
    rc: RedisBackend, redis_cluster: servers.RedisCluster | str
) -> None:
    if isinstance(redis_cluster, str):
        pytest.skip("migrates a hash slot: only on the suite's own cluster")
    await rc.client.initialize()  # type: ignore[union-attr]
    others = await keys_on_every_master(rc, per_node=2)
    tag = "{acacheorm-ask-batch}"
    mover = SlotMover(rc, tag)
    await rc.set_many({f"{tag}old": b"1", f"{tag}old2": b"o", f"{tag}old3": b"x"})
    # Several free connections on every node: ASKING must go on the command's connection.
    client = rc.client
    await asyncio.gather(*(client.get(raw(rc, k)) for k in others for _ in range(4)))
    await mover.start_migration()
    try:
        await mover.on_target("SET", raw(rc, f"{tag}new2"), b"n")
        # The owner runs commands on keys it holds ("old…") and answers ASK for the others,
        # which the importing node then runs, in batch order.
        results = await rc.execute(
            Batch(
                (
                    Incr(f"{tag}new", 5),
                    Set(others[0], b"a"),
                    Get(f"{tag}old"),
                    *(Incr(f"{k}:n") for k in others),
                    Set(f"{tag}old", b"2"),
                    Incr(f"{tag}new", 1),
                    Get(f"{tag}new"),
                )
            )
        )
        assert results == [5, True, b"1", *([1] * len(others)), True, 6, b"6"]
        assert await mover.on_target("GET", raw(rc, f"{tag}new")) == b"6"
        assert await client.get(raw(rc, f"{tag}old")) == b"2"

        # A multi-key command over keys on both nodes gets TRYAGAIN: it is sent key by key.
        results = await rc.execute(
            Batch(
                (
                    Get(f"{tag}old2"),
                    Get(f"{tag}new2"),
                    Get(others[0]),
                    Set(f"{tag}old3", b"y", 60.0),
                    Set(f"{tag}new3", b"z", 60.0),
                    Set(f"{tag}new4", b"q"),
                )
            )
        )
        assert results == [b"o", b"n", b"a", True, True, True]
        assert await client.get(raw(rc, f"{tag}old3")) == b"y"
        assert await mover.on_target("GET", raw(rc, f"{tag}new3")) == b"z"
        # ... unless a later command of the batch touches one of its keys: the later one ran,
        # so the reply of the earlier one could not say what the batch order says.
        results = await rc.execute(
            Batch((Get(f"{tag}old"), Get(f"{tag}new"), Get(others[1]), Set(f"{tag}new", b"7")))
        )
        for refused in results[:2]:
            assert isinstance(refused, co.BackendError)
            assert not isinstance(refused, co.BackendUnavailable)
            assert "rehashing" in str(refused)
        assert results[2:] == [None, True]
        assert await mover.on_target("GET", raw(rc, f"{tag}new")) == b"7"
    finally:
        for name in ("new", "new2", "new3", "new4"):
            with contextlib.suppress(Exception):
                await mover.on_target("DEL", raw(rc, f"{tag}{name}"))
        await mover.stop_migration()
        await mover.aclose()
    assert await rc.get_many(f"{tag}old", f"{tag}new", f"{tag}old2") == [b"2", None, b"o"]


async def test_cluster_lone_commands_follow_moved_and_ask(
    rc: RedisBackend, redis_cluster: servers.RedisCluster | str
) -> None:
    """A lone command goes straight to its node, outside the batch path, and a batch of
    gets alone skips the planner: a MOVED or ASK reply (the command did not run) still
    takes them to the right node, and a write runs once."""
    if isinstance(redis_cluster, str):
        pytest.skip("moves a hash slot: only on the suite's own cluster")
    await rc.client.initialize()  # type: ignore[union-attr]
    tag = "{acacheorm-lone-redirect}"
    mover = SlotMover(rc, tag)
    target = mover.admins[mover.target.name]
    try:
        await mover.give_to(mover.target)  # the slot is empty; the client does not know yet
        assert await rc.incr(f"{tag}n", 2) == 2  # MOVED: the slot map learns the new owner
        assert await rc.incr(f"{tag}n", 3, ttl=60) == 5  # a script call
        assert await target.get(raw(rc, f"{tag}n")) == b"5"
        await target.delete(raw(rc, f"{tag}n"))
        await mover.give_to(mover.owner)  # and back: the client's map is stale again
        assert await rc.get(f"{tag}n") is None  # MOVED for a read too
        assert await rc.set(f"{tag}old", b"1") is None
        await mover.start_migration()
        await mover.on_target("SET", raw(rc, f"{tag}new"), b"n")
        # The owner answers ASK for the keys it does not hold; the importing node runs them.
        assert await rc.get(f"{tag}new") == b"n"
        assert await rc.get(f"{tag}old") == b"1"
        assert await rc.incr(f"{tag}m", 4) == 4
        assert await rc.incr(f"{tag}m", 1) == 5
        assert await mover.on_target("GET", raw(rc, f"{tag}m")) == b"5"
        assert await rc.has(f"{tag}new") and not await rc.has(f"{tag}none")
        # A batch of gets alone: its MGET over keys on both nodes gets TRYAGAIN, then each
        # GET follows its ASK.
        others = await keys_on_every_master(rc, per_node=1)
        got = await rc.get_many(f"{tag}old", *others, f"{tag}new", f"{tag}m")
        assert got == [b"1", *([None] * len(others)), b"n", b"5"]
    finally:
        for name in ("n", "new", "m"):
            with contextlib.suppress(Exception):
                await mover.on_target("DEL", raw(rc, f"{tag}{name}"))
        with contextlib.suppress(Exception):
            await mover.stop_migration()
        await mover.give_to(mover.owner)
        await mover.aclose()
    assert await rc.get_many(f"{tag}old", f"{tag}new", f"{tag}m") == [b"1", None, None]


async def test_cluster_clear_covers_every_master(rc: RedisBackend, redis_cluster_url: str) -> None:
    keys = await keys_on_every_master(rc, per_node=40)
    other = RedisBackend(redis_cluster_url, cluster=True, namespace=unique_namespace("other"))
    async with other:
        await other.set_many({k: b"keep" for k in keys[:9]})
        await rc.set_many({k: b"v" for k in keys})
        await rc.clear()
        assert await rc.get_many(*keys) == [None] * len(keys)
        assert await other.get_many(*keys[:9]) == [b"keep"] * 9
        await other.clear()


# -- clear and glob escaping -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "cluster"])
@pytest.mark.parametrize(
    ("mine", "theirs"), [("ns*", "nsX"), ("n[ab]", "na"), ("q?", "qq"), ("a\\", "a")]
)
async def test_clear_escapes_glob_characters(
    kind: str, mine: str, theirs: str, redis_url: str, redis_cluster_url: str
) -> None:
    url, cluster = (redis_url, False) if kind == "redis" else (redis_cluster_url, True)
    suffix = unique_namespace("")
    async with (
        RedisBackend(url, cluster=cluster, namespace=mine + suffix) as a,
        RedisBackend(url, cluster=cluster, namespace=theirs + suffix) as b,
    ):
        await a.set_many({f"k{i}": b"a" for i in range(20)})
        await b.set_many({f"k{i}": b"b" for i in range(20)})
        await a.clear()
        assert await a.get_many("k0", "k19") == [None, None]
        assert await b.get_many("k0", "k19") == [b"b", b"b"]
        await b.clear()


async def test_scan_escapes_globs_and_spans_every_master(either: RedisBackend) -> None:
    backend = either
    keys = [f"spread{i}" for i in range(60)] + ["a?[x]*1", "a?[x]*2", "a\\b", "ab[x]*3"]
    await backend.set_many({k: b"v" for k in keys})
    assert sorted([k async for k in backend.scan(count=5)]) == sorted(keys)
    assert sorted([k async for k in backend.scan("a?[x]*")]) == ["a?[x]*1", "a?[x]*2"]
    assert sorted([k async for k in backend.scan("a?")]) == ["a?[x]*1", "a?[x]*2"]  # not ab…
    assert [k async for k in backend.scan("a\\")] == ["a\\b"]
    client = backend.client
    if isinstance(client, RedisCluster):
        nodes = {client.get_node_from_key(raw(backend, k)).name for k in keys}  # type: ignore[union-attr]
        assert len(nodes) == len(client.get_primaries())


async def test_scan_skips_keys_it_could_not_read_back(redis_url: str) -> None:
    async with RedisBackend(redis_url.rsplit("/", 1)[0] + "/5") as whole:  # no namespace
        await whole.clear()
        await whole.set("readable", b"1")
        await whole.client.set(b"\xff\xfe not utf-8", b"2")
        assert [k async for k in whole.scan()] == ["readable"]
        await whole.clear()


# -- faults ------------------------------------------------------------------------------------


async def test_refused_connection_is_unavailable() -> None:
    port = servers.free_port()  # nothing listens there
    async with RedisBackend(f"redis://127.0.0.1:{port}/0", timeout=2) as backend:
        started = time.monotonic()
        async with asyncio.timeout(5):
            with pytest.raises(co.BackendUnavailable) as info:
                await backend.get("k")
        assert time.monotonic() - started < 2
        assert info.value.__cause__ is not None
    async with RedisBackend(f"redis+cluster://127.0.0.1:{port}", timeout=2) as backend:
        async with asyncio.timeout(5):
            with pytest.raises(co.BackendUnavailable):
                await backend.get_many("a", "b")


async def test_server_stopped_mid_run_then_back(own_server: servers.RedisServer) -> None:
    backend = RedisBackend(own_server.url, timeout=1.0, namespace="f")
    async with backend:
        client = backend.client
        await backend.set("k", b"v")
        done = 0

        async def reader() -> None:
            nonlocal done
            while True:
                assert await backend.get_many("k", "k") == [b"v", b"v"]
                done += 1

        task = asyncio.create_task(reader())

        async def running() -> bool:
            return done >= 20

        await eventually(running)
        own_server.stop()
        stopped = time.monotonic()
        async with asyncio.timeout(1.0 + 3):
            with pytest.raises(co.BackendUnavailable):
                await task
        # Within the timeout (1 s), plus slack for a loaded machine.
        assert time.monotonic() - stopped < 1.0 + 1.0
        with pytest.raises(co.BackendUnavailable):
            await backend.set("k", b"w")

        await asyncio.to_thread(own_server.start)  # same port, empty database

        async def recovered() -> bool:
            try:
                await backend.set("k", b"again")
            except co.BackendUnavailable:
                return False
            return True

        await eventually(recovered)
        assert backend.client is client
        assert await backend.get("k") == b"again"


async def test_frozen_server_times_out(own_server: servers.RedisServer) -> None:
    backend = RedisBackend(own_server.url, timeout=0.5, namespace="f")
    async with backend:
        await backend.set("k", b"v")
        assert own_server.proc is not None
        servers.freeze(own_server.proc)
        try:
            operations: list[Callable[[], Awaitable[Any]]] = [
                lambda: backend.get("k"),
                lambda: backend.set_many({"a": b"1", "b": b"2"}, ttl=5),
            ]
            for operation in operations:
                started = time.monotonic()
                async with asyncio.timeout(5):
                    with pytest.raises(co.BackendUnavailable):
                        await operation()
                assert time.monotonic() - started < 0.5 + 1.0  # the timeout, plus slack
        finally:
            own_server.proc.send_signal(signal.SIGCONT)

        async def recovered() -> bool:
            try:
                return await backend.get("k") == b"v"
            except co.BackendUnavailable:
                return False

        await eventually(recovered)


async def test_a_lone_model_read_skips_the_batch_layers_with_the_same_answers(
    either: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone read of a model row takes the backend's own one-read path (on Cluster, to
    the node owning its slot): no batch planned and assembled; its answers (row, miss, an
    error reply) are those of the batch path, and a subclass that wraps `_execute` still
    sees every read."""
    from acacheorm.cli._demo import define_models

    rb = either
    batches: list[Any] = []
    run = RedisBackend._run

    async def counting(self: RedisBackend, commands: Any, *args: Any) -> list[Any]:
        batches.append(commands)
        return await run(self, commands, *args)

    monkeypatch.setattr(RedisBackend, "_run", counting)
    user, _, _ = define_models(rb, "msgpack")
    await user.insert(id=1, name="a", height=1.5)
    batches.clear()
    assert (await user.get_by_id(1)).name == "a"
    assert await user.get_or_none(id=2) is None
    assert batches == []  # neither went through `_execute`
    await rb.client.rpush(raw(rb, user._schema.key((3,))), b"x")  # a list where a row goes
    with pytest.raises(co.BackendError) as lone:
        await user.get_by_id(3)
    [batch_error] = await rb.execute(Batch((Get(user._schema.key((3,))),)))
    assert str(lone.value) == str(batch_error)  # named as the batch path names it
    assert type(lone.value) is type(batch_error)
    # The read of an update (a `Gets`) takes that path too, and its write (a `Cas`) a
    # one-command path of its own.
    batches.clear()
    assert (await user.update(id=1, height=2.0)).height == 2.0
    assert batches == []
    [(_, token)] = await rb.execute(Batch((Gets(user._schema.key((1,))),)))
    for pk in (1, 2, 3):  # a row, a miss, an error reply: the batch path's answers
        key = user._schema.key((pk,))
        for command in (Gets(key), Cas(key, token, token, None), Has(key)):
            got = await rb._run_lone(command)
            [expected] = await rb.execute(Batch((command,)))
            assert type(got) is type(expected) and str(got) == str(expected)
            assert got == expected or isinstance(got, co.BackendError)

    class Wrapped(RedisBackend):
        async def _execute(self, batch: Batch) -> list[Any]:
            return await super()._execute(batch)

    assert Wrapped._runs_one is False
    async with Wrapped(rb.client, namespace=rb.namespace) as wrapped:
        other, _, _ = define_models(wrapped, "msgpack")
        batches.clear()
        assert (await other.get_by_id(1)).name == "a"
        assert len(batches) == 1


async def _lone_reads_on_a_frozen_server(
    user: Any, proc: subprocess.Popen[bytes], first: int, second: int
) -> None:
    """Rows ``first`` and ``second`` of ``user`` (on one server, ``proc``, which this
    freezes) read alone: see the tests below. The backend's timeout is 0.3 s."""
    await user.insert(id=first, name="a", height=1.5)
    await user.insert(id=second, name="b", height=2.5)
    task = asyncio.current_task()
    assert task is not None
    servers.freeze(proc)
    try:
        async with asyncio.timeout(30):
            with pytest.raises(co.BackendUnavailable, match=r"did not answer within 0\.3s"):
                await user.get_by_id(first)
        assert task.cancelling() == 0
        with pytest.raises(TimeoutError) as caller:  # the caller's, not the backend's
            async with asyncio.timeout(0.05):
                await user.get_by_id(first)
        assert not isinstance(caller.value, co.BackendError)
        assert task.cancelling() == 0
        reader = asyncio.create_task(user.get_by_id(second))
        done, _ = await asyncio.wait({reader}, timeout=0.05)  # a lone read, sent
        assert not done
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
    finally:
        proc.send_signal(signal.SIGCONT)

    async def recovered() -> bool:
        try:
            return (await user.get_by_id(second)).name == "b"
        except co.BackendUnavailable:
            return False

    await eventually(recovered)
    for _ in range(5):  # no connection hands out a reply meant for another read
        assert (await user.get_by_id(first)).name == "a"
        assert (await user.get_by_id(second)).name == "b"


async def test_a_lone_model_read_on_a_frozen_server_times_out_alone(
    own_server: servers.RedisServer,
) -> None:
    """The one-read path's deadline: past the backend's timeout the read fails with
    `BackendUnavailable`; a caller's own shorter timeout (or cancellation) stays the
    caller's; neither leaves the task marked cancelled, nor a connection whose late reply
    the next read would take."""
    from acacheorm.cli._demo import define_models

    backend = RedisBackend(own_server.url, timeout=0.3, namespace="f")
    async with backend:
        user, _, _ = define_models(backend, "msgpack")
        assert own_server.proc is not None
        await _lone_reads_on_a_frozen_server(user, own_server.proc, 1, 2)


async def test_a_lone_update_whose_write_meets_a_frozen_server_has_an_unknown_outcome(
    own_server: servers.RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone update's write (its own path, not a batch) under the backend's deadline:
    sent to a server that froze after the read, it fails with `BackendUnavailable` saying
    that its outcome is unknown, leaves the task unmarked, and is not sent again; the
    server runs it once when it wakes, and no later read takes its late reply."""
    from acacheorm.cli._demo import define_models

    backend = RedisBackend(own_server.url, timeout=0.3, namespace="f")
    async with backend:
        user, _, _ = define_models(backend, "msgpack")
        await user.insert(id=1, name="a", height=1.5)
        await user.insert(id=2, name="b", height=2.5)
        await user.update(id=2, height=2.5)  # warm: the server has the write's script
        assert own_server.proc is not None
        proc = own_server.proc
        read_one = RedisBackend._read_one
        batches: list[Any] = []
        run = RedisBackend._run

        async def then_freeze(self: RedisBackend, *args: Any) -> Any:
            row = await read_one(self, *args)
            servers.freeze(proc)
            return row

        async def counting(self: RedisBackend, commands: Any, *args: Any) -> list[Any]:
            batches.append(commands)
            return await run(self, commands, *args)

        monkeypatch.setattr(RedisBackend, "_read_one", then_freeze)
        monkeypatch.setattr(RedisBackend, "_run", counting)
        task = asyncio.current_task()
        assert task is not None
        try:
            async with asyncio.timeout(30):
                with pytest.raises(co.BackendUnavailable, match=r"outcome .* is unknown"):
                    await user.update(id=1, height=2.0)
            assert task.cancelling() == 0
        finally:
            proc.send_signal(signal.SIGCONT)
        monkeypatch.undo()
        assert batches == []  # the write took the lone path

        async def applied() -> bool:
            try:
                return (await user.get_by_id(1)).height == 2.0  # type: ignore[no-any-return]
            except co.BackendUnavailable:
                return False

        await eventually(applied)
        for _ in range(5):  # no connection hands out a reply meant for another call
            assert (await user.get_by_id(2)).name == "b"
            assert (await user.update(id=2, height=3.0)).height == 3.0


async def test_a_lone_model_read_on_a_frozen_cluster_node_times_out_alone(
    redis_cluster: servers.RedisCluster | str, redis_cluster_url: str
) -> None:
    """The same on Cluster, two rows on the node frozen (well within its
    cluster-node-timeout of 2 s)."""
    if isinstance(redis_cluster, str):
        pytest.skip("freezes a node: only on the suite's own cluster")
    from acacheorm.cli._demo import define_models

    backend = RedisBackend(
        redis_cluster_url, cluster=True, namespace=unique_namespace("f"), timeout=0.3
    )
    async with backend:
        user, _, _ = define_models(backend, "msgpack")
        client = backend.client
        assert isinstance(client, RedisCluster)
        await client.initialize()

        def node_of(pk: int) -> Any:
            return client.get_node_from_key(raw(backend, user._schema.key((pk,))))

        second = next(i for i in range(2, 1000) if node_of(i).name == node_of(1).name)
        frozen = next(n for n in redis_cluster.nodes if n.port == node_of(1).port)
        assert frozen.proc is not None
        await _lone_reads_on_a_frozen_server(user, frozen.proc, 1, second)
        await backend.clear()


async def test_a_lone_model_read_on_cluster_follows_moved_and_ask(
    rc: RedisBackend, redis_cluster: servers.RedisCluster | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone model read on Cluster goes to the node its client's slot map names; a
    ``MOVED`` (the slot map learns the new owner) or an ``ASK`` reply (the read did not run)
    takes it where its row is, without the batch path."""
    if isinstance(redis_cluster, str):
        pytest.skip("moves a hash slot: only on the suite's own cluster")
    from acacheorm.cli._demo import define_models

    batches: list[Any] = []
    run = RedisBackend._run

    async def counting(self: RedisBackend, commands: Any, *args: Any) -> list[Any]:
        batches.append(commands)
        return await run(self, commands, *args)

    user, _, _ = define_models(rc, "msgpack")
    await user.insert(id=1, name="a", height=1.5)
    key = user._schema.key((1,))
    payload = await rc.get(key)
    assert payload is not None
    await rc.delete(key)  # the slot is empty: it can be given to another node
    client = rc.client
    assert isinstance(client, RedisCluster)
    mover = SlotMover(rc, key)
    target = mover.admins[mover.target.name]
    monkeypatch.setattr(RedisBackend, "_run", counting)
    try:
        await mover.give_to(mover.target)  # the client does not know yet
        await target.set(raw(rc, key), payload)
        assert (await user.get_by_id(1)).name == "a"  # MOVED, followed
        assert client.get_node_from_key(raw(rc, key)).name == mover.target.name  # learnt
        await target.delete(raw(rc, key))
        await mover.give_to(mover.owner)  # and back: the client's map is stale again
        assert await user.get_or_none(id=1) is None  # MOVED, followed: no row there
        assert client.get_node_from_key(raw(rc, key)).name == mover.owner.name
        await mover.start_migration()
        await mover.on_target("SET", raw(rc, key), payload)
        # The owner does not hold the row: it answers ASK, and the importing node has it.
        assert (await user.get_by_id(1)).name == "a"
        assert batches == []
    finally:
        with contextlib.suppress(Exception):
            await mover.on_target("DEL", raw(rc, key))
        with contextlib.suppress(Exception):
            await mover.stop_migration()
        await mover.give_to(mover.owner)
        await mover.aclose()
    assert await user.get_or_none(id=1) is None


async def test_a_lone_model_read_on_cluster_falls_back_to_redis_py_for_a_failed_node(
    rc: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the lone read's own exchange fails for want of a connection, redis-py's
    command path (with its retries: a read may be sent again) reads, as for the batch
    path's lone read."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from acacheorm.backends.redis import _cluster
    from acacheorm.cli._demo import define_models

    user, _, _ = define_models(rc, "msgpack")
    await user.insert(id=1, name="a", height=1.5)
    client = rc.client
    assert isinstance(client, RedisCluster)
    through_redis_py: list[tuple[Any, ...]] = []
    command = client.execute_command

    async def counted(*args: Any, **kwargs: Any) -> Any:
        through_redis_py.append(args)
        return await command(*args, **kwargs)

    async def unreachable(*args: Any) -> None:
        raise RedisConnectionError("refused")

    monkeypatch.setattr(client, "execute_command", counted)
    assert (await user.get_by_id(1)).name == "a"
    assert through_redis_py == []
    monkeypatch.setattr(_cluster, "lone_read", unreachable)
    assert (await user.get_by_id(1)).name == "a"
    assert through_redis_py == [("GET", raw(rc, user._schema.key((1,))))]


# -- cancellation ------------------------------------------------------------------------------


async def test_cancelled_gets_never_mix_up_replies(
    either: RedisBackend, wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = either
    # One request per get, so that cancelling a caller cuts its request on the wire (gets
    # merged by automatic batching run in a task no single caller cancels).
    monkeypatch.setattr(backend, "auto_batch", False)
    rng = random.Random(1234)
    keys = [f"c{i}" for i in range(400)]
    await backend.set_many({k: f"value of {k}".encode() * rng.randrange(1, 50) for k in keys})
    expected = dict(zip(keys, await backend.get_many(*keys), strict=True))
    cut_off = 0  # requests written whose reply was never read: cancelled mid-flight

    for _ in range(5):
        with wire.record():
            tasks = {k: asyncio.create_task(backend.get(k)) for k in keys}
            # Cancel half of them in waves, while requests go out and replies come back.
            cancelled = rng.sample(keys, len(keys) // 2)
            for wave in range(10):
                for _ in range(rng.randrange(0, 6)):
                    await asyncio.sleep(0)
                for k in cancelled[wave::10]:
                    tasks[k].cancel()
            results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        cut_off += sum(1 for what, _ in wire.events if what == "send") - sum(
            1 for what, _ in wire.events if what == "read"
        )
        for k, result in zip(tasks, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                assert k in cancelled
            else:
                assert result == expected[k], k
        # Every later get on the same backend gets its own key's value.
        later = await asyncio.gather(*(backend.get(k) for k in keys))
        assert later == [expected[k] for k in keys]
        assert await backend.get_many(*keys) == [expected[k] for k in keys]
    assert cut_off > 0  # the test did cancel requests on the wire, not only queued ones


async def test_cancelled_cluster_batches_never_mix_up_replies(
    rc: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Multi-node batches (one write per node, several replies read back) cancelled at
    random while requests go out and replies come back."""
    rng = random.Random(4321)
    # One batch per get_many, so that cancelling a caller cuts its batch on the wire.
    monkeypatch.setattr(rc, "auto_batch", False)
    keys = await keys_on_every_master(rc, per_node=20)
    values = {k: f"value of {k}".encode() * rng.randrange(1, 400) for k in keys}
    await rc.set_many(values)
    groups = [rng.sample(keys, 6) for _ in range(200)]
    dropped = 0  # connections closed by an interrupted read or write
    disconnect = AbstractConnection.disconnect

    async def counting_disconnect(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal dropped
        if self.is_connected:
            dropped += 1
        return await disconnect(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "disconnect", counting_disconnect)
    for _ in range(5):
        tasks = [asyncio.create_task(rc.get_many(*g)) for g in groups]
        cancelled = set(rng.sample(range(len(tasks)), len(tasks) // 2))
        order = sorted(cancelled)
        rng.shuffle(order)
        for wave in range(10):
            for _ in range(rng.randrange(0, 8)):
                await asyncio.sleep(0)
            for t in order[wave::10]:
                tasks[t].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for t, (group, result) in enumerate(zip(groups, results, strict=True)):
            if isinstance(result, asyncio.CancelledError):
                assert t in cancelled
            else:
                assert result == [values[k] for k in group]
        # Every later batch on the same backend gets its own keys' values.
        later = await asyncio.gather(*(rc.get_many(*g) for g in groups))
        assert later == [[values[k] for k in g] for g in groups]
    assert dropped > 0  # reads or writes were cut off on the wire, not only queued batches


@pytest.mark.parametrize("where", ["after the write", "between two reads", "connection error"])
async def test_interrupted_cluster_batch_leaves_no_reply_behind(
    rc: RedisBackend, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Whatever stops a node's reads after its write (here raised outside redis-py's own
    handlers, which close the connection themselves) closes that connection: no later
    batch can read a reply meant for this one. Each value is larger than one read from the
    socket, so that each reply is read from the connection on its own (replies already
    received are taken without a read)."""
    keys = await keys_on_every_master(rc, per_node=4)
    values = {k: f"value of {k}".encode() * 10_000 for k in keys}
    await rc.set_many(values)
    assert await rc.get_many(*keys) == [values[k] for k in keys]
    armed: dict[str, Any] = {"on": False, "conn": None, "reads": 0}
    send = AbstractConnection.send_packed_command
    read = AbstractConnection.read_response

    async def send_packed_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = await send(self, *args, **kwargs)
        if armed["on"] and armed["conn"] is None:
            armed["conn"] = self
            if where == "after the write":
                raise asyncio.CancelledError
        return result

    async def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self is armed["conn"] and armed["on"]:
            armed["reads"] += 1
            if armed["reads"] == 2:
                if where == "connection error":
                    raise aredis.ConnectionError("injected")
                raise asyncio.CancelledError
        return await read(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send_packed_command)
    monkeypatch.setattr(AbstractConnection, "read_response", read_response)
    armed["on"] = True
    expected: type[BaseException] = (
        co.BackendUnavailable if where == "connection error" else asyncio.CancelledError
    )
    with pytest.raises(expected):
        await rc.get_many(*keys)
    armed["on"] = False
    assert armed["conn"] is not None and not armed["conn"].is_connected
    for _ in range(3):
        got = await asyncio.gather(*(rc.get_many(*keys[i:], *keys[:i]) for i in range(6)))
        assert got == [[values[k] for k in keys[i:] + keys[:i]] for i in range(6)]
        assert await asyncio.gather(*(rc.get(k) for k in keys)) == [values[k] for k in keys]


async def test_cluster_batch_on_an_unknown_slot_is_unavailable_then_recovers(
    rc: RedisBackend,
) -> None:
    keys = await keys_on_every_master(rc, per_node=2)
    await rc.set_many({k: b"v" for k in keys})
    client = rc.client
    assert isinstance(client, RedisCluster)
    # The client's slot map lost a slot (a partial CLUSTER SLOTS reply, a shrinking cluster).
    del client.nodes_manager.slots_cache[client.keyslot(raw(rc, keys[0]))]
    with pytest.raises(co.BackendUnavailable):
        await rc.get_many(*keys)
    assert await rc.get_many(*keys) == [b"v"] * len(keys)  # the map was learnt again


async def test_cluster_batch_on_a_frozen_node_times_out_and_recovers(
    redis_cluster: servers.RedisCluster | str, redis_cluster_url: str
) -> None:
    if isinstance(redis_cluster, str):
        pytest.skip("freezes a node: only on the suite's own cluster")
    backend = RedisBackend(
        redis_cluster_url, cluster=True, namespace=unique_namespace("f"), timeout=0.5
    )
    async with backend:
        keys = await keys_on_every_master(backend, per_node=5)
        values = {k: f"value of {k}".encode() * 50 for k in keys}
        await backend.set_many(values)
        expected = [values[k] for k in keys]
        owner = backend.client.get_node_from_key(raw(backend, keys[0]))  # type: ignore[union-attr]
        frozen = next(n for n in redis_cluster.nodes if n.port == owner.port)
        assert frozen.proc is not None
        servers.freeze(frozen.proc)  # well within cluster-node-timeout (2 s)
        try:
            started = time.monotonic()
            async with asyncio.timeout(5):
                with pytest.raises(co.BackendUnavailable):
                    await backend.get_many(*keys)
            assert time.monotonic() - started < 0.5 + 1.0  # the timeout, plus slack
        finally:
            frozen.proc.send_signal(signal.SIGCONT)

        async def recovered() -> bool:
            try:
                return await backend.get_many(*keys) == expected
            except co.BackendUnavailable:
                return False

        await eventually(recovered)
        # The frozen node's late replies were never read by a later batch.
        for _ in range(5):
            assert await backend.get_many(*reversed(keys)) == expected[::-1]
        await backend.clear()


async def test_cluster_small_batches_reach_every_node_without_a_task_per_node(
    rc: RedisBackend, wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small batch over several masters (gathered reads, a filter's reads of its
    buckets) writes every node's request at once, then reads each node's replies in
    turn, in the caller's own task; a request too large to be written without waiting
    takes a task per node."""
    from acacheorm.backends.redis import _cluster

    keys = await keys_on_every_master(rc, per_node=4)
    values = {k: f"value of {k}".encode() for k in keys}
    await rc.set_many(values)
    assert await rc.get_many(*keys) == [values[k] for k in keys]  # pooled connections
    per_node = _cluster._per_node
    used = 0

    async def counted(calls: Any) -> Any:
        nonlocal used
        used += 1
        return await per_node(calls)

    monkeypatch.setattr(_cluster, "_per_node", counted)
    with wire.record():
        assert await rc.get_many(*keys) == [values[k] for k in keys]
    assert used == 0
    assert [what for what, _ in wire.events[:3]] == ["send"] * 3 and len(set(wire.sends)) == 3

    class Item(co.Model):
        id = co.IntegerField(primary_key=True)
        group = co.IntegerField(index=True)
        Meta = type("Meta", (), {"backend": rc, "serializer": "msgpack"})

    await Item.insert_many(*(Item(id=i, group=i % 5) for i in range(100)))
    await Item.filter(group=1)  # the scripts are loaded (no NOSCRIPT round below)
    used = 0
    assert sorted(i.id for i in await Item.filter(group=2)) == list(range(2, 100, 5))
    assert await Item.filter(group=3).count() == 20
    assert used == 0
    big = {k: b"x" * 70_000 for k in keys}  # each node's request is over 64 KiB
    await rc.set_many(big)
    assert used == 1
    assert await rc.get_many(*keys) == [big[k] for k in keys]


async def test_cluster_batch_keeps_the_replies_of_the_nodes_that_answered(
    redis_cluster: servers.RedisCluster | str, redis_cluster_url: str
) -> None:
    """A frozen master fails only its own commands of a batch at the deadline, whether its
    replies are read before or after the other masters'."""
    if isinstance(redis_cluster, str):
        pytest.skip("freezes a node: only on the suite's own cluster")
    backend = RedisBackend(
        redis_cluster_url, cluster=True, namespace=unique_namespace("f"), timeout=0.5
    )
    async with backend:
        keys = await keys_on_every_master(backend, per_node=2)
        values = {k: f"value of {k}".encode() for k in keys}
        await backend.set_many(values)
        client = backend.client
        assert isinstance(client, RedisCluster)
        owner = client.get_node_from_key(raw(backend, keys[0]))
        assert owner is not None
        frozen = next(n for n in redis_cluster.nodes if n.port == owner.port)
        on_frozen = [client.get_node_from_key(raw(backend, k)) == owner for k in keys]
        assert frozen.proc is not None
        await backend.get_many(*keys)  # every node has a pooled connection
        servers.freeze(frozen.proc)  # well within cluster-node-timeout (2 s)
        try:
            for order in (keys, keys[::-1]):  # the frozen node read first, then last
                results = await backend.execute(Batch(tuple(Get(k) for k in order)))
                for k, result in zip(order, results, strict=True):
                    if on_frozen[keys.index(k)]:
                        assert isinstance(result, co.BackendUnavailable)
                    else:
                        assert result == values[k]
        finally:
            frozen.proc.send_signal(signal.SIGCONT)

        async def recovered() -> bool:
            try:
                return await backend.get_many(*keys) == [values[k] for k in keys]
            except co.BackendUnavailable:
                return False

        await eventually(recovered)
        await backend.clear()


async def test_cluster_batches_beyond_max_connections_wait_for_a_connection(
    redis_cluster_url: str,
) -> None:
    backend = RedisBackend(
        redis_cluster_url, cluster=True, namespace=unique_namespace(), max_connections=4
    )
    async with backend:
        keys = await keys_on_every_master(backend, per_node=10)
        await backend.set_many({k: k.encode() for k in keys})
        groups = [keys[i:] + keys[:i] for i in range(len(keys))] * 10
        got = await asyncio.gather(
            *(backend.get_many(*g) for g in groups), *(backend.get(k) for k in keys)
        )
        assert got == [[k.encode() for k in g] for g in groups] + [k.encode() for k in keys]
        client = backend.client
        assert isinstance(client, RedisCluster)
        for node in client.get_primaries():
            assert 1 <= len(node._connections) <= 4  # never more than max_connections
        await backend.clear()


# -- redis-py internals: the version check and the public-pipeline fallback -----------------


@pytest.fixture
def without_internals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """redis-py as if a release had dropped an internal the backend relies on (redis-py
    itself needs the real ones, so a name it never had stands for it); the backend's own
    paths on those internals fail the test if taken."""
    from acacheorm.backends.redis import _cluster

    gone = ("redis.asyncio.cluster.ClusterNode", "dropped_internal")
    monkeypatch.setattr(_cluster, "_PRIVATE", (*_cluster._PRIVATE, gone))

    def used(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a redis-py internal was used")

    monkeypatch.setattr(_cluster, "_exchange", used)
    monkeypatch.setattr(_cluster, "_exchange_one", used)
    monkeypatch.setattr(_cluster, "_node_round_trip", used)
    monkeypatch.setattr(_cluster, "lone_read", used)
    _cluster.private_api.cache_clear()
    yield
    _cluster.private_api.cache_clear()


def test_unsupported_redis_py_version_is_detected(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    from acacheorm.backends.redis import _cluster

    _cluster.private_api.cache_clear()
    try:
        assert _cluster.private_api() is True  # the installed one is in the range
        _cluster.private_api.cache_clear()
        monkeypatch.setattr(redis, "__version__", "9.0.0")
        with caplog.at_level("WARNING", "acacheorm.backends.redis"):
            assert _cluster.private_api() is False
        assert "redis-py 9.0.0 is outside the supported range" in caplog.text
    finally:
        _cluster.private_api.cache_clear()


async def test_without_internals_a_cluster_batch_uses_the_public_pipeline(
    rc: RedisBackend, without_internals: None, caplog: pytest.LogCaptureFixture
) -> None:
    from acacheorm.backends.redis import _cluster

    with caplog.at_level("WARNING", "acacheorm.backends.redis"):
        assert _cluster.private_api() is False
    assert "has no ClusterNode.dropped_internal" in caplog.text
    keys = [f"k{i}" for i in range(30)]  # spread over many slots, so over every node
    sets = tuple(Set(k, k.encode(), 60) for k in keys)
    results = await rc.execute(
        Batch((*sets, Incr("n", 2, None), *(Get(k) for k in keys), Delete("k1"), Get("k1")))
    )
    assert results == [True] * 30 + [2] + [k.encode() for k in keys] + [True, None]
    await rc.set("text", b"x")
    [err] = await rc.execute(Batch((Incr("text", 1, None),)))
    assert isinstance(err, co.BackendError)  # an error reply still fills only its slot
    atomic = Batch((Set("{t}a", b"1", None), Incr("{t}n", 5, None), Get("{t}a")), atomic=True)
    assert await rc.execute(atomic) == [True, 5, b"1"]
    from acacheorm.cli._demo import define_models

    user, _, _ = define_models(rc, "msgpack")  # lone model reads and updates too
    await user.insert(id=1, name="a", height=1.5)
    assert (await user.update(id=1, height=2.0)).height == 2.0
    assert (await user.get_by_id(1)).height == 2.0


async def test_without_internals_a_single_connection_client_uses_a_pipeline(
    redis_url: str, without_internals: None
) -> None:
    client = aredis.Redis.from_url(redis_url, single_connection_client=True)
    try:
        backend = RedisBackend(client, namespace=unique_namespace(), auto_batch=False)
        async with backend:
            await smoke(backend)
            batch = Batch((Set("a", b"1", None), Incr("n", 3, None), Get("a")), atomic=True)
            assert await backend.execute(batch) == [True, 3, b"1"]
            await backend.clear()
    finally:
        await client.aclose()


def _indexed_model(backend: RedisBackend) -> type[co.Model]:
    class Part(co.Model):
        id = co.IntegerField(primary_key=True)
        group = co.IntegerField(index=True)
        tag = co.StringField(index=True)
        Meta = type("Meta", (), {"backend": backend, "serializer": "msgpack"})

    return Part


async def test_a_large_batch_of_index_writes_goes_out_in_parts_in_one_round_trip(
    either: RedisBackend, wire: Wire
) -> None:
    """The script calls of a large batch of index writes are written as they are built
    (the server runs the first while the client builds the next), every one before the
    first reply is read, each exactly once."""
    Part = _indexed_model(either)
    rows = [Part(id=i, group=i % 7, tag=f"t{i % 5}") for i in range(3000)]
    await Part.create(id=-1, group=-1, tag="")  # the script is loaded (no NOSCRIPT round)
    await either.client.config_resetstat()  # type: ignore[union-attr]
    with wire.record():
        await Part.insert_many(*rows)
    sends = [i for i, (what, _) in enumerate(wire.events) if what == "send"]
    reads = [i for i, (what, _) in enumerate(wire.events) if what == "read"]
    if not either._cluster:
        assert len(sends) == 3  # a script call of 1,000 rows per part
        assert not reads or max(sends) < min(reads)
        assert (await commandstats(either.client))["evalsha"] == 3
    assert await Part.count() == 3001
    assert sorted(p.id for p in await Part.filter(group=3)) == list(range(3, 3000, 7))
    assert await Part.filter(tag="t4").count() == 600


async def test_a_batch_that_fails_after_a_part_was_sent_has_an_unknown_outcome(
    rb: RedisBackend, wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script call that cannot be built once an earlier part of its batch is on the wire:
    the batch fails with BackendUnavailable saying the outcome is unknown, nothing is sent
    again, and the connection is not reused (the next call works)."""
    from acacheorm.backends.redis import _index_lua

    Part = _indexed_model(rb)
    real = _index_lua.write_argv
    built = 0

    def write_argv(cmds: Any, prefix: str) -> list[Any]:
        nonlocal built
        built += 1
        if built == 2:  # the second script call of the batch
            raise RuntimeError("planted")
        return real(cmds, prefix)

    await Part.create(id=-1, group=0, tag="")  # the script is loaded (no NOSCRIPT round)
    monkeypatch.setattr(_index_lua, "write_argv", write_argv)
    with wire.record(), pytest.raises(co.BackendUnavailable, match="outcome of the writes is"):
        await Part.insert_many(*(Part(id=i, group=1, tag="a") for i in range(3000)))
    assert len(wire.sends) == 1  # the first part only, never again
    monkeypatch.setattr(_index_lua, "write_argv", real)
    # the first part ran (the server had it before the connection closed), no more
    from tests.backends.test_conformance import eventually

    async def first_part_ran() -> bool:
        return await Part.filter(group=1).count() == 1000

    await eventually(first_part_ran)
    assert await Part.count() == 1001
    assert await rb.get("missing") is None


async def test_a_batch_of_gets_goes_straight_to_its_mgets_with_the_same_answers(
    own_server: servers.RedisServer, wire: Wire
) -> None:
    """On a standalone server a batch of several plain reads (a multi-get, the merged reads
    of a batching window) skips the namespaced copy of the batch and its planning: the same
    values, misses, wrong-type keys and failures as through ``_execute``, which a subclass
    wrapping it still sees; more than 1,000 keys take several MGETs of one round trip."""
    through_execute: list[str] = []

    class Watched(RedisBackend):
        async def _execute(self, batch: Batch) -> list[Any]:
            through_execute.append("subclass")
            return await super()._execute(batch)

    keys = [f"k:{i}" for i in range(2500)] + ["k:missing", "k:7", "h", "k:\udc80"]
    answers = []
    for kind in (RedisBackend, Watched):
        backend = kind(own_server.url, namespace="ns")
        try:
            await backend.clear()
            await backend.set_many({f"k:{i}": str(i).encode() for i in range(2500)})
            await backend.client.hset("ns:h", "f", "v")  # another type: MGET reads nil
            inner = backend._execute

            async def spy(batch: Batch, inner: Any = inner) -> list[Any]:
                through_execute.append("object")
                return await inner(batch)

            backend._execute = spy  # type: ignore[method-assign]
            through_execute.clear()
            before = await commandstats(backend.client)
            with wire.record():
                answers.append(await backend.execute(Batch(tuple(Get(k) for k in keys))))
            assert len(wire.sends) == 1
            after = await commandstats(backend.client)
            assert after["mget"] - before.get("mget", 0) == 3
            # the plain class skips _execute; a subclass wrapping it sees the batch
            assert through_execute == ([] if kind is RedisBackend else ["object", "subclass"])
        finally:
            await backend.close()
    assert answers[0] == answers[1]
    assert answers[0][:2500] == [str(i).encode() for i in range(2500)]
    assert answers[0][2500:] == [None, b"7", None, None]
    backend = RedisBackend(own_server.url, namespace="ns", timeout=2)
    try:
        await backend.get("k:1")
        own_server.stop()
        with pytest.raises(co.BackendUnavailable):
            await backend.execute(Batch((Get("k:1"), Get("k:2"))))
    finally:
        await backend.close()
