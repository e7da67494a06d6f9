"""NearCache: values held in the process, in front of a backend.

A near cache maps full (namespace-prefixed) keys to ``(bytes, expires_at)``, least recently
used first, bounded by a number of entries and a number of bytes. It holds bytes, never
instances: every read decodes its own instance, so no two callers ever share one.

How it stays fresh depends on the backend it is given to:

- Redis and Redis Cluster (`RedisBackend`): the server tells the process about every change
  under the backend's namespace (``CLIENT TRACKING … BCAST``, see ``_tracking.py``). Nothing
  is served, and nothing is filled, unless that channel is up; when it is lost the near cache
  empties itself.
- `SimpleBackend`: its storage lives in this process and only this backend object writes
  it, so the backend's own writes are all there is to follow.
- Memcached and the filesystem have no invalidation channel: entries live at most
  ``max_ttl`` seconds (bounded staleness), which is therefore required there.

Entries never outlive the row's TTL: a miss is read together with the key's remaining time to
live (``Backend._near_get``) and the entry expires when the row does, or sooner.

It hooks in where batches meet the backend (`Backend.execute`, and the executor for reads
answered before automatic batching), not in the models' write-row step: there it sees every
read and write, of models and of the raw byte API alike, with its keys and its outcome, and
backends know keys and bytes, which is all it holds.

The fill race: a read may be in flight while the key changes (an invalidation arrives, or a
write of this process starts). Each read and write in flight holds a token for its key; an
invalidation or an overlapping write kills the token, and a reply whose token died (or that
was sent before the last global reset, the *epoch*) is handed to its caller but never stored.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .._commands import KEEP_TTL, Add, Batch, Cas, Command, Get, Gets, Has, Replace, Set

if TYPE_CHECKING:
    from .base import Backend

__all__ = ["NearCache", "NearCacheStats"]

_get_running_loop = asyncio.get_running_loop
_monotonic = time.monotonic
_INF = math.inf

#: Bytes counted per entry on top of its key and value (the dict slot, the entry tuple, the
#: key and bytes object headers): what ``tracemalloc`` measures for a small entry on CPython
#: 3.11 (see benchmarks, "near cache memory per entry").
ENTRY_OVERHEAD = 270

_READS = (Get, Has, Gets)


class NearCacheStats(NamedTuple):
    """Counters of a `NearCache` (`NearCache.stats`)."""

    #: ``Get``/``Has`` answered in the process.
    hits: int
    #: ``Get``/``Has`` that went to the backend.
    misses: int
    #: Entries dropped because their key changed (server invalidation, a write of this
    #: process, a flush, or the invalidation channel being lost).
    invalidations: int
    #: Entries dropped to keep within ``max_entries`` / ``max_bytes``.
    evictions: int
    #: Entries held now (some may have expired and not been dropped yet).
    entries: int
    #: Bytes accounted to the entries held now (keys, values, `ENTRY_OVERHEAD` each).
    bytes: int
    #: Whether the near cache may answer reads now (False while the invalidation channel
    #: of a Redis backend is down or not yet established).
    serving: bool


class _Tracker(Protocol):
    """What a backend with an invalidation channel gives the near cache."""

    loop: asyncio.AbstractEventLoop | None

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def abandon(self) -> None: ...

    def may_fill(self, key: str) -> bool: ...


class _Token:
    """A read or write in flight on one key; ``dead`` once its reply must not be stored."""

    __slots__ = ("count", "dead")

    def __init__(self, dead: bool = False) -> None:
        self.count = 0
        self.dead = dead


def _seconds(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"NearCache {name} must be seconds (int/float/timedelta), not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"NearCache {name} must be a positive number of seconds: {value!r}")
    return float(value)


def _count(value: Any, name: str, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"NearCache {name} must be a positive int: {value!r}")
    return value


class NearCache:
    """Values held in the process in front of a backend: reads of keys held here are
    answered without a round trip (and without yielding to the event loop).

    Give one to a backend as ``near_cache=``; one `NearCache` serves one backend.

    - ``max_entries`` / ``max_bytes``: bounds; the least recently used entries go first
      (``max_bytes=None``: no byte bound). A value larger than ``max_bytes`` is not held.
    - ``max_ttl``: the longest an entry is held, in seconds (or a timedelta). Required on
      Memcached and the filesystem, which cannot tell the process about changes made
      elsewhere: it bounds how stale a read can be there. On Redis the server sends
      invalidations and ``max_ttl`` is optional.
    - ``heartbeat`` / ``heartbeat_timeout`` (Redis): the invalidation connection is pinged
      every ``heartbeat`` seconds; no answer within ``heartbeat_timeout`` counts as a lost
      channel (the near cache empties itself and serves nothing until it is back).

    Entries never outlive the row's TTL. Every read decodes its own instance from the bytes
    held here, so instances are never shared.

    Example::

        backend = co.RedisBackend(
            "redis://127.0.0.1:6379/0",
            namespace="app",
            near_cache=co.NearCache(max_entries=100_000, max_bytes=256 * 2**20),
        )
        user = await User.get_by_id(1)      # first read: one round trip, then held
        user = await User.get_by_id(1)      # answered in the process
        print(backend.near_cache.stats())
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        max_bytes: int | None = 64 * 2**20,
        max_ttl: float | datetime.timedelta | None = None,
        *,
        heartbeat: float = 1.0,
        heartbeat_timeout: float = 3.0,
    ) -> None:
        self.max_entries: int = _count(max_entries, "max_entries", False)  # type: ignore[assignment]
        self.max_bytes = _count(max_bytes, "max_bytes", True)
        self.max_ttl = _seconds(max_ttl, "max_ttl")
        self.heartbeat: float = _seconds(heartbeat, "heartbeat")  # type: ignore[assignment]
        self.heartbeat_timeout: float = _seconds(heartbeat_timeout, "heartbeat_timeout")  # type: ignore[assignment]
        if heartbeat is None or heartbeat_timeout is None:
            raise ValueError("NearCache heartbeat and heartbeat_timeout cannot be None")
        # full key -> (value, expires_at on the monotonic clock, accounted size)
        self._data: OrderedDict[str, tuple[bytes, float, int]] = OrderedDict()
        self._bytes = 0
        self._pending: dict[str, _Token] = {}
        self._epoch = 0
        self._hits = 0
        self._misses = 0
        self._invalidations = 0
        self._evictions = 0
        self._received = 0  # keys named by invalidation messages, held or not
        self._backend: Backend | None = None
        self._tracker: _Tracker | None = None
        # Whether reads may be answered here, and in which loop (tracked backends only: the
        # channel belongs to one event loop).
        self._serving = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._store_writes = True
        self._waiters: list[asyncio.Future[None]] = []

    # -- binding ----------------------------------------------------------------------------

    def _bind(self, backend: Backend, tracker: _Tracker | None, *, local: bool) -> None:
        """Attach to ``backend``. ``tracker``: its invalidation channel (Redis); ``local``:
        its storage is this process's own (SimpleBackend), so its writes are all changes."""
        from .._exceptions import ConfigurationError

        if self._backend is not None:
            raise ConfigurationError(
                f"this NearCache already serves {self._backend!r}: give each backend its own"
            )
        if tracker is None and not local and self.max_ttl is None:
            raise ConfigurationError(
                f"{type(backend).__name__} cannot tell this process about changes made "
                "elsewhere: give its NearCache a max_ttl (the longest a read may be stale)"
            )
        self._backend = backend
        self._tracker = tracker
        if tracker is not None:
            self._serving = False
            # Own writes drop their entries: the server's invalidation for each follows
            # anyway, and a value stored on reply could be overtaken by another host's
            # write whose invalidation arrived before that reply.
            self._store_writes = False

    # -- public -----------------------------------------------------------------------------

    def stats(self) -> NearCacheStats:
        """Counters: hits, misses, invalidations, evictions, entries, bytes, serving.

        Example::

            s = backend.near_cache.stats()
            print(f"hit rate {s.hits / max(1, s.hits + s.misses):.0%}, {s.entries} entries")
        """
        return NearCacheStats(
            self._hits,
            self._misses,
            self._invalidations,
            self._evictions,
            len(self._data),
            self._bytes,
            self._may_serve(),
        )

    async def wait_ready(self, timeout: float | None = 5.0) -> bool:  # noqa: ASYNC109
        """Start the invalidation channel if needed and wait until reads can be answered
        here; False if that did not happen within ``timeout`` seconds. Without a channel
        (SimpleBackend, Memcached, filesystem) it is always ready.

        Example::

            async with co.RedisBackend(url, near_cache=co.NearCache()) as backend:
                assert await backend.near_cache.wait_ready()
        """
        self._ensure_running()
        if self._may_serve():
            return True
        fut: asyncio.Future[None] = _get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            return False
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)
        return self._may_serve()

    def clear(self) -> None:
        """Drop every entry (reads in flight are not stored either).

        Example::

            backend.near_cache.clear()
        """
        self._reset()

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        s = self.stats()
        return f"<NearCache entries={s.entries} bytes={s.bytes} serving={s.serving}>"

    # -- state changes from the invalidation channel ------------------------------------------

    def _reset(self) -> None:
        """Forget everything, and every read or write in flight."""
        self._invalidations += len(self._data)
        self._data.clear()
        self._bytes = 0
        self._epoch += 1
        for token in self._pending.values():
            token.dead = True
        self._pending.clear()

    def _channel_up(self, loop: asyncio.AbstractEventLoop) -> None:
        self._reset()
        self._loop = loop
        self._serving = True
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)

    def _channel_down(self) -> None:
        self._serving = False
        self._reset()

    def _invalidate(self, keys: Iterable[str] | None) -> None:
        """The server says these keys changed (None: everything, as after FLUSHALL)."""
        if keys is None:
            self._reset()
            return
        data = self._data
        pending = self._pending
        for key in keys:
            self._received += 1
            token = pending.pop(key, None)
            if token is not None:
                token.dead = True
            entry = data.pop(key, None)
            if entry is not None:
                self._bytes -= entry[2]
                self._invalidations += 1

    # -- lookups ----------------------------------------------------------------------------

    def _may_serve(self) -> bool:
        if not self._serving:
            return False
        loop = self._loop
        if loop is None:
            return True
        try:
            return loop is _get_running_loop()
        except RuntimeError:
            return False

    def answer(self, prefix: str, commands: Sequence[Command]) -> list[Any] | None:
        """The results of a batch of ``Get``/``Has`` when every key is held here, else None
        (nothing counted). Never awaits: the executor calls it before anything else."""
        if not self._serving:
            return None
        loop = self._loop
        if loop is not None and loop is not _get_running_loop():
            return None
        data = self._data
        now = _monotonic()
        if len(commands) == 1:  # the hot case: one row by its key
            cmd = commands[0]
            kind = type(cmd)
            if kind is not Get and kind is not Has:
                return None
            key = prefix + cmd[0]
            entry = data.get(key)
            if entry is None or entry[1] <= now:
                return None
            data.move_to_end(key)
            self._hits += 1
            return [entry[0] if kind is Get else True]
        out: list[Any] = []
        for cmd in commands:
            kind = type(cmd)
            if kind is not Get and kind is not Has:
                return None
            entry = data.get(prefix + cmd[0])
            if entry is None or entry[1] <= now:
                return None
            out.append(entry[0] if kind is Get else True)
        move = data.move_to_end
        for cmd in commands:
            move(prefix + cmd[0])
        self._hits += len(out)
        return out

    def _lookup(self, key: str, now: float) -> tuple[bytes, float, int] | None:
        data = self._data
        entry = data.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del data[key]
            self._bytes -= entry[2]
            return None
        data.move_to_end(key)
        return entry

    # -- filling ----------------------------------------------------------------------------

    def _store(self, key: str, value: bytes, expires: float) -> None:
        size = len(key) + len(value) + ENTRY_OVERHEAD
        max_bytes = self.max_bytes
        if max_bytes is not None and size > max_bytes:
            self._drop(key)
            return
        data = self._data
        old = data.pop(key, None)
        if old is not None:
            self._bytes -= old[2]
        data[key] = (value, expires, size)
        self._bytes += size
        max_entries = self.max_entries
        while len(data) > max_entries or (max_bytes is not None and self._bytes > max_bytes):
            _, evicted = data.popitem(last=False)
            self._bytes -= evicted[2]
            self._evictions += 1

    def _drop(self, key: str) -> None:
        entry = self._data.pop(key, None)
        if entry is not None:
            self._bytes -= entry[2]
            self._invalidations += 1

    def _begin_read(self, key: str) -> _Token:
        token = self._pending.get(key)
        if token is None:
            token = self._pending[key] = _Token()
        token.count += 1
        return token

    def _begin_write(self, key: str) -> _Token:
        """A write of this process starts: its entry goes now, and every read or write of the
        key in flight may no longer store (nor may this one, if it overlaps them)."""
        self._drop(key)
        old = self._pending.get(key)
        if old is not None:
            old.dead = True
        token = self._pending[key] = _Token(dead=old is not None)
        token.count += 1
        return token

    def _end(self, key: str, token: _Token) -> None:
        token.count -= 1
        if token.count <= 0 and self._pending.get(key) is token:
            del self._pending[key]

    def _expiry(self, sent: float, remaining: float | None) -> float:
        expires = _INF if remaining is None else sent + remaining
        if self.max_ttl is not None:
            expires = min(expires, sent + self.max_ttl)
        return expires

    def _ensure_running(self) -> None:
        tracker = self._tracker
        if tracker is None:
            return
        loop = _get_running_loop()
        if tracker.loop is loop:
            return
        if tracker.loop is not None:
            # The backend moved to another event loop: the old channel belongs to the old
            # loop (usually closed by now) and cannot be awaited from here.
            tracker.abandon()
            self._channel_down()
        tracker.start()

    # -- the batch path ---------------------------------------------------------------------

    async def run(
        self, backend: Backend, batch: Batch, send: Callable[[Batch], Awaitable[list[Any]]]
    ) -> tuple[list[Any], int]:
        """Run ``batch`` (keys already prefixed) through the near cache; ``send`` runs a batch
        on the backend. Returns the results and how many were answered here."""
        self._ensure_running()
        commands = batch.commands
        if batch.atomic:
            return await self._run_writes(batch, send), 0
        if any(type(c) not in _READS for c in commands):
            return await self._run_mixed(batch, send)
        serving = self._may_serve()
        n = len(commands)
        results: list[Any] = [None] * n
        gets: list[int] = []
        others: list[int] = []
        now = _monotonic()
        hits = 0
        for i, cmd in enumerate(commands):
            kind = type(cmd)
            if kind is Gets:
                others.append(i)
                continue
            if serving:
                entry = self._lookup(cmd[0], now)
                if entry is not None:
                    results[i] = entry[0] if kind is Get else True
                    hits += 1
                    continue
            (gets if kind is Get else others).append(i)
        self._hits += hits
        self._misses += n - hits - sum(1 for i in others if type(commands[i]) is Gets)
        if not gets and not others:
            return results, hits
        get_keys = list(dict.fromkeys(commands[i][0] for i in gets))
        epoch = self._epoch
        tokens = [self._begin_read(k) for k in get_keys]
        try:
            sent = _monotonic()
            fetched: list[tuple[Any, float | None]]
            other_results: list[Any]
            if gets and others:
                fetched, other_results = await asyncio.gather(
                    backend._near_get(get_keys), send(Batch(tuple(commands[i] for i in others)))
                )
            elif gets:
                fetched, other_results = await backend._near_get(get_keys), []
            else:
                fetched, other_results = [], await send(Batch(tuple(commands[i] for i in others)))
            tracker = self._tracker
            fill = epoch == self._epoch and self._may_serve()
            by_key: dict[str, Any] = {}
            for key, token, (value, remaining) in zip(get_keys, tokens, fetched, strict=True):
                by_key[key] = value
                if (
                    fill
                    and not token.dead
                    and isinstance(value, bytes)
                    and (remaining is None or remaining > 0)
                    and (tracker is None or tracker.may_fill(key))
                ):
                    self._store(key, value, self._expiry(sent, remaining))
        finally:
            for key, token in zip(get_keys, tokens, strict=True):
                self._end(key, token)
        for i in gets:
            results[i] = by_key[commands[i][0]]
        for i, result in zip(others, other_results, strict=True):
            results[i] = result
        return results, hits

    async def _run_mixed(
        self, batch: Batch, send: Callable[[Batch], Awaitable[list[Any]]]
    ) -> tuple[list[Any], int]:
        """Reads and writes merged in one batch (automatic batching): reads of keys that no
        write of the batch touches are answered here when held (commands on different keys
        may run in any order), the rest is sent. Misses are not held: their expiry is not
        read on this path."""
        commands = batch.commands
        reads = sum(1 for c in commands if type(c) is Get or type(c) is Has)
        written = {c[0] for c in commands if type(c) not in _READS}
        now = _monotonic()
        local: dict[int, Any] = {}
        if self._may_serve():
            for i, cmd in enumerate(commands):
                kind = type(cmd)
                if (kind is Get or kind is Has) and cmd[0] not in written:
                    entry = self._lookup(cmd[0], now)
                    if entry is not None:
                        local[i] = entry[0] if kind is Get else True
        self._hits += len(local)
        self._misses += reads - len(local)
        if not local:
            return await self._run_writes(batch, send), 0
        rest = [i for i in range(len(commands)) if i not in local]
        sent = await self._run_writes(Batch(tuple(commands[i] for i in rest)), send)
        results: list[Any] = [None] * len(commands)
        for i, value in local.items():
            results[i] = value
        for i, value in zip(rest, sent, strict=True):
            results[i] = value
        return results, len(local)

    async def _run_writes(
        self, batch: Batch, send: Callable[[Batch], Awaitable[list[Any]]]
    ) -> list[Any]:
        """A batch with writes (or atomic): sent whole; every key it writes is dropped now,
        and, where this process's writes are all there is to follow, stored on success."""
        written: list[tuple[int, Command, _Token]] = []
        for i, cmd in enumerate(batch.commands):
            if type(cmd) not in _READS:
                written.append((i, cmd, self._begin_write(cmd[0])))
        epoch = self._epoch
        stored: set[str] = set()
        try:
            sent = _monotonic()
            results = await send(batch)
            if self._store_writes and epoch == self._epoch:
                latest: dict[str, int] = {cmd[0]: i for i, cmd, _ in written}
                for i, cmd, token in written:
                    if token.dead or latest[cmd[0]] != i:
                        continue
                    value = _written_value(cmd, results[i])
                    if value is None:
                        self._drop(cmd[0])
                    else:
                        self._store(cmd[0], value[0], self._expiry(sent, value[1]))
                        stored.add(cmd[0])
        finally:
            # Whatever happened (an error, a cancellation: the outcome is unknown), a key
            # this batch wrote holds nothing but what the write itself stored: a read that
            # overlapped the write may have stored the old value meanwhile.
            for _, cmd, token in written:
                if cmd[0] not in stored:
                    self._drop(cmd[0])
                token.dead = True
                self._end(cmd[0], token)
        return results

    # -- lifecycle --------------------------------------------------------------------------

    async def _close(self) -> None:
        """Stop the invalidation channel (a later read starts it again) and forget all."""
        tracker = self._tracker
        if tracker is not None:
            await tracker.stop()
            self._channel_down()
        self._reset()


def _written_value(cmd: Command, result: Any) -> tuple[bytes, float | None] | None:
    """(value, ttl) a successful write left under its key, if known; None: drop the entry."""
    if result is not True:
        return None
    if isinstance(cmd, Set | Add | Replace | Cas):
        ttl = cmd.ttl
        if ttl is KEEP_TTL:
            return None
        return cmd.value, ttl
    return None  # Delete, Incr, Touch: dropped
