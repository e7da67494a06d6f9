"""RedisBackend: Redis and Redis Cluster through redis-py's asyncio client.

How a `Batch` goes on the wire (one round trip per batch; per node, concurrently, on Cluster):

- consecutive ``Get`` commands become one ``MGET`` (per hash slot on Cluster), so an all-``Get``
  batch is a single ``MGET``; consecutive ``Set`` commands become one ``MSET`` when none has a
  TTL, otherwise one call of a small Lua script (``EVALSHA``) that ``SET … PX``\\ s every key;
- a batch that comes down to one Redis command is sent as that command, with no pipeline;
- anything else is pipelined: every command in one write on one pooled connection, the
  replies read in order (in ``MULTI``/``EXEC`` when ``batch.atomic``); the script calls of a
  large batch of index writes are built as they are sent and written in parts of about
  64 KiB, so the server runs the first while the client builds the next;
- on Cluster an atomic batch must keep every key in one hash slot (use a ``{hash tag}``),
  otherwise `AtomicityError` is raised before anything is sent; it runs in ``MULTI``/``EXEC``
  on the slot's node. A non-atomic batch of several commands is planned per hash slot, then
  each node gets all of its commands in one write on one pooled connection, every node
  concurrently, rather than through redis-py's cluster pipeline (~15 µs of Python per
  command); ``MOVED`` and ``ASK`` replies are followed there (see ``_cluster_round_trip``).

Write path for batches of ``Set`` with a TTL, measured on loopback (Redis 7.0.15, redis-py
8.1.0 with hiredis, Python 3.11, 100-byte values, median of 7 runs; µs per batch):

    keys   pipeline SET PX   MULTI SET PX   MSET + n PEXPIRE   Lua EVALSHA (kept)
       1         141              189             193                164
      10         293              294             334                155
     100       1 478            1 575           1 964                492
    1000      16 306           16 497          13 197              3 149

The script wins from two keys up (one reply to parse instead of one per key; redis-py spends
~15 µs of Python per pipelined reply), so runs of two or more ``Set`` use it and a lone ``Set``
is a plain ``SET``. Without TTLs ``MSET`` beats the script (100 keys: 302 vs 591 µs; 1000:
2 217 vs 4 655 µs), so TTL-less runs use ``MSET``. ``Incr`` with a TTL uses a script too
(``EXISTS``/``INCRBY``/``PEXPIRE`` in one atomic call): 100 in a pipeline took 2 091 µs,
against 2 938 µs for ``SET NX PX`` + ``INCRBY`` pairs (1000: 12 419 vs 29 617 µs). Runs are
cut into chunks of 1 000 keys so that no single command blocks the server for long.

Lua scripts are registered once (``register_script``) and sent as ``EVALSHA``. If the server
lost its script cache (restart, ``SCRIPT FLUSH``), the ``NOSCRIPT`` calls had no effect and are
re-sent once as ``EVAL``, after the rest of their batch. So that no other command of a batch
can tell, a script call on a key that another command of the same batch touches is sent as
``EVAL`` from the start; so are script calls inside ``MULTI``, where a ``NOSCRIPT`` would not
abort the transaction (Redis runs the other commands).

Every batch runs under ``asyncio.timeout(timeout)`` (a lone model read, `RedisBackend._read_one`,
under a timer of its own that cancels it the same way); a cancelled
or timed-out call makes redis-py drop that connection, so no later call can read a reply
meant for another.

At most once: only a lone read goes through redis-py's ``execute_command`` (when the
backend's own exchange failed for want of a connection), whose retry may send it again
after a connection error. Everything that may write is sent by this module
(see `_cluster._exchange`), never twice: redis-py's pipelines and commands re-send after a
connection error, and a write whose reply was lost may have run (an ``INCRBY`` would count
twice). Such a failure raises `BackendUnavailable` saying that the outcome is unknown.

The package: `_wire` plans a batch's wire commands and assembles the replies (no I/O);
`_cluster` is the only module that touches redis-py internals (connections, the Cluster
slot map), with a version check and a fallback to redis-py's public pipelines; `_index_lua`
holds the secondary-index scripts and `_tracking` the near cache's invalidation channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..._commands import Batch, Capabilities, Command, Get, Gets, IndexRead
from ..._exceptions import (
    AtomicityError,
    BackendError,
    BackendUnavailable,
    CacheORMError,
    ConfigurationError,
)
from ..base import (
    DEFAULT_TIMEOUT,
    Backend,
    PerLoop,
    has_writes,
    name_slot_errors,
    unknown_outcome,
)
from . import _cluster
from ._wire import (
    _CHUNK,
    _EACH,
    _IDEMPOTENT,
    _ONE,
    Planner,
    _encode_key,
    _glob_escape,
    _never_sent,
    _repeated_keys,
    _to_gets,
    _translate,
    _unavailable_types,
    _Wire,
    args_of,
    assemble,
    key_slot,
)

_JUST_GET = {Get}

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    from ..near import NearCache, _Tracker

__all__ = ["RedisBackend"]

T = TypeVar("T")
R = TypeVar("R")

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_SCAN_COUNT = 500  # keys per SCAN step and UNLINK call in clear()


def _import_redis() -> Any:
    try:
        import redis.asyncio
        import redis.asyncio.cluster
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ConfigurationError(
            "RedisBackend needs redis-py: pip install 'acacheorm[redis]'"
        ) from exc
    return redis


class RedisBackend(Backend):
    """A backend on Redis (standalone or Cluster) through ``redis.asyncio``.

    ``url_or_client`` is a URL (``redis://[[user]:[password]@]host[:port][/db]``,
    ``rediss://`` for TLS, ``unix:///path/to/redis.sock?db=0``, ``redis+cluster://host:port``
    for Redis Cluster; query options such as ``?protocol=3`` go to redis-py) or a ready
    ``redis.asyncio.Redis`` / ``redis.asyncio.cluster.RedisCluster``. A client built here is
    closed by `close`; a client you pass in is never closed by the backend, and must have
    ``decode_responses=False``.

    ``timeout`` (seconds, or None) bounds every call, the wait for a free connection included;
    running out of it raises `BackendUnavailable`. For a client built here it is also the
    connect timeout; reads and writes are left to that bound rather than to a redis-py
    ``socket_timeout`` (which costs a task per command on Python 3.11; pass
    ``socket_timeout=`` to have one anyway). ``client_options`` go to ``Redis.from_url`` /
    ``RedisCluster.from_url`` (``max_connections=``, ``retry=``, ``client_name=``, ``ssl_*``,
    …); a bad option is a `ConfigurationError` here, not at first use. A standalone client
    built here retries a failed connection once, not redis-py's ten times with backoff: a
    cache that is down should fail fast, so that callers fall back. Concurrent calls beyond
    the client's ``max_connections`` (100 per node on Cluster) wait for a connection
    instead of failing. A standalone client built here lends the backend one connection
    for good, taken by one round trip at a time without the pool's bookkeeping: one call
    fewer than ``max_connections`` runs at once, so the connections never exceed it.

    A command is never sent twice: a write whose reply was lost (the connection broke after
    it went out) raises `BackendUnavailable` saying that its outcome is unknown; only a lone
    read may be sent again after a connection error. On Cluster, a node that fails or does
    not answer within ``timeout`` fails only its own commands of a batch (their result
    slots hold the error); the other nodes' results stand.

    ``atomic`` batches run in ``MULTI``/``EXEC``: no other client sees them half done, but as
    always with Redis, a command that fails at run time (``incr`` of a non-number) does not
    undo the others; its slot holds the error.

    Example::

        backend = co.RedisBackend("redis://127.0.0.1:6379/0", namespace="app", timeout=2)
        await backend.set("greeting", b"hello", ttl=60)
        cluster = co.RedisBackend("redis+cluster://10.0.0.1:7000", namespace="app")
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        atomic_batch=True,
        native_cas=True,
        listable=True,
        indexes=True,
    )
    url_schemes: ClassVar[tuple[str, ...]] = (
        "redis",
        "rediss",
        "unix",
        "redis+cluster",
        "rediss+cluster",
    )

    def __init__(
        self,
        url_or_client: str | Redis | RedisCluster,
        *,
        cluster: bool = False,
        namespace: str = "",
        timeout: float | None = DEFAULT_TIMEOUT,
        auto_batch: bool = True,
        near_cache: NearCache | None = None,
        **client_options: Any,
    ) -> None:
        super().__init__(
            namespace=namespace, timeout=timeout, auto_batch=auto_batch, near_cache=near_cache
        )
        redis = _import_redis()
        from redis.asyncio.cluster import RedisCluster

        self._owns_client = isinstance(url_or_client, str)
        client: Redis | RedisCluster
        if isinstance(url_or_client, str):
            client = self._client_from_url(url_or_client, cluster, timeout, client_options)
        elif isinstance(url_or_client, redis.asyncio.Redis | RedisCluster):
            if client_options:
                raise TypeError(
                    "client options apply only to a client built from a URL, not to "
                    f"a given client: {sorted(client_options)}"
                )
            client = url_or_client
            if cluster and not isinstance(client, RedisCluster):
                raise ConfigurationError(
                    "cluster=True needs a redis.asyncio.cluster.RedisCluster client"
                )
        else:
            raise TypeError(
                "RedisBackend takes a redis:// URL or a redis.asyncio client, "
                f"not {type(url_or_client).__name__}"
            )
        self._cluster = isinstance(client, RedisCluster)
        if self._cluster:  # rows of an indexed model spread over buckets (hash slots)
            self.__dict__["capabilities"] = self.capabilities._replace(
                index_buckets=16, atomic_one_slot=True
            )
        if isinstance(client, RedisCluster):
            decodes = client.get_encoder().decode_responses
        else:
            decodes = client.connection_pool.connection_kwargs.get("decode_responses", False)
        if decodes:
            raise ConfigurationError(
                "RedisBackend stores bytes: its client needs decode_responses=False"
            )
        self._client = client
        self._location = self._describe(client)
        self._planner = Planner(client, self._prefix)
        # redis-py fails a command at once ("Too many connections") when the pool is used up,
        # 100 per node on Cluster by default; concurrent batches beyond it wait here instead.
        if isinstance(client, RedisCluster):
            limit = client.connection_kwargs.get("max_connections")
        else:
            limit = client.connection_pool.max_connections
        permits = limit if isinstance(limit, int) and 0 < limit < 2**31 - 1 else 0
        bounded = permits > 0
        # The pool of a standalone client built here lends one connection for good, taken
        # by one round trip at a time (`_cluster.Spare`): one batch fewer runs at once, so
        # that the batches' connections and that one never exceed the pool's bound.
        self._spare: _cluster.Spare | None = None
        if self._owns_client and not self._cluster and (not bounded or permits > 1):
            self._spare = _cluster.Spare()
            permits -= 1 if bounded else 0
        self._in_flight: asyncio.Semaphore | None = None
        if bounded:
            self._in_flight = asyncio.Semaphore(permits)
        # A client built here gets a twin per event loop (connections belong to a loop).
        self._loops: PerLoop[tuple[Redis | RedisCluster, asyncio.Semaphore | None]] | None = None
        if self._owns_client:
            assert isinstance(url_or_client, str)
            url, options = url_or_client, dict(client_options)

            def make() -> tuple[Redis | RedisCluster, asyncio.Semaphore | None]:
                twin = self._client_from_url(url, cluster, timeout, options)
                return twin, None if limit_ is None else asyncio.Semaphore(limit_)

            limit_ = permits if self._in_flight is not None else None
            self._loops = PerLoop(make, lambda pair: pair[0].aclose(), (client, self._in_flight))

    def _use_loop(self) -> None:
        """Point ``_client``/``_in_flight`` at the running loop's client."""
        if self._loops is not None:
            self._client, self._in_flight = self._loops.get()

    @staticmethod
    def _client_from_url(
        url: str, cluster: bool, timeout: float | None, options: dict[str, Any]
    ) -> Redis | RedisCluster:
        from redis.asyncio import Redis
        from redis.asyncio.cluster import RedisCluster
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialWithJitterBackoff

        scheme, sep, rest = url.partition("://")
        scheme = scheme.lower()
        if not sep or scheme not in RedisBackend.url_schemes:
            # Never echo the URL: it may hold a password.
            raise ConfigurationError(
                f"RedisBackend URL must start with one of "
                f"{', '.join(s + '://' for s in RedisBackend.url_schemes)} (got {scheme!r})"
            )
        if scheme in _CLUSTER_SCHEMES:
            cluster = True
            url = f"{_CLUSTER_SCHEMES[scheme]}://{rest}"
        if cluster and scheme == "unix":
            raise ConfigurationError("Redis Cluster does not take unix:// sockets")
        if "decode_responses" in options:
            raise ConfigurationError("RedisBackend stores bytes: do not set decode_responses")
        if "decode_responses" in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query):
            raise ConfigurationError("RedisBackend stores bytes: do not set decode_responses")
        options = dict(options)
        options.setdefault("socket_connect_timeout", timeout)
        # Reads and writes are bounded by the asyncio.timeout around every batch instead:
        # with a socket_timeout, redis-py wraps each write in asyncio.wait_for, which on
        # Python 3.11 costs a task and two loop turns per command (a get: 143 µs of CPU with
        # it, 90 µs without; raw redis-py: 100 / 84 µs).
        options.setdefault("socket_timeout", None)
        if not cluster:
            # One quick retry covers a pooled connection the server has closed; redis-py's
            # default (ten, with backoff up to 1 s) would stall every call while Redis is down.
            options.setdefault(
                "retry", Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=1)
            )
        try:
            client: Redis | RedisCluster
            if cluster:
                client = RedisCluster.from_url(url, **options)
                _cluster.check_connection_options(client)
            else:
                client = Redis.from_url(url, **options)
                pool = client.connection_pool
                pool.connection_class(**pool.connection_kwargs)
            return client
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"bad RedisBackend URL or option: {exc}") from exc
        except Exception as exc:
            err = _translate(exc, None)
            if err is None:
                raise
            raise ConfigurationError(f"bad RedisBackend configuration: {exc}") from exc

    @staticmethod
    def _describe(client: Redis | RedisCluster) -> str:
        """Where the client points, for repr: scheme, host, port, db; never credentials."""
        from redis.asyncio.cluster import RedisCluster

        if isinstance(client, RedisCluster):
            names = ",".join(_cluster.startup_node_names(client)) or "?"
            ssl = _is_ssl(client.connection_kwargs.get("connection_class"))
            return f"{'rediss' if ssl else 'redis'}+cluster://{names}"
        kwargs = client.connection_pool.connection_kwargs
        db = kwargs.get("db", 0)
        if kwargs.get("path"):
            return f"unix://{kwargs['path']}?db={db}"
        scheme = "rediss" if _is_ssl(client.connection_pool.connection_class) else "redis"
        host = kwargs.get("host", "localhost")
        if ":" in str(host):
            host = f"[{host}]"
        return f"{scheme}://{host}:{kwargs.get('port', 6379)}/{db}"

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def client(self) -> Redis | RedisCluster:
        """The underlying redis-py client (for commands acacheorm does not wrap): the
        running event loop's own client, when the backend built it from a URL."""
        try:
            self._use_loop()
        except RuntimeError:  # no running loop: the client used last
            pass
        return self._client

    async def _close(self) -> None:
        spare = self._spare
        if spare is not None:
            spare.kept = None  # closing the client (below) closes its connection
        if self._loops is not None:
            await self._loops.close()

    def __repr__(self) -> str:
        ns = f" namespace={self.namespace!r}" if self.namespace else ""
        return f"<RedisBackend {self._location}{ns}>"

    # -- errors -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _map_errors(self) -> Iterator[None]:
        try:
            yield
        except CacheORMError:
            raise
        except Exception as exc:
            err = _translate(exc, self.timeout)
            if err is None:
                raise
            raise err from exc

    # -- near cache (see near.py and _tracking.py) ------------------------------------------

    def _near_tracker(self) -> _Tracker:
        from ._tracking import RedisTracker

        return RedisTracker(self)

    async def _near_get(self, keys: list[str]) -> list[tuple[Any, float | None]]:
        from ._tracking import read_with_ttl

        with self._map_errors():
            async with asyncio.timeout(self.timeout):
                if self._in_flight is None:
                    return await read_with_ttl(self, keys)
                async with self._in_flight:
                    return await read_with_ttl(self, keys)
        raise AssertionError("unreachable")  # pragma: no cover - for type checkers

    # -- batches ------------------------------------------------------------------------

    async def execute(self, batch: Batch) -> list[Any]:
        """`Backend.execute`; on a standalone server a batch of several plain reads (`Get`:
        a multi-get, the merged reads of a batching window), without a near cache, goes
        straight to its ``MGET``s (`_run_gets`: the same answer, without the namespaced copy
        of the batch and its planning), unless a subclass wraps `_execute` (`_runs_one`:
        then it sees every batch)."""
        commands = batch.commands
        if (
            len(commands) > 1
            and self._runs_one
            and not self._cluster
            and self.near_cache is None
            and not batch.atomic
            and {*map(type, commands)} == _JUST_GET
        ):
            return name_slot_errors(commands, await self._guarded(self._run_gets, commands, False))
        return await super().execute(batch)

    async def _execute(self, batch: Batch) -> list[Any]:
        commands = batch.commands
        return await self._guarded(self._run, commands, batch.atomic and len(commands) > 1)

    async def _guarded(
        self,
        run: Callable[[tuple[Command, ...], bool, asyncio.Timeout], Awaitable[list[Any]]],
        commands: tuple[Command, ...],
        atomic: bool,
    ) -> list[Any]:
        """``run(commands, atomic, scope)`` (`_run`, `_run_gets`) on the loop's client, under
        the backend's timeout (``scope``) and its bound of batches in flight, its errors
        mapped; a lost reply to sent writes says their outcome is unknown."""
        self._use_loop()
        try:
            with self._map_errors():
                # The wait for a free connection counts towards the timeout too.
                async with asyncio.timeout(self.timeout) as scope:
                    if self._in_flight is None:
                        return await run(commands, atomic, scope)
                    async with self._in_flight:
                        return await run(commands, atomic, scope)
        except BackendUnavailable as exc:
            # Sent writes whose replies never came may have run; they are not sent again.
            if has_writes(commands) and not _never_sent(exc):
                raise unknown_outcome(exc) from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover - for type checkers

    #: A lone model read or update skips the batch layers (see `_read_one`, `_run_lone`),
    #: unless a subclass wraps `execute` or `_execute`: then it sees every command.
    _runs_one = True

    async def _read_one(self, key: str, gets: bool = False) -> Any:
        """A lone `Get` of ``key`` (without the namespace), a `Gets` with ``gets``: the
        round trip `_execute` makes for it (on Cluster, to the node owning its slot:
        `_cluster_read`), under the same deadline (a timer that cancels the read, as
        ``asyncio.timeout`` does, without its context objects), with the same result and
        errors, without a batch to plan and assemble."""
        self._use_loop()
        prefix = self._prefix
        args: list[Any] = ["GET", _encode_key(prefix + key)]
        replies = await self._bounded(self._lone_round_trip, args)
        reply = replies[0]
        if reply is None or type(reply) is bytes:
            return _to_gets(reply) if gets else reply
        results = assemble(1, [_Wire(args, (0,))], replies, self.timeout)  # an error reply
        command = Gets(prefix + key) if gets else Get(prefix + key)
        return name_slot_errors((command,), results, len(prefix))[0]

    async def _bounded(self, run: Callable[[T], Awaitable[R]], arg: T) -> R:
        """``run(arg)`` under the backend's deadline, as `_execute` bounds a batch: a timer
        that cancels it, as ``asyncio.timeout`` does (its ``uncancel()`` rule: a caller's
        own cancellation stays the caller's), without its context objects; errors mapped
        as `_map_errors` maps them (the deadline: `BackendUnavailable`)."""
        timeout = self.timeout
        try:
            if timeout is None:
                return await run(arg)
            loop = asyncio.get_running_loop()
            task = asyncio.current_task(loop)
            assert task is not None
            cancelling = task.cancelling()
            expired: list[bool] = []
            timer = loop.call_at(loop.time() + timeout, _expire, task, expired)
            try:
                return await run(arg)
            except asyncio.CancelledError as exc:
                if expired and task.uncancel() <= cancelling:
                    raise TimeoutError from exc  # ours: the deadline passed
                raise
            finally:
                timer.cancel()
        except CacheORMError:
            raise
        except Exception as exc:  # as `_map_errors` maps them
            err = _translate(exc, timeout)
            if err is None:
                raise
            raise err from exc

    async def _lone_round_trip(self, args: list[Any]) -> list[Any]:
        """`_round_trip` of one read (on Cluster, `_cluster_read`), after a free connection
        (see `_execute`)."""
        if self._cluster:
            if self._in_flight is None:
                return [await self._cluster_read(args)]
            async with self._in_flight:
                return [await self._cluster_read(args)]
        if self._in_flight is None:
            return await self._round_trip([args], False)
        async with self._in_flight:
            return await self._round_trip([args], False)

    async def _run_lone(self, command: Command) -> Any:
        """A lone ``command`` (key without the namespace): a `Get` or a `Gets` (the read of
        an update) as `_read_one`, any other as `execute` runs a batch of it (without the
        executor's layers)."""
        kind = type(command)
        if kind is Get or kind is Gets:
            return await self._read_one(command.key, kind is Gets)
        return await self._write_one(command)

    async def _write_one(self, command: Command) -> Any:
        """A lone command (key without the namespace; a write, or a read other than a get):
        the round trip `_execute` makes for it (on a standalone server its wires planned as
        `Planner.plan` plans one command, sent by `_send`; on Cluster `_execute_cluster`),
        under the same deadline as `_read_one`, with the same result and errors: a write
        whose reply is lost once it went out fails saying that its outcome is unknown, and
        is not sent again."""
        self._use_loop()
        prefix = self._prefix
        # the command with the namespace, as `Backend._prefixed` makes it
        command = tuple.__new__(type(command), (prefix + command[0], *command[1:]))
        try:
            if self._cluster:
                results = await self._bounded(self._lone_cluster, command)
            else:
                wires = self._planner.single(command, 0, False)
                replies = await self._bounded(self._lone_send, wires)
                results = assemble(1, wires, replies, self.timeout)
        except BackendUnavailable as exc:  # as `_execute` says it
            if has_writes((command,)) and not _never_sent(exc):
                raise unknown_outcome(exc) from exc
            raise
        return name_slot_errors((command,), results, len(prefix))[0]

    async def _lone_cluster(self, command: Command) -> list[Any]:
        """`_execute_cluster` of a lone command, after a free connection (see `_execute`);
        a node's part is bounded by the caller's deadline (`_bounded`), not `SCOPE`."""
        if self._in_flight is None:
            return await self._execute_cluster((command,), False)
        async with self._in_flight:
            return await self._execute_cluster((command,), False)

    async def _lone_send(self, wires: list[_Wire]) -> list[Any]:
        """`_send` of a lone command's wires, after a free connection (see `_execute`)."""
        if self._in_flight is None:
            return await self._send(wires, False)
        async with self._in_flight:
            return await self._send(wires, False)

    async def _run(
        self, commands: tuple[Command, ...], atomic: bool, scope: asyncio.Timeout
    ) -> list[Any]:
        if self._cluster:
            token = _cluster.SCOPE.set(scope)
            try:
                return await self._execute_cluster(commands, atomic)
            finally:
                _cluster.SCOPE.reset(token)
        plan = self._planner.plan
        wires = plan(commands, range(len(commands)), atomic or _repeated_keys(commands))
        replies = await self._send(wires, atomic and len(wires) > 1)
        return assemble(len(commands), wires, replies, self.timeout)

    async def _run_gets(
        self, commands: tuple[Command, ...], atomic: bool, scope: asyncio.Timeout
    ) -> list[Any]:
        """`_run` for plain reads of keys without the namespace (standalone): ``MGET``s of
        `_CHUNK` keys at most, built from the keys at once."""
        prefix = self._prefix
        # _encode_key inlined, the namespace added as each key is encoded
        keys = [(prefix + cmd[0]).encode("utf-8", "surrogatepass") for cmd in commands]
        n = len(keys)
        wires = [
            _Wire(
                ["MGET", *keys[start : start + _CHUNK]], range(start, min(n, start + _CHUNK)), _EACH
            )
            for start in range(0, n, _CHUNK)
        ]
        replies = await self._send(wires, False)
        return assemble(n, wires, replies, self.timeout)

    async def _send(
        self, wires: list[_Wire], transaction: bool, slots: list[int] | None = None
    ) -> list[Any]:
        """Send ``wires`` in one round trip (a pipeline unless there is only one).

        ``slots`` (Cluster, not a transaction) gives the hash slot of each wire: the wires go
        straight to the nodes owning them, one request per node, concurrently.
        """
        replies = await self._round_trip(args_of(wires), transaction, slots)
        return await self._no_script_again(wires, replies, slots)

    async def _no_script_again(
        self, wires: list[_Wire], replies: list[Any], slots: list[int] | None
    ) -> list[Any]:
        """``replies`` to ``wires`` (see `_send`), with the script calls answered
        ``NOSCRIPT`` sent again with the script's body."""
        from redis.exceptions import NoScriptError

        # The server lost its script cache: those calls did nothing, send them with the body.
        # This runs them after the rest of the batch, which no other command can tell: a
        # script call on a key that another command of the batch touches was sent as EVAL.
        again = [k for k, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if again:
            retried = await self._round_trip(
                [wires[k].as_eval() for k in again],
                False,
                None if slots is None else [slots[k] for k in again],
            )
            for k, reply in zip(again, retried, strict=True):
                replies[k] = reply
        return replies

    async def _round_trip(
        self, commands: Sequence[list[Any]], transaction: bool, slots: list[int] | None = None
    ) -> list[Any]:
        if len(commands) == 1 and commands[0][0] in _IDEMPOTENT:
            if slots is not None and _cluster.private_api():
                # Cluster: straight to the slot's node, packed by hiredis (redis-py's own
                # command path routes and packs in Python, a third of a lone GET's time).
                # Only when that fails for want of a node does redis-py take over below,
                # with its retries: a read may be sent again.
                unavailable = _unavailable_types()
                try:
                    replies = await _cluster.cluster_round_trip(self._client, commands, slots)  # type: ignore[arg-type]
                except unavailable:
                    pass
                else:
                    if not isinstance(replies[0], unavailable):
                        return replies
            elif slots is None:
                # A lone read (a get, a multi-get of query_many or select_related): packed
                # by hiredis, as above (redis-py packs each key in Python, most of a
                # 1,000-key MGET's CPU time), on a connection that reads its replies without
                # a 256 KiB buffer per read (see `_cluster._read_less`).
                unavailable = _unavailable_types()
                try:
                    replies = await _cluster.standalone_round_trip(
                        self._client,  # type: ignore[arg-type]
                        commands,
                        False,
                        self._spare,
                    )
                except unavailable:
                    pass
                else:
                    if not isinstance(replies[0], unavailable):
                        return replies
            return [await self._read_through_redis_py(commands[0])]
        # Anything that may write is sent by acacheorm itself, never twice.
        if slots is not None:  # every Cluster call but MULTI/EXEC passes ``slots``
            return await _cluster.cluster_round_trip(self._client, commands, slots)  # type: ignore[arg-type]
        return await self._standalone_round_trip(commands, transaction)

    async def _read_through_redis_py(self, args: list[Any]) -> Any:
        """A lone read through redis-py, whose retry after a connection error (once, for a
        client built here) may send it again: harmless for a read."""
        from redis.exceptions import ResponseError

        try:
            return await self._client.execute_command(*args)
        except ResponseError as exc:
            if isinstance(exc, _unavailable_types()):
                raise
            return exc

    async def _standalone_round_trip(
        self, commands: Sequence[list[Any]], transaction: bool
    ) -> list[Any]:
        """``commands`` in one write on one pooled connection (in ``MULTI``/``EXEC`` when
        ``transaction``); their replies in order. See `_cluster._exchange`."""
        client: Redis = self._client  # type: ignore[assignment]
        try:
            replies = await _cluster.standalone_round_trip(
                client, commands, transaction, self._spare
            )
        except _cluster.Refused as refused:
            raise BackendError(f"redis refused the atomic batch: {refused.reason}") from (
                refused.reason
            )
        unavailable = _unavailable_types()
        for reply in replies:
            if isinstance(reply, unavailable):
                raise reply
        return replies

    async def _execute_cluster(self, commands: tuple[Command, ...], atomic: bool) -> list[Any]:
        client: RedisCluster = self._client  # type: ignore[assignment]
        await client.initialize()
        if len(commands) == 1 and _cluster.private_api():
            results = await self._cluster_lone(client, commands[0])
            if results is not None:
                return results
        if not atomic and type(commands[0]) is IndexRead:
            fanned = self._planner.fan_out(commands)
            if fanned is not None:
                return await self._cluster_fan_out(client, commands, *fanned)
        if atomic:
            slots = {key_slot(_encode_key(c.key)) for c in commands}
            if len(slots) > 1:
                raise AtomicityError(
                    f"an atomic batch on Redis Cluster needs every key in one hash slot; these "
                    f"keys span {len(slots)} slots (give them a common {{hash tag}})"
                )
            wires = self._planner.plan(commands, range(len(commands)), True)
            replies = await self._multi_exec(client, slots.pop(), wires)
            return assemble(len(commands), wires, replies, self.timeout)
        # Split runs by hash slot; within a slot the batch order is kept, and commands on
        # different slots touch different keys, so reordering across slots is invisible.
        by_slot: dict[int, list[int]] = {}
        keys: list[bytes] = []
        gets = 0
        for i, cmd in enumerate(commands):
            key = cmd.key.encode("utf-8", "surrogatepass")  # _encode_key, inlined
            keys.append(key)
            slot = key_slot(key)
            indices = by_slot.get(slot)
            if indices is None:
                by_slot[slot] = [i]
            else:
                indices.append(i)
            if type(cmd) is Get:
                gets += 1
        if gets == len(commands) <= _CHUNK:
            return await self._cluster_gets(client, commands, keys, by_slot)
        wires = []
        wire_slots: list[int] = []
        inline = _repeated_keys(commands)
        for slot, indices in by_slot.items():
            if len(indices) == 1 and type(commands[indices[0]]) is Get:
                # The common case (keys spread over many slots): a lone GET, planned inline.
                wires.append(_Wire(["GET", keys[indices[0]]], indices))
                wire_slots.append(slot)
                continue
            planned = self._planner.plan(commands, indices, inline)
            wires += planned
            wire_slots += [slot] * len(planned)
        replies = await self._send(wires, False, wire_slots)
        from redis.exceptions import TryAgainError

        if TryAgainError in map(type, replies):
            wires, replies = await self._split_refused(
                commands, by_slot, wires, wire_slots, replies
            )
        return assemble(len(commands), wires, replies, self.timeout)

    async def _cluster_fan_out(
        self,
        client: RedisCluster,
        commands: tuple[Command, ...],
        calls: list[list[Any]],
        slots: list[int],
        conv: Callable[[Any], Any],
    ) -> list[Any]:
        """A filter's reads of its buckets (`Planner.fan_out`): one script call per bucket,
        grouped into one round trip per node, each reply converted by ``conv``. An error
        reply sends the replies to the general assembly (``NOSCRIPT``: sent again)."""
        replies = await _cluster.cluster_round_trip(client, calls, slots)
        results: list[Any] = []
        for reply in replies:
            if isinstance(reply, BaseException):
                break
            results.append(conv(reply))
        else:
            return results
        wires = self._planner.wires_of(calls, conv)
        replies = await self._no_script_again(wires, replies, slots)
        return assemble(len(commands), wires, replies, self.timeout)

    async def _cluster_gets(
        self,
        client: RedisCluster,
        commands: tuple[Command, ...],
        keys: list[bytes],
        by_slot: dict[int, list[int]],
    ) -> list[Any]:
        """A batch of ``Get`` alone (the commonest batch: concurrent reads merged), planned
        here rather than by the planner: one ``GET`` per hash slot holding one key, one
        ``MGET`` per slot holding several. An error reply sends the batch to the general
        assembly (and ``TRYAGAIN`` to `_split_refused`)."""
        args: list[list[Any]] = []
        for indices in by_slot.values():
            if len(indices) == 1:
                args.append(["GET", keys[indices[0]]])
            else:
                args.append(["MGET", *[keys[i] for i in indices]])
        replies = await _cluster.cluster_round_trip(client, args, list(by_slot))
        results: list[Any] = [None] * len(commands)
        for indices, reply in zip(by_slot.values(), replies, strict=True):
            if isinstance(reply, Exception):
                break
            if len(indices) == 1:
                results[indices[0]] = reply
            else:
                for i, value in zip(indices, reply, strict=True):
                    results[i] = value
        else:
            return results
        from redis.exceptions import TryAgainError

        wires = [
            _Wire(a, indices, _EACH if len(indices) > 1 else _ONE)
            for a, indices in zip(args, by_slot.values(), strict=True)
        ]
        if TryAgainError in map(type, replies):
            wires, replies = await self._split_refused(
                commands, by_slot, wires, list(by_slot), replies
            )
        return assemble(len(commands), wires, replies, self.timeout)

    async def _cluster_lone(self, client: RedisCluster, cmd: Command) -> list[Any] | None:
        """A batch of one command on Cluster, straight to its node (without the batch
        machinery: a lone ``get`` is the commonest call). None when the batch path must
        take it: it plans to more than one command, or the reply says that the command did
        not run and where to send it (``MOVED``, ``ASK``, ``NOSCRIPT``)."""
        key = _encode_key(cmd.key)
        if type(cmd) is Get:
            wires = [_Wire(["GET", key], (0,))]
        else:
            wires = self._planner.single(cmd, 0, False)
            if len(wires) != 1:
                return None
        args = wires[0].args
        unavailable = _unavailable_types()
        try:
            reply = await _cluster.lone_round_trip(client, args, key_slot(key))
        except unavailable:
            if args[0] not in _IDEMPOTENT:
                raise  # a write: never sent again (see _execute)
            # A read is, by redis-py, when its node failed (see _round_trip).
            reply = await self._read_through_redis_py(args)
        else:
            if isinstance(reply, Exception):
                from redis.exceptions import AskError, MovedError, NoScriptError

                if isinstance(reply, MovedError):
                    await _cluster.move_slot(client, reply)  # the batch path goes there
                    return None
                if isinstance(reply, AskError | NoScriptError):
                    return None
                if isinstance(reply, unavailable):  # CLUSTERDOWN: the slot map is stale
                    _cluster.relearn_slots(client)
                    if args[0] in _IDEMPOTENT:
                        reply = await self._read_through_redis_py(args)
        return assemble(1, wires, [reply], self.timeout)

    async def _cluster_read(self, args: list[Any]) -> Any:
        """The reply to a lone read on Cluster (`_read_one`): what the batch path answers
        for it (`_execute_cluster`, `_cluster_lone`), sent by `_cluster.lone_read`. A node
        that fails leaves the read to redis-py (with its retries: a read may be sent
        again); after ``MOVED`` (the slot map learns the new owner) or ``ASK`` the read did
        not run, and goes where the batch path sends it (`_cluster.cluster_round_trip`)."""
        client: RedisCluster = self._client  # type: ignore[assignment]
        slot = key_slot(args[1])
        if not _cluster.private_api():
            return (await _cluster.cluster_round_trip(client, [args], [slot]))[0]
        unavailable = _unavailable_types()
        try:
            reply = await _cluster.lone_read(client, args, slot)
        except unavailable:
            return await self._read_through_redis_py(args)
        if isinstance(reply, Exception):
            from redis.exceptions import AskError, MovedError

            if isinstance(reply, MovedError):
                await _cluster.move_slot(client, reply)
                return (await _cluster.cluster_round_trip(client, [args], [slot]))[0]
            if isinstance(reply, AskError):
                return (await _cluster.cluster_round_trip(client, [args], [slot]))[0]
            if isinstance(reply, unavailable):  # CLUSTERDOWN: the slot map is stale
                _cluster.relearn_slots(client)
                return await self._read_through_redis_py(args)
        return reply

    async def _split_refused(
        self,
        commands: tuple[Command, ...],
        by_slot: dict[int, list[int]],
        wires: list[_Wire],
        wire_slots: list[int],
        replies: list[Any],
    ) -> tuple[list[_Wire], list[Any]]:
        """Send again, key by key, the multi-key commands (MGET, MSET, set-many) refused with
        TRYAGAIN: their slot is migrating and their keys are on two nodes for now.

        They did not run, but the commands after them in the batch did; so one is split only
        if no later command of its slot touches one of its keys (its reply would no longer
        be what the batch order says). Otherwise its slots keep the TRYAGAIN error.
        """
        from redis.exceptions import TryAgainError

        kept_wires: list[_Wire] = []
        kept_replies: list[Any] = []
        singles: list[_Wire] = []
        single_slots: list[int] = []
        for wire, slot, reply in zip(wires, wire_slots, replies, strict=True):
            targets = wire.targets
            if type(reply) is TryAgainError and len(targets) > 1:
                keys = {commands[i].key for i in targets}
                last = max(targets)
                if not any(i > last and commands[i].key in keys for i in by_slot[slot]):
                    for i in targets:
                        planned = self._planner.single(commands[i], i, False)
                        singles += planned
                        single_slots += [slot] * len(planned)
                    continue
            kept_wires.append(wire)
            kept_replies.append(reply)
        if singles:
            # Single-key commands, never TRYAGAIN (nor script calls: nothing for NOSCRIPT).
            kept_wires += singles
            kept_replies += await _cluster.cluster_round_trip(
                self._client,  # type: ignore[arg-type]
                [w.args for w in singles],
                single_slots,
            )
        return kept_wires, kept_replies

    async def _multi_exec(self, client: RedisCluster, slot: int, wires: list[_Wire]) -> list[Any]:
        """MULTI/EXEC on the node owning ``slot``, on one of its pooled connections.

        redis-py's asyncio cluster transactions (``pipeline(transaction=True)``) queue every
        command through a thread running its own event loop (~0.7 ms per command in 8.1), so
        this sends the transaction itself, as redis-py's TransactionStrategy does on the wire.
        """
        from redis.exceptions import MovedError

        if len(wires) == 1:
            return await self._send(wires, False, [slot])
        try:
            return await _cluster.multi_exec_on(client, slot, [w.args for w in wires])
        except _cluster.Refused as refused:
            if not isinstance(refused.reason, MovedError):
                raise BackendError(f"redis refused the atomic batch: {refused.reason}") from (
                    refused.reason
                )
            # The slot moved (resharding, failover) and nothing ran: learn where, as redis-py
            # does for other commands, and try once more.
            await _cluster.move_slot(client, refused.reason)
        try:
            return await _cluster.multi_exec_on(client, slot, [w.args for w in wires])
        except _cluster.Refused as refused:
            raise BackendError(f"redis refused the atomic batch: {refused.reason}") from (
                refused.reason
            )

    async def _clear(self) -> None:
        self._use_loop()
        client = self._client
        if not self._prefix:
            with self._map_errors():
                async with asyncio.timeout(self.timeout):
                    if self._cluster:
                        cluster: RedisCluster = client  # type: ignore[assignment]
                        await cluster.initialize()
                        await cluster.execute_command(
                            "FLUSHDB", target_nodes=cluster.get_primaries()
                        )
                    else:
                        await client.execute_command("FLUSHDB")
            return
        pattern = _glob_escape(_encode_key(self._prefix)) + b"*"
        if not self._cluster:
            await self._clear_node(None, pattern)
            return
        cluster = client  # type: ignore[assignment]
        with self._map_errors():
            async with asyncio.timeout(self.timeout):
                await cluster.initialize()
        await asyncio.gather(*(self._clear_node(n, pattern) for n in cluster.get_primaries()))

    async def _clear_node(self, node: ClusterNode | None, pattern: bytes) -> None:
        """SCAN one server (one Cluster primary) for ``pattern`` and UNLINK what it finds."""
        cursor = 0
        while True:
            cursor, keys = await self._scan_step(node, cursor, pattern, _SCAN_COUNT)
            if keys:
                with self._map_errors():
                    async with asyncio.timeout(self.timeout):
                        # On Cluster, unlink() splits the keys by slot itself.
                        await self._client.unlink(*keys)
            if not cursor:
                return

    async def _scan_step(
        self, node: ClusterNode | None, cursor: int, pattern: bytes, count: int
    ) -> tuple[int, list[bytes]]:
        """One SCAN call; the timeout bounds each step, not a whole walk of the keyspace."""
        with self._map_errors():
            async with asyncio.timeout(self.timeout):
                reply: Any
                if node is None:
                    reply = await self._client.scan(cursor, match=pattern, count=count)
                    return int(reply[0]), list(reply[1])
                reply = await self._client.scan(
                    cursor, match=pattern, count=count, target_nodes=node
                )
                return int(reply[0][node.name]), list(reply[1])
        raise AssertionError("unreachable")  # pragma: no cover - for type checkers

    async def scan(self, prefix: str = "", count: int = 500) -> AsyncIterator[str]:
        """Every key starting with ``prefix`` (without the namespace), by ``SCAN MATCH``.

        On Cluster every primary is scanned in turn. Redis may return a key twice while it
        resizes a table, so the keys seen are remembered (memory grows with the keyspace);
        keys that are not UTF-8 (written by something else) cannot be read back by `get`
        and are skipped. ``count`` is the ``COUNT`` hint of each ``SCAN``.

        Example::

            async for key in backend.scan("user:"):
                print(key)
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive int, not {count!r}")
        self._use_loop()
        pattern = _glob_escape(_encode_key(self._prefix + prefix)) + b"*"
        cut = len(_encode_key(self._prefix))
        nodes: list[ClusterNode | None] = [None]
        if self._cluster:
            cluster: RedisCluster = self._client  # type: ignore[assignment]
            with self._map_errors():
                async with asyncio.timeout(self.timeout):
                    await cluster.initialize()
            nodes = list(cluster.get_primaries())
        seen: set[bytes] = set()
        for node in nodes:
            cursor = 0
            while True:
                cursor, keys = await self._scan_step(node, cursor, pattern, count)
                for raw in keys:
                    if raw in seen:
                        continue
                    seen.add(raw)
                    try:
                        key = raw[cut:].decode("utf-8", "surrogatepass")
                    except UnicodeDecodeError:
                        continue
                    yield key
                if not cursor:
                    break


def _expire(task: asyncio.Task[Any], expired: list[bool]) -> None:
    """The deadline timer of `RedisBackend._read_one`: cancel the read, saying why."""
    expired.append(True)
    task.cancel()


def _is_ssl(connection_class: Any) -> bool:
    return isinstance(connection_class, type) and "SSL" in connection_class.__name__
