"""MemcachedBackend: memcached nodes behind a libmemcached-compatible ketama ring.

Each batch costs one pipelined round trip per node, all nodes at once: the commands for a
node are written in one go and their replies read back in order. Consecutive gets become
one multi-key ``get`` with duplicate keys sent once. The other commands use memcached's meta
protocol (memcached 1.6.10 or newer, checked once per node). aiomcache has no pipelining and
no meta commands, so this module speaks the protocol itself on connections from aiomcache's
`MemcachePool`. It also guards that pool: a request that fails, times out or is cancelled
closes its connection, so a late reply can never reach the next caller.

What memcached lacks is emulated here:

- ``Gets`` reads the value, the cas unique and the remaining TTL (``mg <key> v c t``). The
  token carries all three, so a later ``Cas(..., KEEP_TTL)`` writes ``ms <key> C<cas>
  T<remaining>`` in one round trip and keeps the expiry time to within memcached's
  one-second clock. A ``touch`` does not change the cas unique, so the same write reads
  the TTL again just before it (``mg <key> t``); if a touch moved it meanwhile, the row
  is written once more with the new TTL (two more round trips, only then).
- ``Incr`` is memcached's ``ma`` (with ``N``/``J`` to create a missing key) when the delta is
  non-negative. memcached stores unsigned numbers only and its decrement stops at 0: the
  capabilities say so (``negative_incr=False``), and the executor runs a negative ``Incr``
  as gets/cas round trips of its own, which keep the key's remaining TTL. An ``Incr`` that
  ``ma`` cannot take (a negative stored value, numbers beyond 64 bits) gets `NotNative` in
  its slot, and the executor does the same; an increment that wrapped past ``2**64 - 1``
  gets a `NotNative` asking the executor to add the lost ``2**64`` back.
- ``Replace(..., KEEP_TTL)`` is not sent either (``replace_keep_ttl=False``): the executor
  runs it as ``Gets`` then ``Cas(..., KEEP_TTL)``.
- Keys memcached cannot hold (empty, over 250 bytes, spaces, control or non-ASCII characters)
  are stored as ``<namespace>:~<sha1 hex>``. A user key that itself starts with ``~`` is
  mapped too, so the two forms never collide.
- `clear` with a namespace lists each node's keys with ``lru_crawler metadump all`` and
  deletes those under the namespace; without one it is ``flush_all`` on every node.
- `scan` lists keys with the same metadump. A mapped key (``<namespace>:~<sha1>``) cannot be
  turned back into the key it stands for, so scan yields only keys stored as they are.

memcached cannot run a batch all-or-nothing, so a batch of two or more commands with
``atomic=True`` raises `AtomicityError` before anything is sent.

TTLs are whole seconds on a clock each node ticks once a second; see `exptime`. Keys on
different nodes that were given the same TTL can therefore expire up to a second apart.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import math
import re
import struct
import time
from collections.abc import (
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
)
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

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
    NotNative,
    Replace,
    Set,
    Touch,
    Ttl,
    WriteTTL,
)
from .._exceptions import (
    AtomicityError,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    ValueTooLargeError,
)
from .base import (
    DEFAULT_TIMEOUT,
    Backend,
    PerLoop,
    check_scan_args,
    has_writes,
    unknown_outcome,
)

if TYPE_CHECKING:
    from aiomcache.pool import Connection, MemcachePool

    from .near import NearCache

__all__ = ["HASHINGS", "KetamaRing", "MemcachedBackend"]

DEFAULT_PORT = 11211
#: memcached's default item size limit (``memcached -I``); key and value share it.
DEFAULT_ITEM_SIZE = 1024 * 1024
#: Bytes memcached adds to every item besides key and value (header, cas, terminators);
#: 59 on a 64-bit build, rounded up.
ITEM_OVERHEAD = 64
MAX_KEY_LENGTH = 250
#: Relative TTLs longer than this are read by memcached as unix timestamps.
MAX_RELATIVE_EXPTIME = 60 * 60 * 24 * 30
#: The latest expiry memcached can keep: its exptime is a signed 32-bit unix time
#: (2038-01-19 03:14:07 UTC). It drops an item given a later one at once, while answering
#: that it stored it, so a longer TTL is cut to end then.
MAX_EXPTIME = 2**31 - 1
MIN_SERVER_VERSION = (1, 6, 10)

#: Ring layouts, each named after the libmemcached setting it reproduces.
HASHINGS = ("ketama_weighted", "ketama", "ketama_md5")

_SAFE_KEY = re.compile(r"[!-~]+")  # printable ASCII, no space: what memcached accepts
_SAFE_WIRE_KEY = re.compile(rb"[!-~]{1,250}")
_INTEGER = re.compile(rb" *(-?[0-9]+) *")  # memcached pads in-place increments with spaces
_VERSION = re.compile(rb"VERSION (\d+)\.(\d+)\.(\d+)")
_U32 = 0xFFFFFFFF


# -- the ketama ring ----------------------------------------------------------------------


def _md5_u32(data: bytes, slot: int = 0) -> int:
    digest = hashlib.md5(data, usedforsecurity=False).digest()
    return int.from_bytes(digest[4 * slot : 4 * slot + 4], "little")


def _one_at_a_time(data: bytes) -> int:
    """libhashkit's default hash (Jenkins one-at-a-time, over *signed* chars)."""
    value = 0
    for byte in data:
        value = (value + (byte if byte < 0x80 else byte + 0xFFFFFF00)) & _U32
        value = (value + (value << 10)) & _U32
        value ^= value >> 6
    value = (value + (value << 3)) & _U32
    value ^= value >> 11
    return (value + (value << 15)) & _U32


def _f32(x: float) -> float:
    """Round to a C ``float``: libmemcached sizes weighted servers in single precision."""
    result: float = struct.unpack("f", struct.pack("f", x))[0]
    return result


class KetamaRing:
    """The continuum libmemcached builds for consistent hashing, point for point.

    ``servers`` are ``(host, port, weight)`` in the order the client lists them; ``host`` is
    spelled exactly as the other clients of the cluster spell it (``"localhost"`` and
    ``"127.0.0.1"`` are different points). ``hashing`` picks the layout:

    ``"ketama_weighted"``
        libmemcached's ``MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED``: pylibmc
        ``behaviors={"ketama_weighted": True}``, php-memcached's
        ``OPT_LIBKETAMA_COMPATIBLE``. Each server gets 40 strings ``"host:port-N"``, written
        ``"host-N"`` when the port is 11211. The md5 of each string gives 4 points, so a
        server has 160 points when the weights are equal (libmemcached computes the count in
        single precision, which gives 156 for some server counts, 25 for one; that is
        reproduced). Keys hash with md5 as well.
    ``"ketama"``
        ``MEMCACHED_BEHAVIOR_KETAMA`` on libmemcached 1.x, which is what pylibmc
        ``behaviors={"ketama": True}`` sets. Each server gets 100 strings of the same form,
        one point each, and points and keys use libhashkit's default one-at-a-time hash.
    ``"ketama_md5"``
        The same 100-point layout with md5 (first 4 bytes, little-endian). This is pylibmc
        ``{"ketama": True, "hash": "md5"}``, or ``{"ketama": True}`` on libmemcached 0.x.

    A key belongs to the first point at or after its hash, wrapping around to the first
    point. A node that is removed takes only its own points with it.

    Example::

        ring = KetamaRing([("10.0.0.1", 11211, 1), ("10.0.0.2", 11211, 1)])
        ring.node_for(b"user:42")  # -> 0 or 1, the index in the server list
    """

    def __init__(
        self, servers: Iterable[tuple[str, int, int]], hashing: str = "ketama_weighted"
    ) -> None:
        if hashing not in HASHINGS:
            raise ValueError(f"hashing must be one of {HASHINGS}, not {hashing!r}")
        self.servers = tuple(servers)
        self.hashing = hashing
        if not self.servers:
            raise ValueError("a ketama ring needs at least one server")
        weighted = hashing == "ketama_weighted"
        if not weighted and any(w != 1 for _, _, w in self.servers):
            raise ValueError(f"server weights need hashing='ketama_weighted', not {hashing!r}")
        total = sum(w for _, _, w in self.servers)
        count = len(self.servers)
        points: list[tuple[int, int]] = []
        for index, (host, port, weight) in enumerate(self.servers):
            if weighted:
                share = _f32(_f32(weight) / _f32(total))
                size = _f32(_f32(_f32(share * 160) / 4) * _f32(count))
                labels = math.floor(_f32(size + 1e-10))
            else:
                labels = 100
            for n in range(labels):
                label = self.point_label(host, port, n)
                if weighted:
                    points.extend((_md5_u32(label, slot), index) for slot in range(4))
                elif hashing == "ketama_md5":
                    points.append((_md5_u32(label), index))
                else:
                    points.append((_one_at_a_time(label), index))
        points.sort()
        self._values = [value for value, _ in points]
        self._owners = [owner for _, owner in points]

    @staticmethod
    def point_label(host: str, port: int, n: int) -> bytes:
        """The string hashed for a server's ``n``-th label: libmemcached drops port 11211."""
        if port == DEFAULT_PORT:
            return f"{host}-{n}".encode()
        return f"{host}:{port}-{n}".encode()

    def key_hash(self, key: bytes) -> int:
        """The 32-bit position of ``key`` on the ring."""
        return _one_at_a_time(key) if self.hashing == "ketama" else _md5_u32(key)

    def node_for(self, key: bytes) -> int:
        """Index (in the server list) of the node that holds ``key``."""
        if len(self.servers) == 1:
            return 0  # as libmemcached: no hashing at all for a single server
        i = bisect.bisect_left(self._values, self.key_hash(key))
        return self._owners[i if i < len(self._values) else 0]

    def __len__(self) -> int:
        return len(self._values)

    def points_of(self, index: int) -> int:
        """How many points the ``index``-th server has on the ring."""
        return self._owners.count(index)


# -- servers and URLs -----------------------------------------------------------------------

ServerSpec = str | tuple[str, int] | tuple[str, int, int]


def _parse_server(spec: Any) -> tuple[str, int, int]:
    if isinstance(spec, tuple | list):
        if len(spec) not in (2, 3):
            raise ValueError(f"a memcached server is (host, port[, weight]), not {spec!r}")
        host, port, weight = spec[0], spec[1], (spec[2] if len(spec) == 3 else 1)
    elif isinstance(spec, str):
        text = spec.strip()
        weight_text = ""
        if text.startswith("["):  # [v6addr]:port[:weight]
            host, closed, rest = text[1:].partition("]")
            if not closed or (rest and not rest.startswith(":")):
                raise ValueError(f"bad memcached server {spec!r}")
            port_text, _, weight_text = rest[1:].partition(":")
        else:
            host, _, rest = text.partition(":")
            port_text, _, weight_text = rest.partition(":")
        try:
            port = int(port_text) if port_text else DEFAULT_PORT
            weight = int(weight_text) if weight_text else 1
        except ValueError:
            raise ValueError(f"bad memcached server {spec!r}: host[:port[:weight]]") from None
    else:
        raise TypeError(f"a memcached server is 'host:port' or (host, port), not {spec!r}")
    if not isinstance(host, str) or not host:
        raise ValueError(f"bad memcached host in {spec!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"bad memcached port in {spec!r}")
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise ValueError(f"bad memcached weight in {spec!r}")
    return host, port, weight


def _parse_servers(servers: Any) -> list[tuple[str, int, int]]:
    if isinstance(servers, str):
        items: list[Any] = [s for s in servers.split(",") if s.strip()]
    elif (
        isinstance(servers, tuple)
        and len(servers) in (2, 3)
        and isinstance(servers[0], str)
        and isinstance(servers[1], int)
    ):
        items = [servers]  # one (host, port[, weight])
    elif isinstance(servers, Iterable):
        items = list(servers)
    else:
        raise TypeError(f"servers must be (host, port), 'host:port' or a list, not {servers!r}")
    parsed = [_parse_server(s) for s in items]
    if not parsed:
        raise ValueError("MemcachedBackend needs at least one server")
    seen = {(h, p) for h, p, _ in parsed}
    if len(seen) != len(parsed):
        raise ValueError(f"a memcached server is listed twice in {servers!r}")
    return parsed


_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "namespace": str,
    "timeout": lambda v: None if v.lower() in ("", "none") else float(v),
    "pool_size": int,
    "max_value_size": int,
    "hashing": str,
    "auto_batch": lambda v: {"1": True, "true": True, "0": False, "false": False}[v.lower()],
}


def parse_url(url: str) -> tuple[list[tuple[str, int, int]], dict[str, Any]]:
    """Servers and options from ``memcached://h1:11211,h2:11212?namespace=app&timeout=2``."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in MemcachedBackend.url_schemes:
        raise ValueError(f"not a memcached:// URL: {url!r}")
    if "@" in parts.netloc:
        raise ValueError("memcached URLs carry no credentials (SASL is not supported)")
    if parts.path not in ("", "/"):
        raise ValueError(f"memcached URLs have no path: {url!r}")
    servers = _parse_servers(parts.netloc or f"127.0.0.1:{DEFAULT_PORT}")
    options: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        convert = _URL_OPTIONS.get(name)
        if convert is None:
            raise ValueError(f"unknown option {name!r} in {url!r} (known: {sorted(_URL_OPTIONS)})")
        try:
            options[name] = convert(value)
        except (KeyError, ValueError):
            raise ValueError(f"bad value {value!r} for {name!r} in {url!r}") from None
    return servers, options


# -- TTLs -----------------------------------------------------------------------------------


def _absolute_if_long(seconds: int) -> int:
    if seconds > MAX_RELATIVE_EXPTIME:
        return min(int(time.time()) + seconds, MAX_EXPTIME)
    return seconds


def exptime(ttl: float | None) -> int:
    """memcached's exptime for a TTL in seconds (``None``: never expires).

    memcached counts time in whole seconds on a clock that ticks once a second, and an item
    stored with exptime ``n`` lives between ``n - 1`` and ``n`` seconds. The TTL is rounded
    up and one tick added, so an item never expires before its TTL (it may outlive it by up
    to a second). Thirty days or more are sent as a unix time, because memcached reads
    larger relative values as timestamps; a TTL reaching past `MAX_EXPTIME` (January 2038)
    ends then, the latest memcached can keep (it would drop the item at once otherwise).
    """
    if ttl is None:
        return 0
    return _absolute_if_long(math.ceil(ttl) + 1)


def _exptime_remaining(remaining: float) -> int:
    """exptime that keeps ``remaining`` seconds (as memcached reports them) to live."""
    return _absolute_if_long(max(1, math.ceil(remaining)))


class _CasToken(NamedTuple):
    """What `Gets` hands out: the cas unique plus the TTL left when it was read."""

    cas: int
    ttl: int  # seconds left as memcached reported them; -1: never expires
    read_at: float  # time.monotonic() of the read

    def keep_exptime(self) -> int:
        if self.ttl < 0:
            return 0
        return _exptime_remaining(self.ttl - (time.monotonic() - self.read_at))

    def ttl_moved(self, left: int) -> bool:
        """Whether ``left`` (seconds, -1: never expires), read later, says the TTL was set
        since this token was read (by more than memcached's one-second clock)."""
        if (left < 0) != (self.ttl < 0):
            return True
        return left >= 0 and abs(left - (self.ttl - (time.monotonic() - self.read_at))) > 1.5


# -- wire protocol --------------------------------------------------------------------------


class _ProtocolError(Exception):
    """memcached answered something this client does not understand."""


class _Request(NamedTuple):
    data: bytes
    #: True when the command's reply settles it; False when another step may follow (later
    #: commands on the same key then wait for the next round).
    final: bool = True
    #: With ``final=False``: the value is settled and a follow-up can only set the TTL, so
    #: later plain gets of the key need not wait (other commands still do).
    value_final: bool = False


class _Reply(NamedTuple):
    code: bytes  # b"HD", b"VA", b"EN", b"NS", b"EX", b"NF", b"TOUCHED", ..., or the error word
    flags: tuple[bytes, ...]  # returned meta flags such as b"c12", b"t-1"
    value: bytes | None
    line: bytes

    def flag(self, name: bytes) -> int:
        for item in self.flags:
            if item[:1] == name:
                return int(item[1:])
        raise _ProtocolError(f"flag {name!r} missing from {self.line!r}")


_Step = Generator[_Request, _Reply, Any]


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readline()
    if not line.endswith(b"\r\n"):
        if not line or not line.endswith(b"\n"):
            raise ConnectionResetError("memcached closed the connection")
        raise _ProtocolError(f"bad line from memcached: {line!r}")
    return line[:-2]


async def _read_dump_line(reader: asyncio.StreamReader) -> bytes:
    """A line of ``lru_crawler metadump`` output: those end in a bare LF, END in CRLF."""
    line = await reader.readline()
    if not line.endswith(b"\n"):
        raise ConnectionResetError("memcached closed the connection")
    return line.rstrip(b"\r\n")


async def _read_reply(reader: asyncio.StreamReader) -> _Reply:
    line = await _read_line(reader)
    words = line.split()
    if not words:
        raise _ProtocolError("empty reply from memcached")
    if words[0] == b"VA":
        size = int(words[1])
        data = await reader.readexactly(size + 2)
        if data[-2:] != b"\r\n":
            raise _ProtocolError(f"value of {size} bytes not terminated by CRLF")
        return _Reply(b"VA", tuple(words[2:]), data[:-2], line)
    return _Reply(words[0], tuple(words[1:]), None, line)


async def _read_values(reader: asyncio.StreamReader) -> dict[bytes, bytes]:
    """The reply to a classic multi-key ``get``."""
    values: dict[bytes, bytes] = {}
    while True:
        line = await _read_line(reader)
        if line == b"END":
            return values
        words = line.split()
        if len(words) < 4 or words[0] != b"VALUE":
            raise _ProtocolError(f"unexpected reply to get: {line!r}")
        data = await reader.readexactly(int(words[3]) + 2)
        values[words[1]] = data[:-2]


def _parse_int(value: bytes | None) -> int | None:
    if value is None:
        return None
    match = _INTEGER.fullmatch(value)
    return int(match.group(1)) if match else None


class _Pending:
    """One command of a node's batch while it runs."""

    __slots__ = ("done", "index", "key", "request", "steps")

    def __init__(self, index: int, key: bytes, steps: _Step | None, request: _Request) -> None:
        self.index = index
        self.key = key
        self.steps = steps  # None: a plain get, answered by the round's multi-get
        self.request = request
        self.done = False


_GET = _Request(b"")
#: Yielded by a step whose request holds two commands: "send me the second reply too".
_MORE = _Request(b"", final=False)


# -- nodes ----------------------------------------------------------------------------------


class _Node:
    """One memcached server: its address, its aiomcache pool and a round-trip counter."""

    def __init__(self, host: str, port: int, weight: int, pool_size: int) -> None:
        from aiomcache.pool import MemcachePool

        self.host = host
        self.port = port
        self.weight = weight
        self.pool_size = pool_size

        # aiomcache's pool keeps exactly ``minsize`` connections (it opens new ones only
        # below minsize), so min and max are the same number.
        def make() -> MemcachePool:
            return MemcachePool(host, port, minsize=pool_size, maxsize=pool_size)

        # A pool per event loop (its connections belong to the loop that opened them).
        self._pools: PerLoop[MemcachePool] = PerLoop(make, MemcachePool.clear, make())
        self.round_trips = 0
        self.checked = False
        self._generation = 0

    @property
    def name(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def pool(self) -> MemcachePool:
        """The running event loop's pool."""
        return self._pools.get()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection that goes back to the pool only after a clean exchange.

        aiomcache's pool takes back any connection whose reader is not at EOF or failed,
        and its own client marks a connection failed only on an ``Exception``. A
        cancellation or a timeout is a ``CancelledError``: the connection would return to the
        pool with a request in flight, and its late reply would be read by the next caller.
        Here any exit but a normal one marks the reader failed, so the pool closes the
        connection on release and opens a fresh one when it is next needed.
        """
        generation = self._generation
        pool = self._pools.get()
        conn = await pool.acquire()
        clean = False
        try:
            yield conn
            clean = True
        finally:
            if not clean or generation != self._generation:
                conn.reader.set_exception(ConnectionAbortedError("discarded by acacheorm"))
                conn.writer.close()
            pool.release(conn)

    async def close(self) -> None:
        self._generation += 1  # connections in use now are closed when they come back
        await self._pools.close()


# -- the backend ----------------------------------------------------------------------------


class MemcachedBackend(Backend):
    """memcached, one node or many, with keys spread by a libmemcached-compatible ring.

    ``servers`` is one ``(host, port)`` or ``"host:port"``, or a list of them (a weight may
    follow: ``(host, port, weight)``, ``"host:port:weight"``). Keys are placed exactly as
    libmemcached places them with the same server list (same order, same host spelling), so
    other clients of a shared cluster find them on the same nodes; ``hashing`` chooses which
    libmemcached setting to match (see `KetamaRing`). A node that is down costs only its own
    keys: commands on them raise `BackendUnavailable`, the rest keep working, and the node is
    used again as soon as it accepts connections. In a batch that spans a dead node and live
    ones, only the dead node's commands get `BackendUnavailable` (in their result slots);
    the others run and have their results. Nothing is ever sent twice: a write whose reply
    was lost raises `BackendUnavailable` saying that its outcome is unknown.

    Every call is bounded by ``timeout`` seconds. ``pool_size`` connections are kept per
    node. Values are refused with `ValueTooLargeError` when value, key and memcached's
    per-item overhead would not fit in ``max_value_size`` (memcached's ``-I``, 1 MiB unless
    the server was started otherwise). Needs memcached 1.6.10 or newer (meta commands).

    Example::

        backend = co.MemcachedBackend([("10.0.0.1", 11211), ("10.0.0.2", 11211)],
                                      namespace="app")
        await backend.set("greeting", b"hello", ttl=60)

        backend = co.MemcachedBackend.from_url("memcached://10.0.0.1,10.0.0.2?namespace=app")
    """

    # No native negative incr or replace keeping the TTL: the executor runs those as
    # gets/cas plan steps (see `acacheorm._executor`).
    capabilities = Capabilities(
        atomic_batch=False, native_cas=True, negative_incr=False, replace_keep_ttl=False
    )
    url_schemes = ("memcached",)

    def __init__(
        self,
        servers: ServerSpec | Iterable[ServerSpec],
        *,
        namespace: str = "",
        timeout: float | None = DEFAULT_TIMEOUT,
        pool_size: int = 4,
        auto_batch: bool = True,
        max_value_size: int = DEFAULT_ITEM_SIZE,
        hashing: str = "ketama_weighted",
        near_cache: NearCache | None = None,
    ) -> None:
        super().__init__(
            namespace=namespace, timeout=timeout, auto_batch=auto_batch, near_cache=near_cache
        )
        try:
            import aiomcache.pool  # noqa: F401 - fail early and clearly
        except ImportError as exc:
            raise ConfigurationError(
                "MemcachedBackend needs aiomcache: pip install 'acacheorm[memcached]'"
            ) from exc
        if isinstance(servers, str) and "://" in servers:
            servers, url_options = parse_url(servers)
            if url_options:
                raise ValueError("URL options need MemcachedBackend.from_url(url)")
        parsed = _parse_servers(servers)
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive int: {pool_size!r}")
        if (
            isinstance(max_value_size, bool)
            or not isinstance(max_value_size, int)
            or max_value_size <= ITEM_OVERHEAD + MAX_KEY_LENGTH
        ):
            raise ValueError(f"max_value_size is too small: {max_value_size!r}")
        self.max_value_size = max_value_size
        self.pool_size = pool_size
        self._ring = KetamaRing(parsed, hashing)
        self.hashing = hashing
        self._nodes = [_Node(h, p, w, pool_size) for h, p, w in parsed]
        self.servers = tuple((n.host, n.port) for n in self._nodes)
        self._wire_prefix = self._make_wire_prefix(self._prefix[:-1])  # escaped namespace

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemcachedBackend:
        """Build from ``memcached://host[:port][,host[:port]...][?option=value&...]``.

        Options: ``namespace``, ``timeout`` (seconds or ``none``), ``pool_size``,
        ``max_value_size``, ``hashing``, ``auto_batch``. Keyword arguments win over the URL.

        Example::

            backend = MemcachedBackend.from_url("memcached://h1:11211,h2:11211?namespace=app")
        """
        servers, url_options = parse_url(url)
        url_options.update(options)
        return cls(servers, **url_options)

    def __repr__(self) -> str:
        ns = f" namespace={self.namespace!r}" if self.namespace else ""
        return f"<MemcachedBackend {','.join(n.name for n in self._nodes)}{ns}>"

    # -- keys -----------------------------------------------------------------------------

    @staticmethod
    def _make_wire_prefix(namespace: str) -> str:
        if not namespace:
            return ""
        if _SAFE_KEY.fullmatch(namespace) and namespace[0] != "~" and len(namespace) <= 200:
            return namespace + ":"
        digest = hashlib.sha1(namespace.encode("utf-8", "surrogatepass"), usedforsecurity=False)
        return f"~{digest.hexdigest()}:"

    def wire_key(self, full_key: str) -> bytes:
        """The key memcached stores for ``full_key`` (namespace included, as `full_key`).

        Keys memcached can hold are sent unchanged; others become ``<namespace>:~<sha1>``.
        """
        prefix, wire_prefix = self._prefix, self._wire_prefix
        if full_key.startswith(prefix):
            rest = full_key[len(prefix) :]
            if (
                rest[:1] != "~"
                and len(wire_prefix) + len(rest) <= MAX_KEY_LENGTH
                and _SAFE_KEY.fullmatch(rest)
            ):
                return (wire_prefix + rest).encode("ascii")
        raw = full_key.encode("utf-8", "surrogatepass")
        return f"{wire_prefix}~{hashlib.sha1(raw, usedforsecurity=False).hexdigest()}".encode()

    def server_for(self, key: str) -> tuple[str, int]:
        """The ``(host, port)`` of the node that holds ``key`` (a key as given to `get`)."""
        node = self._nodes[self._ring.node_for(self.wire_key(self.full_key(key)))]
        return node.host, node.port

    # -- batches --------------------------------------------------------------------------

    async def _execute(self, batch: Batch) -> list[Any]:
        commands = batch.commands
        if batch.atomic and len(commands) > 1:
            raise AtomicityError(
                f"memcached cannot run {batch!r} all-or-nothing: it has no transactions"
            )
        by_node: dict[int, list[tuple[int, Command, bytes]]] = {}
        ring = self._ring
        for index, cmd in enumerate(commands):
            key = self.wire_key(cmd.key)
            by_node.setdefault(ring.node_for(key), []).append((index, cmd, key))
        results: list[Any] = [None] * len(commands)
        if len(by_node) == 1:
            [(n, items)] = by_node.items()
            for index, result in await self._run_node(self._nodes[n], items):
                results[index] = result
            return results
        # Every node's part runs to its end (or to the timeout) even when another fails, so
        # what a batch wrote on the healthy nodes does not depend on how fast a dead one
        # refused; a node that failed fails only its own commands.
        groups = list(by_node.items())
        outcomes = await asyncio.gather(
            *(self._run_node(self._nodes[n], items) for n, items in groups),
            return_exceptions=True,
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        for failure in failures:
            if not isinstance(failure, BackendError):
                raise failure  # not the server's doing: a bug, or a cancellation
        if len(failures) == len(outcomes):
            raise failures[0]
        for (_, items), outcome in zip(groups, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                for index, _, _ in items:
                    results[index] = outcome
            else:
                for index, result in outcome:
                    results[index] = result
        return results

    @contextlib.contextmanager
    def _errors(self, node: _Node) -> Iterator[None]:
        """Map what the network and the protocol raise to the acacheorm hierarchy."""
        try:
            yield
        except BackendError:
            raise
        except (OSError, EOFError) as exc:  # refused, reset, closed (IncompleteReadError)
            raise BackendUnavailable(f"memcached {node.name} is unavailable: {exc!r}") from exc
        except (_ProtocolError, ValueError, IndexError) as exc:
            raise BackendError(f"unexpected reply from memcached {node.name}: {exc}") from exc

    async def _check_version(self, node: _Node, conn: Connection) -> None:
        conn.writer.write(b"version\r\n")
        node.round_trips += 1
        line = await _read_line(conn.reader)
        match = _VERSION.match(line)
        if match is None:
            raise _ProtocolError(f"unexpected reply to version: {line!r}")
        version = tuple(int(part) for part in match.groups())
        if version < MIN_SERVER_VERSION:
            need = ".".join(map(str, MIN_SERVER_VERSION))
            raise BackendError(
                f"memcached {node.name} is {line[8:].decode()}; MemcachedBackend needs "
                f"{need} or newer (meta commands)"
            )
        node.checked = True

    async def _run_node(
        self, node: _Node, items: list[tuple[int, Command, bytes]]
    ) -> list[tuple[int, Any]]:
        results: list[tuple[int, Any]] = []
        pending: list[_Pending] = []
        for index, cmd, key in items:
            if type(cmd) is Get:
                pending.append(_Pending(index, key, None, _GET))
                continue
            steps = self._steps(cmd, key)
            try:
                request = next(steps)
            except StopIteration as stop:  # settled without asking (value too large, ...)
                results.append((index, stop.value))
                continue
            pending.append(_Pending(index, key, steps, request))
        if not pending:
            return results
        sent = False
        try:
            async with asyncio.timeout(self.timeout):
                with self._errors(node):
                    async with node.connection() as conn:
                        if not node.checked:
                            await self._check_version(node, conn)
                        while pending:
                            sent = True
                            await self._round(node, conn, pending, results)
                            pending = [p for p in pending if not p.done]
        except TimeoutError as exc:
            err = BackendUnavailable(f"memcached {node.name} did not answer within {self.timeout}s")
            if sent and has_writes(cmd for _, cmd, _ in items):
                raise unknown_outcome(err) from exc
            raise err from exc
        except BackendUnavailable as exc:
            # Sent writes whose replies never came may have run; they are not sent again.
            if sent and has_writes(cmd for _, cmd, _ in items):
                raise unknown_outcome(exc) from exc
            raise
        return results

    async def _round(
        self,
        node: _Node,
        conn: Connection,
        pending: list[_Pending],
        results: list[tuple[int, Any]],
    ) -> None:
        """Send the next step of every command that may go now, in one write; read replies.

        Commands on one key are sent in batch order, and memcached runs a connection's
        commands in order, so they pipeline; only behind a step that may need a follow-up
        does the rest of that key wait for the next round. Adjacent gets share one ``get``.
        """
        parts: list[_Pending | list[_Pending]] = []
        run: list[_Pending] | None = None
        blocked: dict[bytes, bool] = {}  # key -> whether even plain gets of it must wait
        for item in pending:
            hard = blocked.get(item.key)
            if hard is not None and (hard or item.steps is not None):
                blocked[item.key] = True  # what follows a held command waits too
                continue
            if item.steps is None:
                if run is None:
                    run = []
                    parts.append(run)
                run.append(item)
                continue
            run = None
            parts.append(item)
            if not item.request.final:
                blocked[item.key] = not item.request.value_final
        chunks: list[bytes] = []
        for part in parts:
            if isinstance(part, list):
                chunks.append(b"get " + b" ".join(dict.fromkeys(p.key for p in part)) + b"\r\n")
            else:
                chunks.append(part.request.data)
        # No drain before reading: memcached answers while we write, and draining first
        # could deadlock a large pipeline whose replies fill both socket buffers.
        conn.writer.write(b"".join(chunks))
        node.round_trips += 1
        for part in parts:
            if isinstance(part, list):
                values = await _read_values(conn.reader)
                for p in part:
                    results.append((p.index, values.get(p.key)))
                    p.done = True
                continue
            reply = await _read_reply(conn.reader)
            assert part.steps is not None
            try:
                request = part.steps.send(reply)
                while request is _MORE:
                    request = part.steps.send(await _read_reply(conn.reader))
                part.request = request
            except StopIteration as stop:
                results.append((part.index, stop.value))
                part.done = True

    # -- one generator per command: yields requests, receives replies, returns the result --

    def _steps(self, cmd: Command, key: bytes) -> _Step:
        # messages name the key as the caller wrote it, without the namespace prefix
        prefix = self._prefix
        name = cmd.key[len(prefix) :] if cmd.key.startswith(prefix) else cmd.key
        if isinstance(cmd, Set):
            return self._store(name, key, cmd.value, b"", cmd.ttl)
        if isinstance(cmd, Add):
            return self._store(name, key, cmd.value, b" ME", cmd.ttl)
        if isinstance(cmd, Replace):
            if cmd.ttl is KEEP_TTL:  # not native: the executor runs it as gets/cas
                return self._not_native(
                    f"replace of {name!r} keeping its TTL", Replace(name, cmd.value, KEEP_TTL)
                )
            return self._store(name, key, cmd.value, b" MR", cmd.ttl)
        if isinstance(cmd, Gets):
            return self._gets(name, key)
        if isinstance(cmd, Cas):
            return self._cas(name, key, cmd.value, cmd.token, cmd.ttl)
        if isinstance(cmd, Has):
            return self._simple(name, b"mg %b\r\n" % key, b"HD", b"EN")
        if isinstance(cmd, Delete):
            return self._simple(name, b"md %b\r\n" % key, b"HD", b"NF")
        if isinstance(cmd, Touch):
            line = b"touch %b %d\r\n" % (key, exptime(cmd.ttl))
            return self._simple(name, line, b"TOUCHED", b"NOT_FOUND")
        if isinstance(cmd, Incr):
            return self._incr(name, key, cmd.delta, cmd.ttl)
        if isinstance(cmd, Ttl):
            return self._ttl(name, key)
        raise TypeError(f"unknown command {cmd!r}")  # pragma: no cover - closed union

    def _too_large(self, name: str, key: bytes, value: bytes) -> ValueTooLargeError | None:
        if len(value) + len(key) + ITEM_OVERHEAD <= self.max_value_size:
            return None
        return ValueTooLargeError(
            f"value of {len(value)} bytes for key {name!r} does not fit memcached's item size "
            f"limit of {self.max_value_size} bytes (key and {ITEM_OVERHEAD} bytes of overhead "
            "included); nothing was written"
        )

    @staticmethod
    def _refused(name: str, reply: _Reply) -> BackendError:
        text = reply.line.decode("ascii", "replace")
        if reply.line.startswith(b"SERVER_ERROR object too large"):
            return ValueTooLargeError(f"memcached refused the value for key {name!r}: {text}")
        return BackendError(f"memcached refused a command on key {name!r}: {text}")

    @staticmethod
    def _set_line(key: bytes, value: bytes, flags: bytes) -> bytes:
        return b"".join((b"ms %b %d%b\r\n" % (key, len(value), flags), value, b"\r\n"))

    def _simple(self, name: str, line: bytes, yes: bytes, no: bytes) -> _Step:
        reply = yield _Request(line)
        if reply.code == yes:
            return True
        if reply.code == no:
            return False
        return self._refused(name, reply)

    def _store(self, name: str, key: bytes, value: bytes, mode: bytes, ttl: float | None) -> _Step:
        error = self._too_large(name, key, value)
        if error is not None:
            return error
        reply = yield _Request(self._set_line(key, value, b" T%d%b" % (exptime(ttl), mode)))
        if reply.code == b"HD":
            return True
        if reply.code == b"NS" and mode:  # add: present; replace: absent
            return False
        return self._refused(name, reply)

    def _ttl(self, name: str, key: bytes) -> _Step:
        reply = yield _Request(b"mg %b t\r\n" % key)
        if reply.code == b"EN":
            return MISSING
        if reply.code != b"HD":
            return self._refused(name, reply)
        left = reply.flag(b"t")
        # Whole seconds on a clock that ticks once a second, and `exptime` adds one tick:
        # report the lower bound (the item lives at least this long, at most a second more).
        return None if left < 0 else float(max(0, left - 1))

    def _gets(self, name: str, key: bytes) -> _Step:
        reply = yield _Request(b"mg %b v c t\r\n" % key)
        if reply.code == b"EN":
            return None
        if reply.code != b"VA":
            return self._refused(name, reply)
        token = _CasToken(reply.flag(b"c"), reply.flag(b"t"), time.monotonic())
        return reply.value, token

    def _cas(self, name: str, key: bytes, value: bytes, token: Any, ttl: WriteTTL) -> _Step:
        if not isinstance(token, _CasToken):
            return BackendError(f"cas on {name!r}: {token!r} is not a MemcachedBackend token")
        error = self._too_large(name, key, value)
        if error is not None:
            return error
        if ttl is not KEEP_TTL:
            line = self._set_line(key, value, b" C%d T%d" % (token.cas, exptime(ttl)))
            reply = yield _Request(line)
            if reply.code == b"HD":
                return True
            if reply.code in (b"EX", b"NF", b"NS"):  # changed, gone, or not stored
                return False
            return self._refused(name, reply)
        # A touch does not change the cas unique, so the write below succeeds after one and
        # would put back the TTL read by Gets. The row's TTL is read again just before it,
        # in the same write; if it moved, the row, if it still holds what was written, is
        # written again with that TTL. What is left is a touch landing between the two
        # commands of one write.
        when = token.keep_exptime()
        line = self._set_line(key, value, b" C%d T%d" % (token.cas, when))
        seen = yield _Request(b"mg %b t\r\n%b" % (key, line), final=False, value_final=True)
        reply = yield _MORE
        if reply.code in (b"EX", b"NF", b"NS"):
            return False
        if reply.code != b"HD":
            return self._refused(name, reply)
        if seen.code != b"HD" or not token.ttl_moved(seen.flag(b"t")):
            return True
        left = seen.flag(b"t")
        now = yield _Request(b"mg %b v c\r\n" % key, final=False)
        if now.code == b"VA" and now.value == value:  # else another write came: its TTL stands
            flags = b" C%d T%d" % (now.flag(b"c"), 0 if left < 0 else _exptime_remaining(left))
            yield _Request(self._set_line(key, value, flags), final=False)
        return True  # written either way

    @staticmethod
    def _not_native(what: str, redo: Command) -> _Step:
        """A slot for the executor to run as gets/cas round trips (nothing was sent)."""
        return NotNative(f"{what}: not native on memcached", redo)
        yield  # pragma: no cover - a step, for the same protocol as the others

    def _incr(self, name: str, key: bytes, delta: int, ttl: float | None) -> _Step:
        if not 0 <= delta < 2**64:  # memcached's numbers are unsigned 64-bit
            return NotNative(f"incr of {name!r} by {delta}", Incr(name, delta, ttl))
        # Native and atomic: creates a missing key holding delta (N: TTL on creation).
        line = b"ma %b N%d J%d D%d v\r\n" % (key, exptime(ttl), delta, delta)
        reply = yield _Request(line, final=False)
        if reply.code == b"VA":
            new = _parse_int(reply.value)
            if new is None:
                raise _ProtocolError(f"ma returned {reply.value!r}")
            if new >= delta:
                return new
            # memcached wrapped past 2**64 - 1: the executor puts the lost 2**64 back.
            return NotNative(
                f"incr of {name!r} wrapped", Incr(name, 2**64), result=new + 2**64, create=False
            )
        if reply.line.startswith(b"CLIENT_ERROR cannot increment"):
            # a negative, too large or non-numeric value, left as it was
            return NotNative(f"incr of {name!r}", Incr(name, delta, ttl))
        return self._refused(name, reply)

    # -- clear and close ------------------------------------------------------------------

    async def _near_get(self, keys: list[str]) -> list[tuple[Any, float | None]]:
        # Read as Gets (``mg <key> v c t``): the value and the seconds it has left, in the
        # same round trip, so a near cache never holds it past its expiry.
        results = await self._execute(Batch(tuple(Gets(k) for k in keys)))
        out: list[tuple[Any, float | None]] = []
        for result in results:
            if result is None or isinstance(result, BaseException):
                out.append((result, 0.0))
                continue
            value, token = result
            # memcached's clock ticks once a second: up to a second less may be left.
            out.append((value, None if token.ttl < 0 else token.ttl - 1.0))
        return out

    async def _clear(self) -> None:
        clear = self._clear_node if self._wire_prefix else self._flush_node
        outcomes = await asyncio.gather(
            *(clear(node) for node in self._nodes), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _flush_node(self, node: _Node) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                with self._errors(node):
                    async with node.connection() as conn:
                        conn.writer.write(b"flush_all\r\n")
                        node.round_trips += 1
                        line = await _read_line(conn.reader)
                        if line != b"OK":
                            raise BackendError(f"flush_all on {node.name} answered {line!r}")
        except TimeoutError as exc:
            raise BackendUnavailable(f"memcached {node.name} timed out in flush_all") from exc

    async def _clear_node(self, node: _Node) -> None:
        """Delete this namespace's keys on ``node``, found with ``lru_crawler metadump``.

        The timeout bounds each wait for progress, not the whole dump, which can be long.
        """
        loop = asyncio.get_running_loop()
        prefix = self._wire_prefix.encode("ascii")
        try:
            async with asyncio.timeout(self.timeout) as deadline:

                def progress() -> None:
                    if self.timeout is not None:
                        deadline.reschedule(loop.time() + self.timeout)

                with self._errors(node):
                    async with node.connection() as conn:
                        keys = await self._dump_keys(node, conn, prefix, progress)
                        for start in range(0, len(keys), 1000):
                            chunk = keys[start : start + 1000]
                            conn.writer.write(b"".join(b"md %b\r\n" % k for k in chunk))
                            node.round_trips += 1
                            for _ in chunk:
                                reply = await _read_reply(conn.reader)
                                if reply.code not in (b"HD", b"NF"):
                                    raise BackendError(
                                        f"delete on {node.name} answered {reply.line!r}"
                                    )
                            progress()
        except TimeoutError as exc:
            raise BackendUnavailable(f"memcached {node.name} timed out in clear") from exc

    async def _dump_keys(
        self, node: _Node, conn: Connection, prefix: bytes, progress: Callable[[], None]
    ) -> list[bytes]:
        while True:
            # metadump must be alone in the server's read buffer: nothing pipelined with it
            conn.writer.write(b"lru_crawler metadump all\r\n")
            node.round_trips += 1
            keys: list[bytes] = []
            line = await _read_dump_line(conn.reader)
            if line.startswith(b"BUSY"):  # another crawl is running; wait for it
                await asyncio.sleep(0.05)
                continue
            count = 0
            while line != b"END":
                if not line.startswith(b"key="):
                    raise BackendError(
                        f"memcached {node.name} cannot list keys for clear() ({line!r}); "
                        "it needs the LRU crawler (memcached 1.5+, not disabled)"
                    )
                key = unquote_to_bytes(line[4:].split(b" ", 1)[0])
                if key.startswith(prefix) and _SAFE_WIRE_KEY.fullmatch(key):
                    keys.append(key)
                count += 1
                if count % 1000 == 0:
                    progress()
                line = await _read_dump_line(conn.reader)
            return keys

    async def scan(self, prefix: str = "", count: int = 500) -> AsyncIterator[str]:
        """Keys starting with ``prefix`` (without the namespace), node by node, listed with
        ``lru_crawler metadump all`` (memcached 1.5+ with the LRU crawler enabled).

        Only keys stored as they are can be listed: a key memcached cannot hold (over 250
        bytes, spaces, control or non-ASCII characters, a leading ``~``) is stored under a
        sha1 of itself, which cannot be turned back into the key, so such keys are never
        yielded. A key found on a node the ring no longer maps it to (left there after the
        server list changed) is skipped too: `get` would not find it. ``count`` is unused
        (each node's dump is read whole, as `clear` does); the scan yields to the event loop
        between nodes.

        Example::

            async for key in backend.scan("user:"):
                ...
        """
        check_scan_args(prefix, count)
        wire_prefix = self._wire_prefix.encode("ascii")
        cut = len(wire_prefix)
        for index, node in enumerate(self._nodes):
            for wire in await self._scan_node(node, wire_prefix):
                rest = wire[cut:]
                if rest[:1] == b"~" or self._ring.node_for(wire) != index:
                    continue
                key = rest.decode("ascii")
                if key.startswith(prefix):
                    yield key

    async def _scan_node(self, node: _Node, prefix: bytes) -> list[bytes]:
        """The wire keys on ``node`` that start with ``prefix`` (metadump; see `scan`)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout) as deadline:

                def progress() -> None:
                    if self.timeout is not None:
                        deadline.reschedule(loop.time() + self.timeout)

                with self._errors(node):
                    async with node.connection() as conn:
                        return await self._dump_keys(node, conn, prefix, progress)
        except TimeoutError as exc:
            raise BackendUnavailable(f"memcached {node.name} timed out in scan") from exc

    async def _close(self) -> None:
        for node in self._nodes:
            await node.close()
        # closing a transport finishes on the next loop iteration; let it, so no socket
        # outlives close()
        await asyncio.sleep(0)
