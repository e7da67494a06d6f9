"""MemcachedBackend: memcached nodes behind a libmemcached-compatible ketama ring.

Each batch costs one pipelined round trip per node, all nodes at once: the commands for a
node are written in one go and their replies read back in order. Consecutive gets become
one multi-key ``get`` with duplicate keys sent once. The other commands use memcached's meta
protocol (memcached 1.6.10 or newer, checked once per node), spoken by this package itself
(`_protocol`, no I/O) on connections from a small pool of its own per node (`_pool`): a
request that fails, times out or is cancelled closes its connection, so a late reply can
never reach the next caller. Replies are parsed in bulk from what has arrived, and a batch
of one kind of command (gets, cas reads, sets) skips the per-command step machinery. A
lone command of a model read or update (`_read_one`, `_run_lone`) skips the batch layers.

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
import contextlib
import hashlib
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

from ..._commands import Batch, Capabilities, Command, Get, Gets, Set
from ..._exceptions import AtomicityError, BackendError, BackendUnavailable
from ..base import (
    DEFAULT_TIMEOUT,
    Backend,
    check_scan_args,
    has_writes,
    name_slot_errors,
    unknown_outcome,
)
from ._pool import Connection, Node, read_dump_line, read_line
from ._protocol import (
    _GET,
    _MORE,
    DEFAULT_ITEM_SIZE,
    ITEM_OVERHEAD,
    MAX_EXPTIME,
    MAX_KEY_LENGTH,
    MIN_SERVER_VERSION,
    Steps,
    _CasToken,
    _ProtocolError,
    _Request,
    _Step,
    exptime,
    get_request,
    server_version,
    set_line,
)
from ._ring import DEFAULT_PORT, HASHINGS, KetamaRing

_JUST_GET = {Get}

if TYPE_CHECKING:
    from ..near import NearCache

__all__ = [
    "DEFAULT_ITEM_SIZE",
    "DEFAULT_PORT",
    "HASHINGS",
    "MAX_EXPTIME",
    "KetamaRing",
    "MemcachedBackend",
    "exptime",
    "parse_url",
]

_SAFE_KEY = re.compile(r"[!-~]+")  # printable ASCII, no space: what memcached accepts
_SAFE_WIRE_KEY = re.compile(rb"[!-~]{1,250}")


_new = tuple.__new__  # a command is a NamedTuple whose first item is its key
ServerSpec = str | tuple[str, int] | tuple[str, int, int]
T = TypeVar("T")


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


class _Pending:
    """One command of a node's batch while it runs."""

    __slots__ = ("done", "index", "key", "request", "steps")

    def __init__(self, index: int, key: bytes, steps: _Step | None, request: _Request) -> None:
        self.index = index
        self.key = key
        self.steps = steps  # None: a plain get, answered by the round's multi-get
        self.request = request
        self.done = False


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
        self._nodes = [Node(h, p, w, pool_size) for h, p, w in parsed]
        self.servers = tuple((n.host, n.port) for n in self._nodes)
        self._wire_prefix = self._make_wire_prefix(self._prefix[:-1])  # escaped namespace
        self._steps_of = Steps(max_value_size)

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
        if wire_prefix == prefix and full_key.startswith(prefix):
            # the namespace is sent as it is: check the whole key at once (printable ASCII
            # without spaces, a first character after the namespace other than "~")
            first = full_key[len(prefix) : len(prefix) + 1]
            if (
                first
                and first != "~"
                and len(full_key) <= MAX_KEY_LENGTH
                and full_key.isascii()
                and full_key.isprintable()
                and " " not in full_key
            ):
                return full_key.encode("ascii")
        elif full_key.startswith(prefix):
            rest = full_key[len(prefix) :]
            if (
                rest[:1] != "~"
                and len(wire_prefix) + len(rest) <= MAX_KEY_LENGTH
                and _SAFE_KEY.fullmatch(rest)
            ):
                return (wire_prefix + rest).encode("ascii")
        raw = full_key.encode("utf-8", "surrogatepass")
        return f"{wire_prefix}~{hashlib.sha1(raw, usedforsecurity=False).hexdigest()}".encode()

    def _wire_keys(self, full_keys: list[str]) -> list[bytes]:
        """`wire_key` of each of ``full_keys``. When every key may be sent as it is (the
        common case), that is checked and converted over all the keys at once."""
        prefix = self._prefix
        if self._wire_prefix == prefix and full_keys:
            # With no space in any key, one space per key before it finds each key's start:
            # every key must start with the namespace and go on with something but "~".
            joined = " ".join(full_keys)
            lead = " " + prefix
            starts = " " + joined
            if (
                joined.isascii()
                and joined.isprintable()
                and joined.count(" ") == len(full_keys) - 1
                and starts.count(lead) == len(full_keys)
                and lead + "~" not in starts
                and lead + " " not in starts + " "
                and max(map(len, full_keys)) <= MAX_KEY_LENGTH
            ):
                return joined.encode("ascii").split(b" ")
        wire_key = self.wire_key
        return [wire_key(key) for key in full_keys]

    def server_for(self, key: str) -> tuple[str, int]:
        """The ``(host, port)`` of the node that holds ``key`` (a key as given to `get`)."""
        node = self._nodes[self._ring.node_for(self.wire_key(self.full_key(key)))]
        return node.host, node.port

    # -- batches --------------------------------------------------------------------------

    async def execute(self, batch: Batch) -> list[Any]:
        """`Backend.execute`; a batch of several plain reads (`Get`, the merged reads of a
        batching window), without a near cache, goes straight to `_get_many` (the same
        answer, without the namespaced copy of the batch), unless a subclass wraps
        `_execute` (`_runs_one`: then it sees every batch)."""
        commands = batch.commands
        if (
            len(commands) > 1
            and self._runs_one
            and self.near_cache is None
            and not batch.atomic
            and {*map(type, commands)} == _JUST_GET
        ):
            prefix = self._prefix
            keys = self._wire_keys([prefix + cmd[0] for cmd in commands])
            return name_slot_errors(commands, await self._get_many(keys))
        return await super().execute(batch)

    async def _execute(self, batch: Batch) -> list[Any]:
        commands = batch.commands
        if batch.atomic and len(commands) > 1:
            raise AtomicityError(
                f"memcached cannot run {batch!r} all-or-nothing: it has no transactions"
            )
        ring = self._ring
        nodes = self._nodes
        if len(commands) == 1:  # the common lone command: no grouping, no per-item state
            cmd = commands[0]
            key = self.wire_key(cmd.key)
            node = nodes[ring.node_for(key)] if len(nodes) > 1 else nodes[0]
            if type(cmd) is Get:
                return [await self._get_one(node, key)]
            return [await self._run_one(node, cmd, key)]
        keys = self._wire_keys([cmd[0] for cmd in commands])  # a command's first item: its key
        kinds = {type(cmd) for cmd in commands}
        if len(kinds) == 1:  # one kind of command: each has one request and one reply
            kind = kinds.pop()
            if kind is Get:
                return await self._get_many(keys)
            if kind is Gets:
                return await self._gets_many(commands, keys)
            if kind is Set:
                return await self._sets_many(cast("tuple[Set, ...]", commands), keys)
        by_node: dict[int, list[tuple[int, Command, bytes]]] = {}
        for index, (cmd, key) in enumerate(zip(commands, keys, strict=True)):
            by_node.setdefault(ring.node_for(key), []).append((index, cmd, key))
        results: list[Any] = [None] * len(commands)
        if len(by_node) == 1:
            [(n, items)] = by_node.items()
            for index, result in await self._run_node(nodes[n], items):
                results[index] = result
            return results
        # Every node's part runs to its end (or to the timeout) even when another fails, so
        # what a batch wrote on the healthy nodes does not depend on how fast a dead one
        # refused; a node that failed fails only its own commands.
        groups = list(by_node.items())
        outcomes = await asyncio.gather(
            *(self._run_node(nodes[n], items) for n, items in groups),
            return_exceptions=True,
        )
        self._check_outcomes(outcomes)
        for (_, items), outcome in zip(groups, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                for index, _, _ in items:
                    results[index] = outcome
            else:
                for index, result in outcome:
                    results[index] = result
        return results

    @staticmethod
    def _check_outcomes(outcomes: list[Any]) -> None:
        """Raise what no slot may hold (not the server's doing: a bug, a cancellation), or
        the failure of every node when all failed."""
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        for failure in failures:
            if not isinstance(failure, BackendError):
                raise failure
        if failures and len(failures) == len(outcomes):
            raise failures[0]

    async def _get_many(self, keys: list[bytes]) -> list[Any]:
        """A batch of plain gets (wire keys): one multi-key ``get`` per node, all nodes at
        once, with each key's value (or None) in its slot."""
        nodes = self._nodes
        if len(nodes) == 1:
            get = (await self._run_gets(nodes[0], keys)).get
            return [get(key) for key in keys]
        node_for = self._ring.node_for
        where = [node_for(key) for key in keys]
        by_node: dict[int, list[bytes]] = {}
        for n, key in zip(where, keys, strict=True):
            by_node.setdefault(n, []).append(key)
        groups = list(by_node.items())
        outcomes = await asyncio.gather(
            *(self._run_gets(nodes[n], part) for n, part in groups), return_exceptions=True
        )
        self._check_outcomes(outcomes)
        found: dict[bytes, bytes] = {}
        failed: dict[int, BaseException] = {}
        for (n, _), outcome in zip(groups, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failed[n] = outcome
            else:
                found.update(outcome)
        get = found.get
        if not failed:
            return [get(key) for key in keys]
        return [failed[n] if n in failed else get(key) for n, key in zip(where, keys, strict=True)]

    def _deadline(self) -> float:
        """The event loop time an exchange starting now must end by."""
        timeout = self.timeout
        return math.inf if timeout is None else asyncio.get_running_loop().time() + timeout

    def _failure(self, node: Node, exc: BaseException, writes_sent: bool) -> BaseException:
        """What ``exc``, raised by an exchange with ``node``, becomes: network and protocol
        failures map to the acacheorm hierarchy, and when writes were sent, a lost reply
        says their outcome is unknown (they may have run: nothing is sent again)."""
        err: BaseException
        if isinstance(exc, TimeoutError):
            err = BackendUnavailable(f"memcached {node.name} did not answer within {self.timeout}s")
        elif isinstance(exc, BackendError):
            err = exc
        elif isinstance(exc, OSError | EOFError):  # refused, reset, closed
            err = BackendUnavailable(f"memcached {node.name} is unavailable: {exc!r}")
        elif isinstance(exc, _ProtocolError | ValueError | IndexError):
            return BackendError(f"unexpected reply from memcached {node.name}: {exc}")
        else:
            return exc  # not the server's doing: a bug, or a cancellation
        if writes_sent and isinstance(err, BackendUnavailable):
            return unknown_outcome(err)
        return err

    @contextlib.contextmanager
    def _errors(self, node: Node) -> Iterator[None]:
        """Map what the network and the protocol raise to the acacheorm hierarchy."""
        try:
            yield
        except BaseException as exc:
            err = self._failure(node, exc, False)
            if err is exc:
                raise
            raise err from exc

    async def _check_version(self, node: Node, conn: Connection) -> None:
        conn.write(b"version\r\n")
        node.round_trips += 1
        line = await read_line(conn)
        version = server_version(line)
        if version < MIN_SERVER_VERSION:
            need = ".".join(map(str, MIN_SERVER_VERSION))
            raise BackendError(
                f"memcached {node.name} is {line[8:].decode()}; MemcachedBackend needs "
                f"{need} or newer (meta commands)"
            )
        node.checked = True

    async def _exchange(
        self,
        node: Node,
        request: bytes,
        read: Callable[[Connection], Awaitable[T]],
        writes: bool,
    ) -> T:
        """Send ``request`` to ``node`` in one write and ``read`` its replies (see
        `_on_connection`; ``writes``: the request holds writes)."""

        async def talk(conn: Connection) -> T:
            conn.write(request)
            node.round_trips += 1
            return await read(conn)

        return await self._on_connection(node, talk, writes)

    async def _on_connection(
        self, node: Node, talk: Callable[[Connection], Awaitable[T]], writes: bool
    ) -> T:
        """``talk`` on a pooled connection to ``node`` (its server's version checked once),
        by the deadline; the connection goes back to the pool only if ``talk`` ended
        cleanly. Failures map as `_failure` says (``writes``: what ``talk`` sends holds
        writes, whose outcome a lost reply leaves unknown). `_get_one` is the same, inlined
        for the hottest command."""
        sent = False
        deadline = self._deadline()
        generation = node._generation
        pool = node.pool
        try:
            conn = pool.take() or await pool.acquire(deadline)
            clean = False
            try:
                conn.deadline = deadline
                if not node.checked:
                    await self._check_version(node, conn)
                sent = True
                result = await talk(conn)
                clean = True
            finally:
                pool.release(conn, clean and generation == node._generation)
        except BaseException as exc:
            raise self._failure(node, exc, sent and writes) from exc
        return result

    async def _run_gets(self, node: Node, keys: list[bytes]) -> dict[bytes, bytes]:
        """The values ``node`` holds for ``keys``: one multi-key ``get`` (each key once),
        its reply parsed in bulk."""
        return await self._exchange(node, get_request(keys), Connection.read_values, False)

    async def _by_node(
        self,
        keys: list[bytes],
        run: Callable[[Node, list[int]], Awaitable[list[Any]]],
    ) -> list[Any]:
        """Results of a batch whose commands are all of one kind, ``run`` on each node with
        the positions of that node's commands (all nodes at once); a node that failed
        fails only its own slots."""
        nodes = self._nodes
        if len(nodes) == 1:
            return await run(nodes[0], list(range(len(keys))))
        node_for = self._ring.node_for
        by_node: dict[int, list[int]] = {}
        for index, key in enumerate(keys):
            by_node.setdefault(node_for(key), []).append(index)
        if len(by_node) == 1:
            [(n, indexes)] = by_node.items()
            return await run(nodes[n], indexes)
        groups = list(by_node.items())
        outcomes = await asyncio.gather(
            *(run(nodes[n], indexes) for n, indexes in groups), return_exceptions=True
        )
        self._check_outcomes(outcomes)
        results: list[Any] = [None] * len(keys)
        for (_, indexes), outcome in zip(groups, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                for index in indexes:
                    results[index] = outcome
            else:
                for index, result in zip(indexes, outcome, strict=True):
                    results[index] = result
        return results

    def _name(self, cmd: Command) -> str:
        """The key of ``cmd`` as the caller wrote it (without the namespace), for errors."""
        prefix = self._prefix
        return cmd.key[len(prefix) :] if cmd.key.startswith(prefix) else cmd.key

    async def _gets_many(self, commands: tuple[Command, ...], keys: list[bytes]) -> list[Any]:
        """A batch of `Gets`: one ``mg <key> v c t`` per command, pipelined per node in one
        write, the replies read in bulk."""

        async def run(node: Node, indexes: list[int]) -> list[Any]:
            async def read(conn: Connection) -> list[Any]:
                replies = await conn.read_replies(len(indexes))
                now = time.monotonic()
                out: list[Any] = []
                for index, reply in zip(indexes, replies, strict=True):
                    code = reply.code
                    if code == b"VA":
                        token = _CasToken(reply.flag(b"c"), reply.flag(b"t"), now)
                        out.append((reply.value, token))
                    elif code == b"EN":
                        out.append(None)
                    else:
                        out.append(Steps._refused(self._name(commands[index]), reply))
                return out

            request = b"".join([b"mg %b v c t\r\n" % keys[index] for index in indexes])
            return await self._exchange(node, request, read, False)

        return await self._by_node(keys, run)

    async def _sets_many(self, commands: tuple[Set, ...], keys: list[bytes]) -> list[Any]:
        """A batch of `Set`: one ``ms`` per command, pipelined per node in one write, the
        replies read in bulk. A value too large gets its error without being sent."""
        limit = self.max_value_size - ITEM_OVERHEAD
        flags: dict[float | None, bytes] = {}  # exptime flag per TTL, made once per batch

        async def run(node: Node, indexes: list[int]) -> list[Any]:
            out: list[Any] = [None] * len(indexes)
            lines: list[bytes] = []
            sent: list[int] = []  # positions in `out` of the commands sent
            for at, index in enumerate(indexes):
                cmd = commands[index]
                key = keys[index]
                value = cmd.value
                if len(value) + len(key) > limit:
                    out[at] = self._steps_of._too_large(self._name(cmd), key, value)
                    continue
                ttl = cmd.ttl
                flag = flags.get(ttl)
                if flag is None:
                    flag = flags[ttl] = b" T%d" % exptime(ttl)
                lines.append(set_line(key, value, flag))
                sent.append(at)
            if not lines:
                return out

            async def read(conn: Connection) -> None:
                replies = await conn.read_replies(len(sent))
                for at, reply in zip(sent, replies, strict=True):
                    if reply.code == b"HD":
                        out[at] = True
                    else:
                        out[at] = Steps._refused(self._name(commands[indexes[at]]), reply)

            await self._exchange(node, b"".join(lines), read, True)
            return out

        return await self._by_node(keys, run)

    async def _run_node(
        self, node: Node, items: list[tuple[int, Command, bytes]]
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

        async def talk(conn: Connection) -> None:
            nonlocal pending
            while pending:
                await self._round(node, conn, pending, results)
                pending = [p for p in pending if not p.done]

        # Sent writes whose replies never came may have run; they are not sent again.
        await self._on_connection(node, talk, has_writes(c for _, c, _ in items))
        return results

    #: A lone model read or update skips the batch layers (see `_read_one`, `_run_lone`),
    #: unless a subclass wraps `execute` or `_execute`: then it sees every command.
    _runs_one = True

    async def _read_one(self, key: str) -> bytes | None:
        """A lone `Get` of ``key`` (without the namespace): `_execute`'s own path for it,
        without a batch."""
        wire = self.wire_key(self._prefix + key)
        nodes = self._nodes
        return await self._get_one(
            nodes[self._ring.node_for(wire)] if len(nodes) > 1 else nodes[0], wire
        )

    async def _run_lone(self, command: Command) -> Any:
        """A lone ``command`` (key without the namespace, never an `Incr` or a `Replace`):
        `_execute`'s own path for it, without a batch; a failure in its slot is named as
        `execute` names it."""
        prefix = self._prefix
        cmd = _new(type(command), (prefix + command[0], *command[1:]))
        wire = self.wire_key(cmd[0])
        nodes = self._nodes
        node = nodes[self._ring.node_for(wire)] if len(nodes) > 1 else nodes[0]
        if type(cmd) is Get:
            return await self._get_one(node, wire)
        result = await self._run_one(node, cmd, wire)
        if isinstance(result, BackendError):
            return name_slot_errors((cmd,), [result], len(prefix))[0]
        return result

    async def _get_one(self, node: Node, key: bytes) -> bytes | None:
        """`_run_one` for a lone `Get` of wire key ``key``, the hottest command: one
        ``get``, its reply parsed once it has come."""
        deadline = self._deadline()
        generation = node._generation
        pool = node.pool
        try:
            conn = pool.take() or await pool.acquire(deadline)
            clean = False
            try:
                conn.deadline = deadline
                if not node.checked:
                    await self._check_version(node, conn)
                conn.write(b"get %b\r\n" % key)
                node.round_trips += 1
                value = await conn.read_value(key)
                clean = True
            finally:
                pool.release(conn, clean and generation == node._generation)
        except BaseException as exc:
            raise self._failure(node, exc, False) from exc
        return value

    async def _run_one(self, node: Node, cmd: Command, key: bytes) -> Any:
        """`_run_node` for a batch of one command but a `Get` (`_get_one`): the same
        exchange, without the rounds' bookkeeping (one request in flight at a time, each
        step's reply read before the next is sent)."""
        steps: _Step | None = None
        if type(cmd) is Gets:  # one request, one reply: no steps to drive
            first = b"mg %b v c t\r\n" % key
        else:
            steps = self._steps(cmd, key)
            try:
                first = next(steps).data
            except StopIteration as stop:  # settled without asking (value too large, ...)
                return stop.value

        async def talk(conn: Connection) -> Any:
            data = first
            while True:
                conn.write(data)
                node.round_trips += 1
                if steps is None:
                    return Steps.gets_result(self._name(cmd), await conn.read_reply())
                try:
                    request = steps.send(await conn.read_reply())
                    while request is _MORE:  # its reply came with the first, mostly
                        request = steps.send(conn.take_reply() or await conn.read_reply())
                except StopIteration as stop:
                    return stop.value
                data = request.data

        # A sent write whose reply never came may have run; it is not sent again.
        return await self._on_connection(node, talk, has_writes((cmd,)))

    async def _round(
        self,
        node: Node,
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
                chunks.append(get_request([p.key for p in part]))
            else:
                chunks.append(part.request.data)
        conn.write(b"".join(chunks))
        node.round_trips += 1
        for part in parts:
            if isinstance(part, list):
                values = await conn.read_values()
                for p in part:
                    results.append((p.index, values.get(p.key)))
                    p.done = True
                continue
            reply = conn.take_reply() or await conn.read_reply()
            assert part.steps is not None
            try:
                request = part.steps.send(reply)
                while request is _MORE:
                    request = part.steps.send(conn.take_reply() or await conn.read_reply())
                part.request = request
            except StopIteration as stop:
                results.append((part.index, stop.value))
                part.done = True

    # -- one generator per command: yields requests, receives replies, returns the result --

    def _steps(self, cmd: Command, key: bytes) -> _Step:
        # messages name the key as the caller wrote it, without the namespace prefix
        return self._steps_of.of(cmd, key, self._name(cmd))

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

    @contextlib.asynccontextmanager
    async def _session(
        self, node: Node, what: str
    ) -> AsyncIterator[tuple[Connection, Callable[[], None]]]:
        """A connection to ``node`` for ``what`` (clear, scan), and a function to call on
        progress: the timeout bounds each wait for progress, not the whole operation."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout) as deadline:

                def progress() -> None:
                    if self.timeout is not None:
                        deadline.reschedule(loop.time() + self.timeout)

                with self._errors(node):
                    async with node.connection() as conn:
                        yield conn, progress
        except TimeoutError as exc:
            raise BackendUnavailable(f"memcached {node.name} timed out in {what}") from exc

    async def _flush_node(self, node: Node) -> None:
        async with self._session(node, "flush_all") as (conn, _):
            conn.write(b"flush_all\r\n")
            node.round_trips += 1
            line = await read_line(conn)
            if line != b"OK":
                raise BackendError(f"flush_all on {node.name} answered {line!r}")

    async def _clear_node(self, node: Node) -> None:
        """Delete this namespace's keys on ``node``, found with ``lru_crawler metadump``."""
        prefix = self._wire_prefix.encode("ascii")
        async with self._session(node, "clear") as (conn, progress):
            keys = await self._dump_keys(node, conn, prefix, progress)
            for start in range(0, len(keys), 1000):
                chunk = keys[start : start + 1000]
                conn.write(b"".join(b"md %b\r\n" % k for k in chunk))
                node.round_trips += 1
                for _ in chunk:
                    reply = await conn.read_reply()
                    if reply.code not in (b"HD", b"NF"):
                        raise BackendError(f"delete on {node.name} answered {reply.line!r}")
                progress()

    async def _dump_keys(
        self, node: Node, conn: Connection, prefix: bytes, progress: Callable[[], None]
    ) -> list[bytes]:
        while True:
            # metadump must be alone in the server's read buffer: nothing pipelined with it
            conn.write(b"lru_crawler metadump all\r\n")
            node.round_trips += 1
            keys: list[bytes] = []
            line = await read_dump_line(conn)
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
                line = await read_dump_line(conn)
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

    async def _scan_node(self, node: Node, prefix: bytes) -> list[bytes]:
        """The wire keys on ``node`` that start with ``prefix`` (metadump; see `scan`)."""
        async with self._session(node, "scan") as (conn, progress):
            return await self._dump_keys(node, conn, prefix, progress)
        raise AssertionError("unreachable")  # pragma: no cover - for type checkers

    async def _close(self) -> None:
        for node in self._nodes:
            await node.close()
        # closing a transport finishes on the next loop iteration; let it, so no socket
        # outlives close()
        await asyncio.sleep(0)
