"""RedisBackend: Redis and Redis Cluster through redis-py's asyncio client.

How a `Batch` goes on the wire (one round trip per batch; per node, concurrently, on Cluster):

- consecutive ``Get`` commands become one ``MGET`` (per hash slot on Cluster), so an all-``Get``
  batch is a single ``MGET``; consecutive ``Set`` commands become one ``MSET`` when none has a
  TTL, otherwise one call of a small Lua script (``EVALSHA``) that ``SET … PX``\\ s every key;
- a batch that comes down to one Redis command is sent as that command, with no pipeline;
- anything else is pipelined: every command in one write on one pooled connection, the
  replies read in order (in ``MULTI``/``EXEC`` when ``batch.atomic``);
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

Every batch runs under ``asyncio.timeout(timeout)``; a cancelled or timed-out call makes
redis-py drop that connection, so no later call can read a reply meant for another.

At most once: only a lone read goes through redis-py's ``execute_command``, whose retry may
send it again after a connection error. Everything that may write is sent by this module
(see `_exchange`), never twice: redis-py's pipelines and commands re-send after a
connection error, and a write whose reply was lost may have run (an ``INCRBY`` would count
twice). Such a failure raises `BackendUnavailable` saying that the outcome is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import math
import urllib.parse
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, ClassVar

from .._commands import (
    KEEP_TTL,
    MISSING,
    Add,
    Batch,
    Capabilities,
    Cas,
    Command,
    Delete,
    Get,
    Gets,
    Has,
    Incr,
    IndexedWrite,
    IndexRead,
    Replace,
    Set,
    Touch,
    Ttl,
)
from .._exceptions import (
    AtomicityError,
    BackendError,
    BackendUnavailable,
    CacheORMError,
    ConfigurationError,
)
from . import _index_lua
from .base import DEFAULT_TIMEOUT, Backend, PerLoop, has_writes, unknown_outcome

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.commands.core import AsyncScript

    from .near import NearCache, _Tracker

__all__ = ["RedisBackend"]

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_CHUNK = 1000  # keys per MGET / MSET / set-many script call
_REDIRECTS = 16  # rounds of MOVED/ASK followed in a Cluster batch (redis-py's request TTL)
_SCAN_COUNT = 500  # keys per SCAN step and UNLINK call in clear()
_GLOB_SPECIAL = frozenset(b"*?[]\\")
#: Wire commands that only read: the only ones a client may send again after a lost reply.
_IDEMPOTENT = frozenset({"GET", "MGET", "EXISTS"})
#: The deadline of the running Cluster batch: each node's part is bounded by it on its own,
#: so a node that does not answer fails only its own commands.
_SCOPE: contextvars.ContextVar[asyncio.Timeout | None] = contextvars.ContextVar(
    "acacheorm_redis_scope", default=None
)

# KEYS[i] gets ARGV[2i-1]; ARGV[2i] is its PX in milliseconds, "0" for no expiry.
_SET_MANY_LUA = """\
for i = 1, #KEYS do
  local px = ARGV[2 * i]
  if px == '0' then
    redis.call('SET', KEYS[i], ARGV[2 * i - 1])
  else
    redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'PX', px)
  end
end
return #KEYS
"""

# Write ARGV[2] only if the key still holds ARGV[1] (the value read by Gets). ARGV[3] is
# "K" (keep the remaining TTL), "N" (no expiry) or a PX in milliseconds.
_CAS_LUA = """\
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[3] == 'K' then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
elseif ARGV[3] == 'N' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""

# INCRBY ARGV[1]; the TTL (PX ARGV[2]) applies only if this call created the key.
_INCR_TTL_LUA = """\
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""

#: A reply slot not (yet) filled: None is a reply (a missing key).
_NO_REPLY: Any = object()

# How a wire command's reply fills the batch's result slots.
_ONE = 0  # one slot: conv(reply)
_EACH = 1  # MGET: one slot per element of the reply
_ALL_TRUE = 2  # MSET / set-many script: True in every slot
_IGNORE = 3  # a helper command (PERSIST after EXISTS): no slot of its own
_EACH_CONV = 4  # one slot per element of the reply: conv(element)


def _identity(reply: Any) -> Any:
    return reply


def _to_bool(reply: Any) -> bool:
    return bool(reply)


def _to_int(reply: Any) -> int:
    return int(reply)


def _to_ttl(reply: Any) -> Any:
    # PTTL: -2 for a missing key, -1 for a key without expiry, else milliseconds left.
    ms = int(reply)
    if ms == -2:
        return MISSING
    return None if ms < 0 else ms / 1000


def _to_gets(reply: Any) -> tuple[bytes, bytes] | None:
    # The token is the value itself: the Cas script compares it with what is stored.
    return None if reply is None else (reply, reply)


class _Refused(Exception):
    """The server refused a MULTI/EXEC as a whole (EXECABORT); ``reason`` says why."""

    def __init__(self, reason: Exception) -> None:
        super().__init__(str(reason))
        self.reason = reason


class _Wire:
    """One Redis command of a batch and the result slots its reply fills."""

    __slots__ = ("args", "conv", "mode", "script", "targets")

    def __init__(
        self,
        args: list[Any],
        targets: Sequence[int],
        mode: int = _ONE,
        conv: Callable[[Any], Any] = _identity,
        script: AsyncScript | None = None,
    ) -> None:
        self.args = args
        self.targets = targets
        self.mode = mode
        self.conv = conv
        self.script = script

    def as_eval(self) -> list[Any]:
        """The same script call with its body (``EVAL``) instead of its digest."""
        assert self.script is not None
        return ["EVAL", self.script.script, *self.args[2:]]


def _px(ttl: float) -> int:
    # Milliseconds, rounded up (a TTL never gets shorter); round() first so that binary
    # noise such as 1.1 * 1000 == 1100.0000000000002 does not add a millisecond.
    # At least 1: PX 0 is an error for SET, a delete for PEXPIRE and "no expiry" in the
    # set-many script.
    return max(1, math.ceil(round(ttl * 1000, 6)))


def _encode_key(key: str) -> bytes:
    # surrogatepass: every Python str maps to distinct bytes, even lone surrogates.
    return key.encode("utf-8", "surrogatepass")


def _repeated_keys(commands: Sequence[Command]) -> frozenset[int]:
    """Indices of the commands whose key another command of the batch touches too."""
    if len(commands) < 2:
        return frozenset()
    first: dict[str, int] = {}
    repeated: set[int] = set()
    for i, cmd in enumerate(commands):
        j = first.setdefault(cmd.key, i)
        if j != i:
            repeated.add(i)
            repeated.add(j)
    return frozenset(repeated)


def _glob_escape(raw: bytes) -> bytes:
    out = bytearray()
    for byte in raw:
        if byte in _GLOB_SPECIAL:
            out.append(0x5C)  # backslash
        out.append(byte)
    return bytes(out)


def _import_redis() -> Any:
    try:
        import redis.asyncio
        import redis.asyncio.cluster
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ConfigurationError(
            "RedisBackend needs redis-py: pip install 'acacheorm[redis]'"
        ) from exc
    return redis


@functools.cache
def _packer() -> Callable[[tuple[Any, ...]], bytes] | None:
    """hiredis' C ``pack_command``, or None without hiredis.

    redis-py's asyncio connections pack in Python (~1.8 ms for 1,000 GETs, against 0.24 ms).
    Every argument a wire carries is bytes, an int or an ASCII str, which both pack alike.
    """
    try:
        from hiredis import pack_command
    except ImportError:  # pragma: no cover - hiredis comes with the redis extra
        return None
    return pack_command


@functools.cache
def _unavailable_types() -> tuple[type[BaseException], ...]:
    from redis import exceptions as rx

    return (
        rx.ConnectionError,
        rx.TimeoutError,
        rx.ClusterDownError,
        rx.SlotNotCoveredError,
        TimeoutError,
        OSError,
    )


def _translate(exc: BaseException, timeout: float | None) -> BackendError | None:
    """The acacheorm error for a driver/OS error, or None if ``exc`` is not one."""
    from redis import exceptions as rx

    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
        # Not "unavailable": retrying or falling back silently would hide a bad config.
        return BackendError(f"redis refused the credentials: {exc}")
    if isinstance(exc, TimeoutError) and not isinstance(exc, rx.RedisError):
        return BackendUnavailable(f"redis did not answer within {timeout}s")
    cause: BaseException | None = exc
    for _ in range(4):  # "Redis Cluster cannot be connected" is raised from a ConnectionError
        if isinstance(cause, _unavailable_types()):
            return BackendUnavailable(f"redis is unavailable: {str(exc) or type(exc).__name__}")
        cause = cause.__cause__ if cause is not None else None
    if isinstance(exc, rx.RedisError | rx.RedisClusterException):
        return BackendError(f"redis error: {exc}")
    return None


async def _exchange(conn: Any, commands: Sequence[Sequence[Any]], transaction: bool) -> list[Any]:
    """Send ``commands`` on ``conn`` in one write and read their replies, an error reply as
    its exception; in ``MULTI``/``EXEC`` when ``transaction`` (`_Refused` when the server
    aborts it: then nothing ran).

    Nothing is ever sent twice: a connection lost once the write began raises, and the
    caller reports that the outcome is unknown (redis-py's own pipelines and commands retry
    after a connection error, re-sending writes that may have run). Whatever interrupts the
    reads leaves the connection closed, never back in the pool with replies still to come.
    """
    from redis.exceptions import ExecAbortError, ResponseError

    wanted = [("MULTI",), *commands, ("EXEC",)] if transaction else commands
    pack = _packer()
    if pack is None:  # pragma: no cover - hiredis comes with the redis extra
        packed = conn.pack_commands(wanted)
    else:
        packed = [pack(tuple(args)) for args in wanted]
    unread = len(wanted)
    read = conn.read_response
    try:
        await conn.send_packed_command(packed)
        if not transaction:
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await read())
                except ResponseError as exc:
                    replies.append(exc)
                unread -= 1
            return replies
        await read()  # +OK for MULTI
        unread -= 1
        queued: list[ResponseError] = []
        for _ in commands:
            try:
                await read()  # +QUEUED
            except ResponseError as exc:
                queued.append(exc)
            unread -= 1
        try:
            reply = await read()
        except ExecAbortError as exc:
            unread = 0
            # Nothing ran; the reason is why a command could not be queued (MOVED, OOM…).
            raise _Refused(queued[0] if queued else exc) from exc
        unread = 0
    except BaseException:
        if unread:
            await conn.disconnect(nowait=True)
        raise
    if not isinstance(reply, list) or len(reply) != len(commands):
        raise BackendError(f"redis EXEC gave an unexpected reply: {reply!r}")
    return reply


def _never_sent(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) says no connection could be made: nothing was sent."""
    cause: BaseException | None = exc
    for _ in range(4):
        if cause is None:
            return False
        if isinstance(cause, ConnectionRefusedError) or " connecting to " in str(cause):
            return True
        cause = cause.__cause__
    return False


def _slot_error(wire: _Wire, reply: Exception, timeout: float | None) -> BackendError:
    """The error for the result slots of ``wire`` whose reply is ``reply``."""
    from redis.exceptions import ResponseError

    if isinstance(reply, BackendError):
        return reply
    err: BackendError
    if isinstance(reply, _unavailable_types()):
        if isinstance(reply, ResponseError):  # CLUSTERDOWN, ...: the command did not run
            err = BackendUnavailable(f"redis {wire.args[0]}: {reply}")
        else:  # its node failed (connection lost, no answer in time)
            err = _translate(reply, timeout) or BackendUnavailable(str(reply))
            if wire.args[0] not in _IDEMPOTENT and not _never_sent(reply):
                err = unknown_outcome(err)
    else:
        err = BackendError(f"redis {wire.args[0]}: {reply}")
    err.__cause__ = reply
    return err


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
    instead of failing.

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
        self._set_many = client.register_script(_SET_MANY_LUA)
        self._cas = client.register_script(_CAS_LUA)
        self._incr_ttl = client.register_script(_INCR_TTL_LUA)
        self._index_write = client.register_script(_index_lua.WRITE_LUA)
        self._index_read = client.register_script(_index_lua.READ_LUA)
        # redis-py fails a command at once ("Too many connections") when the pool is used up,
        # 100 per node on Cluster by default; concurrent batches beyond it wait here instead.
        if isinstance(client, RedisCluster):
            limit = client.connection_kwargs.get("max_connections")
        else:
            limit = client.connection_pool.max_connections
        self._in_flight: asyncio.Semaphore | None = None
        if isinstance(limit, int) and 0 < limit < 2**31 - 1:
            self._in_flight = asyncio.Semaphore(limit)
        # A client built here gets a twin per event loop (connections belong to a loop).
        self._loops: PerLoop[tuple[Redis | RedisCluster, asyncio.Semaphore | None]] | None = None
        if self._owns_client:
            assert isinstance(url_or_client, str)
            url, options = url_or_client, dict(client_options)

            def make() -> tuple[Redis | RedisCluster, asyncio.Semaphore | None]:
                twin = self._client_from_url(url, cluster, timeout, options)
                return twin, None if limit_ is None else asyncio.Semaphore(limit_)

            limit_ = limit if self._in_flight is not None else None
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
                # Build (without connecting) what each connection will be built from, so
                # that a bad option (protocol=9, ssl_cert_reqs=bogus) fails here, not as
                # an unavailable server at first use.
                for node in client.nodes_manager.startup_nodes.values():
                    node.connection_class(**node.connection_kwargs)
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
            names = ",".join(sorted(client.nodes_manager.startup_nodes)) or "?"
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

    async def _execute(self, batch: Batch) -> list[Any]:
        self._use_loop()
        commands = batch.commands
        atomic = batch.atomic and len(commands) > 1
        try:
            with self._map_errors():
                # The wait for a free connection counts towards the timeout too.
                async with asyncio.timeout(self.timeout) as scope:
                    if self._in_flight is None:
                        return await self._run(commands, atomic, scope)
                    async with self._in_flight:
                        return await self._run(commands, atomic, scope)
        except BackendUnavailable as exc:
            # Sent writes whose replies never came may have run; they are not sent again.
            if has_writes(commands) and not _never_sent(exc):
                raise unknown_outcome(exc) from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover - for type checkers

    async def _run(
        self, commands: tuple[Command, ...], atomic: bool, scope: asyncio.Timeout
    ) -> list[Any]:
        if self._cluster:
            token = _SCOPE.set(scope)
            try:
                return await self._execute_cluster(commands, atomic)
            finally:
                _SCOPE.reset(token)
        wires = self._plan(commands, range(len(commands)), atomic or _repeated_keys(commands))
        replies = await self._send(wires, atomic and len(wires) > 1)
        return self._assemble(len(commands), wires, replies)

    def _plan(
        self,
        commands: Sequence[Command],
        indices: Sequence[int],
        inline: bool | AbstractSet[int],
    ) -> list[_Wire]:
        """Wire commands for ``commands[i] for i in indices`` (on Cluster: one hash slot).

        ``inline`` says which script calls carry the script body (``EVAL``) rather than its
        digest: all of them (True, for MULTI), or those of the commands at these indices.
        """
        wires: list[_Wire] = []
        n = len(indices)
        pos = 0
        while pos < n:
            i = indices[pos]
            cmd = commands[i]
            kind = type(cmd)
            if kind is Get or kind is Set or kind is IndexedWrite:
                end = pos + 1
                while end < n and type(commands[indices[end]]) is kind:
                    end += 1
                if end - pos > 1:
                    for start in range(pos, end, _CHUNK):
                        run = indices[start : min(end, start + _CHUNK)]
                        wires.append(
                            self._mget(commands, run)
                            if kind is Get
                            else self._mset(commands, run, inline)
                            if kind is Set
                            else self._index_writes(commands, run, inline)
                        )
                    pos = end
                    continue
            wires.extend(self._single(cmd, i, inline))
            pos += 1
        return wires

    @staticmethod
    def _mget(commands: Sequence[Command], run: Sequence[int]) -> _Wire:
        return _Wire(["MGET", *(_encode_key(commands[i].key) for i in run)], run, _EACH)

    def _mset(
        self, commands: Sequence[Command], run: Sequence[int], inline: bool | AbstractSet[int]
    ) -> _Wire:
        keys: list[bytes] = []
        argv: list[Any] = []
        with_ttl = False
        for i in run:
            cmd = commands[i]
            assert isinstance(cmd, Set)
            keys.append(_encode_key(cmd.key))
            if cmd.ttl is None:
                argv += (cmd.value, 0)
            else:
                argv += (cmd.value, _px(cmd.ttl))
                with_ttl = True
        if not with_ttl:
            args: list[Any] = ["MSET"]
            for key, value in zip(keys, argv[::2], strict=True):
                args += (key, value)
            return _Wire(args, run, _ALL_TRUE)
        return self._script_wire(self._set_many, keys, argv, run, _ALL_TRUE, inline)

    def _single(self, cmd: Command, i: int, inline: bool | AbstractSet[int]) -> list[_Wire]:
        key = _encode_key(cmd.key)
        slot = (i,)
        if isinstance(cmd, Get):
            return [_Wire(["GET", key], slot)]
        if isinstance(cmd, Set | Add | Replace):
            args: list[Any] = ["SET", key, cmd.value]
            if isinstance(cmd, Add):
                args.append("NX")
            elif isinstance(cmd, Replace):
                args.append("XX")
            if cmd.ttl is KEEP_TTL:
                args.append("KEEPTTL")
            elif cmd.ttl is not None:
                args += ("PX", _px(cmd.ttl))
            return [_Wire(args, slot, conv=_to_bool)]
        if isinstance(cmd, Gets):
            return [_Wire(["GET", key], slot, conv=_to_gets)]
        if isinstance(cmd, Has):
            return [_Wire(["EXISTS", key], slot, conv=_to_bool)]
        if isinstance(cmd, Delete):
            return [_Wire(["UNLINK", key], slot, conv=_to_bool)]
        if isinstance(cmd, Incr):
            if cmd.ttl is None:
                return [_Wire(["INCRBY", key, cmd.delta], slot, conv=_to_int)]
            argv: list[Any] = [cmd.delta, _px(cmd.ttl)]
            return [self._script_wire(self._incr_ttl, [key], argv, slot, _ONE, inline, _to_int)]
        if isinstance(cmd, Touch):
            if cmd.ttl is None:
                # PERSIST answers 0 for a key without a TTL too: EXISTS says whether it was there.
                return [
                    _Wire(["EXISTS", key], slot, conv=_to_bool),
                    _Wire(["PERSIST", key], (), _IGNORE),
                ]
            return [_Wire(["PEXPIRE", key, _px(cmd.ttl)], slot, conv=_to_bool)]
        if isinstance(cmd, Ttl):
            return [_Wire(["PTTL", key], slot, conv=_to_ttl)]
        if isinstance(cmd, Cas):
            if not isinstance(cmd.token, bytes):
                raise TypeError(f"a Redis CAS token is the bytes read by Gets, not {cmd.token!r}")
            ttl = cmd.ttl
            mode: Any = "K" if ttl is KEEP_TTL else "N" if ttl is None else _px(ttl)
            argv = [cmd.token, cmd.value, mode]
            return [self._script_wire(self._cas, [key], argv, slot, _ONE, inline, _to_bool)]
        if isinstance(cmd, IndexedWrite):
            return [self._index_writes([cmd], [0], inline, slot)]
        if isinstance(cmd, IndexRead):
            argv = _index_lua.read_args(cmd)
            conv = _index_lua.read_result(cmd, len(self._prefix))
            return [self._script_wire(self._index_read, [key], argv, slot, _ONE, inline, conv)]
        raise TypeError(f"unknown command {cmd!r}")  # pragma: no cover - closed union

    def _index_writes(
        self,
        commands: Sequence[Command],
        run: Sequence[int],
        inline: bool | AbstractSet[int],
        targets: Sequence[int] | None = None,
    ) -> _Wire:
        """Rows of indexed models (one slot): one call of the index write script."""
        keys: list[bytes] = []
        argv: list[Any] = []
        for i in run:
            cmd = commands[i]
            assert isinstance(cmd, IndexedWrite)
            keys.append(_encode_key(cmd.key))
            argv += _index_lua.write_args(cmd, self._prefix)
        return self._script_wire(
            self._index_write,
            keys,
            argv,
            run if targets is None else targets,
            _EACH_CONV,
            inline,
            _index_lua.write_result,
        )

    @staticmethod
    def _script_wire(
        script: AsyncScript,
        keys: list[bytes],
        argv: list[Any],
        targets: Sequence[int],
        mode: int,
        inline: bool | AbstractSet[int],
        conv: Callable[[Any], Any] = _identity,
    ) -> _Wire:
        wire = _Wire(["EVALSHA", script.sha, len(keys), *keys, *argv], targets, mode, conv, script)
        if inline is True or (inline and not inline.isdisjoint(targets)):
            wire.args = wire.as_eval()
        return wire

    async def _send(
        self, wires: list[_Wire], transaction: bool, slots: list[int] | None = None
    ) -> list[Any]:
        """Send ``wires`` in one round trip (a pipeline unless there is only one).

        ``slots`` (Cluster, not a transaction) gives the hash slot of each wire: the wires go
        straight to the nodes owning them, one request per node, concurrently.
        """
        replies = await self._round_trip([w.args for w in wires], transaction, slots)
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
        self, commands: list[list[Any]], transaction: bool, slots: list[int] | None = None
    ) -> list[Any]:
        if len(commands) == 1 and commands[0][0] in _IDEMPOTENT:
            # A lone read goes through redis-py, whose retry after a connection error (once,
            # for a client built here) may send it again: harmless for a read.
            from redis.exceptions import ResponseError

            try:
                return [await self._client.execute_command(*commands[0])]
            except ResponseError as exc:
                if isinstance(exc, _unavailable_types()):
                    raise
                return [exc]
        # Anything that may write is sent by acacheorm itself, never twice.
        if slots is not None:  # every Cluster call but MULTI/EXEC passes ``slots``
            return await self._cluster_round_trip(commands, slots)
        return await self._standalone_round_trip(commands, transaction)

    async def _standalone_round_trip(
        self, commands: list[list[Any]], transaction: bool
    ) -> list[Any]:
        """``commands`` in one write on one pooled connection (in ``MULTI``/``EXEC`` when
        ``transaction``); their replies in order. See `_exchange`."""
        client: Redis = self._client  # type: ignore[assignment]
        try:
            if client.single_connection_client:
                await client.initialize()
                async with client._single_conn_lock:
                    replies = await _exchange(client.connection, commands, transaction)
            else:
                pool = client.connection_pool
                conn = await pool.get_connection()  # type: ignore[no-untyped-call]
                try:
                    replies = await _exchange(conn, commands, transaction)
                finally:
                    await pool.release(conn)
        except _Refused as refused:
            raise BackendError(f"redis refused the atomic batch: {refused.reason}") from (
                refused.reason
            )
        unavailable = _unavailable_types()
        for reply in replies:
            if isinstance(reply, unavailable):
                raise reply
        return replies

    def _assemble(self, n: int, wires: list[_Wire], replies: list[Any]) -> list[Any]:
        results: list[Any] = [None] * n
        for wire, reply in zip(wires, replies, strict=True):
            mode = wire.mode
            if isinstance(reply, Exception):
                if mode == _IGNORE:
                    continue
                err = _slot_error(wire, reply, self.timeout)
                for t in wire.targets:
                    results[t] = err
            elif mode == _ONE:
                results[wire.targets[0]] = wire.conv(reply)
            elif mode == _EACH:
                for t, value in zip(wire.targets, reply, strict=True):
                    results[t] = value
            elif mode == _ALL_TRUE:
                for t in wire.targets:
                    results[t] = True
            elif mode == _EACH_CONV:
                for t, value in zip(wire.targets, reply, strict=True):
                    results[t] = wire.conv(value)
        return results

    # -- Cluster --------------------------------------------------------------------------

    async def _execute_cluster(self, commands: tuple[Command, ...], atomic: bool) -> list[Any]:
        from redis.crc import key_slot  # what RedisCluster.keyslot computes for bytes

        client: RedisCluster = self._client  # type: ignore[assignment]
        await client.initialize()
        if atomic:
            slots = {key_slot(_encode_key(c.key)) for c in commands}
            if len(slots) > 1:
                raise AtomicityError(
                    f"an atomic batch on Redis Cluster needs every key in one hash slot; these "
                    f"keys span {len(slots)} slots (give them a common {{hash tag}})"
                )
            wires = self._plan(commands, range(len(commands)), True)
            replies = await self._multi_exec(client, slots.pop(), wires)
            return self._assemble(len(commands), wires, replies)
        # Split runs by hash slot; within a slot the batch order is kept, and commands on
        # different slots touch different keys, so reordering across slots is invisible.
        by_slot: dict[int, list[int]] = {}
        keys: list[bytes] = []
        for i, cmd in enumerate(commands):
            key = _encode_key(cmd.key)
            keys.append(key)
            slot = key_slot(key)
            indices = by_slot.get(slot)
            if indices is None:
                by_slot[slot] = [i]
            else:
                indices.append(i)
        wires = []
        wire_slots: list[int] = []
        inline = _repeated_keys(commands)
        for slot, indices in by_slot.items():
            if len(indices) == 1 and type(commands[indices[0]]) is Get:
                # The common case (keys spread over many slots): a lone GET, planned inline.
                wires.append(_Wire(["GET", keys[indices[0]]], indices))
                wire_slots.append(slot)
                continue
            planned = self._plan(commands, indices, inline)
            wires += planned
            wire_slots += [slot] * len(planned)
        replies = await self._send(wires, False, wire_slots)
        from redis.exceptions import TryAgainError

        if TryAgainError in map(type, replies):
            wires, replies = await self._split_refused(
                commands, by_slot, wires, wire_slots, replies
            )
        return self._assemble(len(commands), wires, replies)

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
                        planned = self._single(commands[i], i, False)
                        singles += planned
                        single_slots += [slot] * len(planned)
                    continue
            kept_wires.append(wire)
            kept_replies.append(reply)
        if singles:
            # Single-key commands, never TRYAGAIN (nor script calls: nothing for NOSCRIPT).
            kept_wires += singles
            kept_replies += await self._cluster_round_trip([w.args for w in singles], single_slots)
        return kept_wires, kept_replies

    async def _cluster_round_trip(self, commands: list[list[Any]], slots: list[int]) -> list[Any]:
        """Non-atomic commands on Cluster: one write per node, to every node concurrently.

        redis-py's cluster pipeline spends ~15 µs of Python per command (it routes each one
        again and packs in Python): 1,000 GETs over 1,000 slots took 15-24 ms with it, 4 ms
        here. Each node gets all of its commands in one write on one pooled connection, and
        its replies are read in order.

        A command answered MOVED or ASK did not run: those, and only those, are sent again,
        in batch order, to where the reply points (after MOVED the slot map learns the new
        owner; after ASK the command follows an ``ASKING`` on the same connection, which
        redis-py's own redirect handling does not ensure). Within a slot this keeps the
        order of commands on one key: the owner answers MOVED to every command after the
        slot left it, and ASK for a key only when it does not hold that key, which no later
        command on it can then create there. A command that ran is never sent twice; one
        still redirected after ``_REDIRECTS`` rounds keeps the error in its slot.

        A node that fails (connection lost, no answer within the timeout) fails only the
        commands it had not answered: their slots get the error, the other nodes' replies
        stand. Only when every command failed so is the error raised for the whole batch.
        """
        from redis.exceptions import AskError, MovedError, SlotNotCoveredError

        client: RedisCluster = self._client  # type: ignore[assignment]
        nodes = client.nodes_manager
        node_of = nodes.get_node_from_slot
        groups: dict[str, tuple[ClusterNode, list[int]]] = {}
        try:
            for k, slot in enumerate(slots):
                node = node_of(slot)
                group = groups.get(node.name)
                if group is None:
                    groups[node.name] = group = (node, [])
                group[1].append(k)
        except (KeyError, SlotNotCoveredError) as exc:  # a KeyError from its slots_cache
            client._initialize = True  # learn the slot map again for the next call
            raise SlotNotCoveredError(f"hash slot {slot} is not covered") from exc
        replies: list[Any] = [_NO_REPLY] * len(commands)
        errors: list[int] = []  # positions of the error replies
        asking: set[int] = set()
        unavailable = _unavailable_types()
        failed = 0  # positions that hold a node's failure
        for round_ in range(_REDIRECTS):
            calls = [
                self._node_round_trip(client, node, commands, ks, replies, errors, asking)
                for node, ks in groups.values()
            ]
            if round_ == 0 and len(calls) == 1:
                await calls[0]  # one node: its failure is the whole batch's
            else:
                outcomes = await self._per_node(calls)
                for (_, ks), failure in zip(groups.values(), outcomes, strict=True):
                    if failure is None:
                        continue
                    for k in ks:
                        if replies[k] is _NO_REPLY:
                            replies[k] = failure
                            failed += 1
                if failed == len(commands):
                    raise next(r for r in replies if isinstance(r, BaseException))
            if not errors:
                return replies
            errors.sort()
            for k in errors:
                if isinstance(replies[k], unavailable):  # CLUSTERDOWN: the slot map is stale
                    client._initialize = True
            again = [k for k in errors if isinstance(replies[k], AskError)]  # or MovedError
            if not again:
                return replies
            errors.clear()
            asking.clear()
            groups.clear()
            moved: set[int] = set()
            for k in again:
                err = replies[k]
                replies[k] = _NO_REPLY
                if isinstance(err, MovedError):
                    if err.slot_id not in moved:
                        moved.add(err.slot_id)
                        await nodes.move_slot(err)
                    node = node_of(slots[k])
                else:
                    node = self._node_at(client, err.host, err.port)
                    asking.add(k)
                group = groups.get(node.name)
                if group is None:
                    groups[node.name] = group = (node, [])
                group[1].append(k)
        return replies

    @staticmethod
    def _node_at(client: RedisCluster, host: str, port: int) -> ClusterNode:
        """The node at ``host:port``, added to the client's nodes if new (as redis-py's
        ``move_slot`` does): a slot may migrate to a node that owns no slot yet."""
        from redis.asyncio.cluster import ClusterNode

        nodes = client.nodes_manager
        node = nodes.get_node(host, port)
        if node is None:
            node = ClusterNode(host, port, "primary", **nodes.connection_kwargs)
            nodes.set_nodes(nodes.nodes_cache, {node.name: node})
        return node

    @staticmethod
    async def _per_node(calls: list[Coroutine[Any, Any, None]]) -> list[Exception | None]:
        """Run one call per node concurrently; what each raised (None: it succeeded).

        Each call is bounded by the batch's deadline on its own, so a node that does not
        answer in time fails only its own part. Cancelling the caller cancels every call and
        waits for them, so none goes on reading without a deadline around it. An exception
        that is not a driver or network error (a bug) is raised once all calls are done.
        """
        scope = _SCOPE.get()
        deadline = None if scope is None else scope.when()
        tasks = [asyncio.ensure_future(c) for c in calls]
        late: set[asyncio.Future[None]] = set()
        if scope is not None:
            scope.reschedule(None)  # the wait below keeps the deadline instead
        try:
            wait = None if deadline is None else deadline - asyncio.get_running_loop().time()
            if wait is None or wait > 0:
                _, late = await asyncio.wait(tasks, timeout=wait)
            else:
                late = set(tasks)
        finally:
            for task in tasks:
                task.cancel()  # those not done: on timeout, or when the caller is cancelled
            pending = [task for task in tasks if not task.done()]
            if pending:
                await asyncio.wait(pending)
            if scope is not None:  # after the wait: it must not fail the nodes that answered
                scope.reschedule(deadline)
        outcomes: list[Exception | None] = []
        for task in tasks:
            if task in late:
                if not task.cancelled():
                    task.exception()  # finished while being cancelled: superseded
                outcomes.append(TimeoutError())
            else:
                exc = task.exception()
                if exc is not None and not isinstance(exc, Exception):
                    raise exc
                outcomes.append(exc)
        for exc in outcomes:
            if exc is not None and _translate(exc, None) is None:
                raise exc
        return outcomes

    @staticmethod
    async def _node_round_trip(
        client: RedisCluster,
        node: ClusterNode,
        commands: list[list[Any]],
        positions: list[int],
        replies: list[Any],
        errors: list[int],
        asking: AbstractSet[int],
    ) -> None:
        """Send ``commands[k] for k in positions`` to ``node`` in one write (``ASKING`` first
        for those in ``asking``); read the replies into ``replies[k]`` in order (an error
        reply as the exception, its ``k`` added to ``errors``).

        Whatever interrupts the reads (cancellation, timeout, a connection error) leaves the
        connection closed, never back in the pool with replies still to come: redis-py's
        ``send_packed_command`` and ``read_response`` close it on any exception, and so does
        the guard below for anything raised between two reads.
        """
        from redis.exceptions import ResponseError

        conn = node.acquire_connection()
        unread = 0
        try:
            await node.disconnect_if_needed(conn)  # marked after a topology change
            if asking:
                wanted = [
                    args
                    for k in positions
                    for args in ((["ASKING"], commands[k]) if k in asking else (commands[k],))
                ]
            else:
                wanted = [commands[k] for k in positions]
            pack = _packer()
            if pack is None:  # pragma: no cover - hiredis comes with the redis extra
                packed = conn.pack_commands(wanted)
            else:
                packed = [pack(tuple(args)) for args in wanted]
            unread = len(wanted)
            await conn.send_packed_command(packed)
            read = conn.read_response
            for k in positions:
                if k in asking:
                    await read()  # +OK for ASKING
                    unread -= 1
                try:
                    replies[k] = await read()
                except ResponseError as exc:
                    replies[k] = exc
                    errors.append(k)
                unread -= 1
        except BaseException as exc:
            if unread:
                await conn.disconnect(nowait=True)
            if isinstance(exc, _unavailable_types()):
                # As redis-py does after a connection error: learn the slot map again before
                # the next command (the node may have failed over).
                client._initialize = True
            raise
        finally:
            node.release(conn)

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
            return await self._multi_exec_on(client, slot, wires)
        except _Refused as refused:
            if not isinstance(refused.reason, MovedError):
                raise BackendError(f"redis refused the atomic batch: {refused.reason}") from (
                    refused.reason
                )
            # The slot moved (resharding, failover) and nothing ran: learn where, as redis-py
            # does for other commands, and try once more.
            await client.nodes_manager.move_slot(refused.reason)
        try:
            return await self._multi_exec_on(client, slot, wires)
        except _Refused as refused:
            raise BackendError(f"redis refused the atomic batch: {refused.reason}") from (
                refused.reason
            )

    @staticmethod
    async def _multi_exec_on(client: RedisCluster, slot: int, wires: list[_Wire]) -> list[Any]:
        node: ClusterNode = client.nodes_manager.get_node_from_slot(slot)
        conn = node.acquire_connection()
        try:
            await node.disconnect_if_needed(conn)  # marked after a topology change
            return await _exchange(conn, [w.args for w in wires], True)
        finally:
            node.release(conn)

    # -- clear ----------------------------------------------------------------------------

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


def _is_ssl(connection_class: Any) -> bool:
    return isinstance(connection_class, type) and "SSL" in connection_class.__name__
