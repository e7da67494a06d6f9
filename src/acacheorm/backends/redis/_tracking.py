"""Server-assisted invalidation for a `NearCache` in front of Redis and Redis Cluster.

One dedicated RESP3 connection per server (per primary on Cluster) runs
``CLIENT TRACKING ON BCAST PREFIX <namespace>:`` and receives an ``invalidate`` push for every
key written under the namespace, by anyone, and a null one after ``FLUSHDB``/``FLUSHALL``.

Why broadcasting rather than Redis' default tracking mode (the server remembers the keys each
connection read, and redirects their invalidations to a subscriber connection): reads go out
on pooled connections (and on Cluster on connections acacheorm writes to directly); default
mode would need ``CLIENT TRACKING ON REDIRECT <id>`` on every one of them, re-sent whenever a
pool opens a connection, and a read on a connection without it would be cached with no
invalidation ever coming. Broadcasting needs nothing from the data connections, keeps no
per-key table on the server, and a read can never slip past it. Its cost is traffic: the
process hears about every write under its namespace, also to keys it does not hold (one
short push per write; ignored here). Give the backend a namespace so that it hears only
about its own keys.

Liveness: each connection is pinged every ``heartbeat`` seconds; no answer within
``heartbeat_timeout``, a closed connection, or (Cluster) a change of the set of primaries
ends the session: the near cache empties itself and serves nothing, and the channel is
opened again with backoff. Only once every connection has confirmed ``CLIENT TRACKING`` does
the near cache serve and fill again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..._exceptions import BackendError
from . import _cluster

if TYPE_CHECKING:
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.connection import AbstractConnection

    from ..near import NearCache
    from . import RedisBackend

logger = logging.getLogger("acacheorm.near")

_ids = itertools.count(1)

# Each key's value and PTTL, read atomically: an entry then expires when the row does. A
# key holding another type gets its error (WRONGTYPE, as a lone GET) in its own slot.
GET_PTTL_LUA = """\
local out = {}
for i = 1, #KEYS do
  local value = redis.pcall('GET', KEYS[i])
  if type(value) == 'table' and value.err then
    out[2 * i - 1] = value
    out[2 * i] = -2
  else
    out[2 * i - 1] = value
    out[2 * i] = redis.call('PTTL', KEYS[i])
  end
end
return out
"""


class _Push:
    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message


async def _as_push(message: Any) -> _Push:
    return _Push(message)


class _ChannelLost(Exception):
    pass


async def read_with_ttl(backend: RedisBackend, keys: list[str]) -> list[tuple[Any, float | None]]:
    """``(value, remaining seconds)`` for each full key, in one round trip (per node)."""
    from redis.crc import key_slot

    from ._wire import _CHUNK, _ONE, _encode_key, _Wire

    script = backend.__dict__.get("_near_script")
    if script is None:
        script = backend.__dict__["_near_script"] = backend.client.register_script(GET_PTTL_LUA)
    encoded = [_encode_key(k) for k in keys]
    groups: dict[int, list[int]] = {}
    if backend._cluster:
        cluster: RedisCluster = backend.client  # type: ignore[assignment]
        await cluster.initialize()
        for i, key in enumerate(encoded):
            groups.setdefault(key_slot(key), []).append(i)
    else:
        groups[0] = list(range(len(keys)))
    wires: list[Any] = []
    slots: list[int] = []
    for slot, indices in groups.items():
        for start in range(0, len(indices), _CHUNK):
            run = indices[start : start + _CHUNK]
            ks = [encoded[i] for i in run]
            wires.append(_Wire(["EVALSHA", script.sha, len(ks), *ks], run, _ONE, script=script))
            slots.append(slot)
    # On Cluster straight to the nodes (the backend's per-node path, which follows MOVED/ASK;
    # redis-py's own routing of a lone EVALSHA costs ~60 µs of Python).
    replies = await backend._send(wires, False, slots if backend._cluster else None)
    out: list[tuple[Any, float | None]] = [(None, 0.0)] * len(keys)
    for wire, reply in zip(wires, replies, strict=True):
        if isinstance(reply, Exception):
            err = BackendError(f"redis GET: {reply}")
            err.__cause__ = reply
            for i in wire.targets:
                out[i] = (err, 0.0)
            continue
        for j, i in enumerate(wire.targets):
            value, pttl = reply[2 * j], reply[2 * j + 1]
            if isinstance(value, Exception):
                err = BackendError(f"redis GET: {value}")
                err.__cause__ = value
                out[i] = (err, 0.0)
                continue
            # PTTL: -1 no expiry, -2 missing; counted from before the request was sent.
            out[i] = (value, None if pttl == -1 else max(0.0, pttl / 1000))
    return out


class RedisTracker:
    """The invalidation channel of one `RedisBackend`'s near cache (one event loop)."""

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        #: ``CLIENT SETNAME`` of the tracking connections (to find them in ``CLIENT LIST``).
        self.client_name = f"acacheorm-near-{os.getpid()}-{next(_ids)}"
        self._tracked: frozenset[str] = frozenset()  # Cluster: node names with a channel
        #: Sessions established so far (a new one after every loss).
        self.sessions = 0
        # Set when a read lands on a node without a channel (the client followed a MOVED to
        # a primary this session does not know): check the topology now, not at the next
        # heartbeat.
        self._wake: asyncio.Event | None = None
        self._generation = 0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self._generation += 1
        self._task = loop.create_task(
            self._supervise(self._generation), name=f"{self.client_name} tracking"
        )

    def _current(self, generation: int) -> bool:
        """Whether a supervisor of this generation still owns the near cache (one left
        behind in another event loop must not touch it)."""
        return generation == self._generation

    async def stop(self) -> None:
        task = self._task
        self._task = None
        self.loop = None
        if task is None or task.done():
            return
        if task.get_loop() is not asyncio.get_running_loop():
            return  # another loop's task: it cannot be awaited from here
        task.cancel()
        # wait() rather than await: a cancellation of the caller itself is not swallowed.
        await asyncio.wait([task])

    def abandon(self) -> None:
        """Give up a channel that belongs to another event loop: it is cancelled there if
        that loop still runs, and may no longer change the near cache either way."""
        task = self._task
        self._task = None
        self.loop = None
        self._generation += 1
        if task is not None and not task.done():
            loop = task.get_loop()
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(task.cancel)

    def may_fill(self, key: str) -> bool:
        """Whether a value read for ``key`` may be held: on Cluster, only if the node that
        owns its slot (as the client knows it) is one with a channel."""
        if not self._backend._cluster:
            return True
        from redis.crc import key_slot

        from ._wire import _encode_key

        cluster: RedisCluster = self._backend.client  # type: ignore[assignment]
        try:
            node = _cluster.node_of_slot(cluster, key_slot(_encode_key(key)))
        except Exception:
            return False
        if node.name in self._tracked:
            return True
        if self._wake is not None:
            self._wake.set()
        return False

    # -- sessions ---------------------------------------------------------------------------

    async def _supervise(self, generation: int) -> None:
        near = self._backend.near_cache
        assert near is not None
        try:
            await self._supervise_sessions(near, generation)
        finally:
            if self._current(generation):
                near._channel_down()

    async def _supervise_sessions(self, near: NearCache, generation: int) -> None:
        delay = 0.05
        quiet = False  # after a warning, failed attempts to reconnect log at debug level
        while True:
            sessions = self.sessions
            try:
                await self._session(generation)
            except Exception as exc:
                up = self.sessions != sessions
                logger.log(
                    logging.DEBUG if quiet and not up else logging.WARNING,
                    "near cache of %r: invalidation channel %s (%s: %s); serving nothing "
                    "locally until it is back",
                    self._backend,
                    "lost" if up else "not established",
                    type(exc).__name__,
                    exc,
                )
                quiet = True
            if not self._current(generation):
                return
            near._channel_down()
            if self.sessions != sessions:
                delay = 0.05  # it was up: start the backoff over
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _open(self, node: Any) -> AbstractConnection:
        """A RESP3 connection to ``node`` (None: the standalone server) with tracking on."""
        backend = self._backend
        if node is None:
            pool = backend.client.connection_pool  # type: ignore[union-attr]
            cls, kwargs = pool.connection_class, dict(pool.connection_kwargs)
        else:
            cls, kwargs = node.connection_class, dict(node.connection_kwargs)
        kwargs.update(protocol=3, client_name=self.client_name, socket_timeout=None)
        conn: AbstractConnection = cls(**kwargs)
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
            _cluster.set_push_handler(conn, _as_push)
            args: list[Any] = ["CLIENT", "TRACKING", "ON", "BCAST"]
            prefix = backend.full_key("")
            if prefix:
                args += ["PREFIX", prefix.encode("utf-8", "surrogatepass")]
            await conn.send_command(*args)
            reply = await self._reply(conn)
            if reply not in (b"OK", "OK"):
                raise BackendError(f"redis refused CLIENT TRACKING: {reply!r}")
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        return conn

    async def _reply(self, conn: AbstractConnection) -> Any:
        """The next reply that is not a push (pushes are handled on the way)."""
        while True:
            msg = await conn.read_response(push_request=True)
            if isinstance(msg, _Push):
                self._on_push(msg.message)
                continue
            if isinstance(msg, Exception):
                raise msg
            return msg

    def _on_push(self, message: Sequence[Any]) -> None:
        near = self._backend.near_cache
        if near is None or len(message) < 2:
            return
        keys = message[1]
        if keys is None:
            near._invalidate(None)
            return
        near._invalidate(
            k.decode("utf-8", "surrogatepass") if isinstance(k, bytes) else str(k) for k in keys
        )

    async def _read(self, conn: AbstractConnection, replies: asyncio.Queue[Any]) -> None:
        while True:
            replies.put_nowait(await self._reply(conn))

    async def _masters(self, conn: AbstractConnection) -> dict[str, tuple[str, int]]:
        """Every reachable primary of the cluster, by ``CLUSTER NODES`` on ``conn``."""
        await conn.send_command("CLUSTER", "NODES")
        return _parse_masters(await self._reply(conn))

    async def _session(self, generation: int) -> None:
        backend = self._backend
        near = backend.near_cache
        assert near is not None
        cluster: RedisCluster | None = backend.client if backend._cluster else None  # type: ignore[assignment]
        conns: dict[str, AbstractConnection] = {}
        readers: list[asyncio.Task[None]] = []
        queues: dict[str, asyncio.Queue[Any]] = {}
        first = ""
        initial: frozenset[str] = frozenset()
        try:
            async with asyncio.timeout(near.heartbeat_timeout + (backend.timeout or 0)):
                if cluster is None:
                    conns[first] = await self._open(None)
                else:
                    await _cluster.refresh_slots(cluster)
                    node = cluster.get_primaries()[0]
                    first = node.name
                    conns[first] = await self._open(node)
                    masters = await self._masters(conns[first])
                    for name, (host, port) in masters.items():
                        if name not in conns:
                            conns[name] = await self._open(self._node(cluster, host, port))
                    # (If the first node is no primary, its connection only asks for the
                    # topology; its tracking is harmless.)
                    initial = self._tracked = frozenset(masters)
            for name, conn in conns.items():
                queues[name] = asyncio.Queue()
                readers.append(asyncio.ensure_future(self._read(conn, queues[name])))
            if not self._current(generation):
                return
            near._channel_up(asyncio.get_running_loop())
            self.sessions += 1
            logger.debug("near cache of %r: invalidation channel up", backend)
            while True:
                wake = self._wake = asyncio.Event()
                woken = asyncio.ensure_future(wake.wait())
                try:
                    done, _ = await asyncio.wait(
                        [*readers, woken],
                        timeout=near.heartbeat,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    woken.cancel()
                    self._wake = None
                for task in done:
                    if task is not woken:
                        task.result()  # raises what ended the connection
                        raise _ChannelLost("tracking connection closed")
                async with asyncio.timeout(near.heartbeat_timeout):
                    for conn in conns.values():
                        await conn.send_command("PING")
                    if cluster is not None:
                        await conns[first].send_command("CLUSTER", "NODES")
                    for name in conns:
                        reply = await queues[name].get()
                        if isinstance(reply, Exception):
                            raise reply
                    if cluster is not None:
                        masters = _parse_masters(await queues[first].get())
                        if frozenset(masters) != initial:
                            raise _ChannelLost("the cluster's primaries changed")
        except TimeoutError as exc:
            raise _ChannelLost(f"no answer within {near.heartbeat_timeout}s") from exc
        finally:
            if self._current(generation):
                near._channel_down()
                self._tracked = frozenset()
            for task in readers:
                task.cancel()
            if readers:
                await asyncio.wait(readers)
            for conn in conns.values():
                await conn.disconnect(nowait=True)

    @staticmethod
    def _node(cluster: RedisCluster, host: str, port: int) -> Any:
        return _cluster.node_at(cluster, host, port, add=False)


def _parse_masters(reply: Any) -> dict[str, tuple[str, int]]:
    if isinstance(reply, bytes):
        reply = reply.decode()
    masters: dict[str, tuple[str, int]] = {}
    for line in str(reply).splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        flags = parts[2].split(",")
        if "master" not in flags or {"fail", "noaddr", "handshake"} & set(flags):
            continue
        addr = parts[1].split("@")[0]
        host, _, port = addr.rpartition(":")
        if not host or not port or port == "0":
            continue
        masters[f"{host}:{port}"] = (host, int(port))
    return masters
