"""SimpleBackend: an in-process byte store with TTLs and an optional LRU bound."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from .._commands import (
    Add,
    Batch,
    Capabilities,
    Cas,
    Command,
    Get,
    Incr,
    IndexedWrite,
    IndexRead,
    Replace,
    Set,
)
from .._exceptions import ValueTooLargeError
from ._memindex import MemoryIndexes
from ._semantics import UNCHANGED, Semantics
from .base import Backend, NothingRan, check_scan_args

if TYPE_CHECKING:
    from .near import NearCache

_WRITES = (Set, Add, Replace, Cas, Incr, IndexedWrite)
_JUST_GET = {Get}


class _TooManyKeys(ValueTooLargeError, NothingRan):
    """A batch writes more distinct keys than ``max_entries``; raised before it runs."""


class SimpleBackend(Backend):
    """An in-process store: the default for tests, notebooks and the demo.

    Every batch runs without yielding to the event loop, so it is atomic with respect to
    other tasks. ``max_entries`` bounds the number of keys; the least recently used keys are
    evicted to make room, but never a key written by the same batch (a batch that writes more
    distinct keys than the bound is refused whole with `ValueTooLargeError`, before anything
    is written; batches of concurrent callers merged by automatic batching are then run one
    by one, so only the caller whose batch is too large gets the error). Expired keys make
    room first: a live key is never evicted while an expired one holds a slot.

    Example::

        backend = co.SimpleBackend(max_entries=10_000)
        await backend.set("k", b"v", ttl=30)
    """

    capabilities = Capabilities(atomic_batch=True, native_cas=True, listable=True, indexes=True)
    url_schemes = ("memory",)
    # Its storage is this object's own: a near cache follows its writes and needs no max_ttl.
    _near_local = True

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SimpleBackend:
        """Build from ``memory://`` (``?max_entries=N``); keyword arguments win over the URL.

        Example::

            backend = co.SimpleBackend.from_url("memory://?max_entries=1000")
        """
        from .._urls import no_leftovers

        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        if "max_entries" in query:
            options.setdefault("max_entries", int(query.pop("max_entries")))
        no_leftovers(url, query)
        return cls(**options)

    def __init__(
        self,
        *,
        max_entries: int | None = None,
        namespace: str = "",
        auto_batch: bool = True,
        near_cache: NearCache | None = None,
    ) -> None:
        super().__init__(
            namespace=namespace, timeout=None, auto_batch=auto_batch, near_cache=near_cache
        )
        if max_entries is not None and (
            isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1
        ):
            raise ValueError(f"max_entries must be a positive int or None: {max_entries!r}")
        self.max_entries = max_entries
        # key -> [value, expires_at (monotonic) or None, version]
        self._data: OrderedDict[str, list[Any]] = OrderedDict()
        self._versions = itertools.count(1)
        # With max_entries: (expires_at, version, key) of every entry written with a TTL, so
        # that expired entries are found and dropped before a live key is evicted. Entries
        # overwritten since are recognised by their version (or expiry) and skipped.
        self._expiries: list[tuple[float, int, str]] = []
        self._indexes = MemoryIndexes(self._live)
        self._semantics = Semantics(self._versions.__next__, never=None)

    def _live(self, key: str, now: float) -> list[Any] | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires = entry[1]
        if expires is not None and expires <= now:
            del self._data[key]
            return None
        return entry

    def _store(self, key: str, value: bytes, expires: float | None) -> None:
        self._put(key, value, expires, next(self._versions))

    def _put(self, key: str, value: bytes, expires: float | None, version: int) -> None:
        data = self._data
        data[key] = [value, expires, version]
        data.move_to_end(key)
        if self.max_entries is not None:
            if expires is not None:
                self._note_expiry(expires, version, key)
            if len(data) > self.max_entries:
                self._drop_expired()
            while len(data) > self.max_entries:
                data.popitem(last=False)

    def _note_expiry(self, expires: float, version: int, key: str) -> None:
        heap = self._expiries
        heapq.heappush(heap, (expires, version, key))
        if len(heap) > 2 * len(self._data) + 64:
            # Mostly superseded entries: rebuild from the live data.
            heap[:] = [(e[1], e[2], k) for k, e in self._data.items() if e[1] is not None]
            heapq.heapify(heap)

    def _drop_expired(self) -> None:
        """Delete every expired entry (found through the expiry heap, soonest first)."""
        heap = self._expiries
        data = self._data
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            expires, version, key = heapq.heappop(heap)
            entry = data.get(key)
            if entry is not None and entry[2] == version and entry[1] == expires:
                del data[key]

    def _read(self, key: str) -> bytes | None:
        """The value of full ``key`` now (None: absent or expired), refreshing its LRU place."""
        data = self._data
        entry = data.get(key)
        if entry is None:
            return None
        expires = entry[1]
        if expires is not None and expires <= time.monotonic():
            del data[key]
            return None
        data.move_to_end(key)
        value: bytes = entry[0]
        return value

    async def execute(self, batch: Batch) -> list[Any]:
        """`Backend.execute`; a batch of reads only (`Get`), without a near cache, is
        answered here directly (the same answer, without the namespaced copy of the batch)."""
        commands = batch.commands
        if self.near_cache is None and self._direct_reads:
            if len(commands) == 1:
                if type(commands[0]) is Get:
                    return [self._read(self._prefix + commands[0][0])]
            elif {*map(type, commands)} == _JUST_GET:
                return self._read_many(commands)
        return await super().execute(batch)

    def _read_many(self, commands: tuple[Command, ...]) -> list[bytes | None]:
        """`_read` of every key of a batch of `Get` (the namespace added here), in order."""
        prefix = self._prefix
        data = self._data
        move_to_end = data.move_to_end
        now = time.monotonic()
        results: list[bytes | None] = []
        append = results.append
        for command in commands:
            key = prefix + command[0]
            entry = data.get(key)
            if entry is None:
                append(None)
            elif entry[1] is not None and entry[1] <= now:
                del data[key]
                append(None)
            else:
                move_to_end(key)
                append(entry[0])
        return results

    #: Whether `_execute` is this class's own (a subclass that overrides it sees every batch).
    _direct_reads: ClassVar[bool] = True
    _reads_now = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._direct_reads = cls._reads_now = cls._execute is SimpleBackend._execute

    def _read_now(self, key: str) -> bytes | None:
        return self._read(self._prefix + key)

    async def _execute(self, batch: Batch) -> list[Any]:
        commands = batch.commands
        if self.max_entries is not None:
            written = {c.key for c in commands if isinstance(c, _WRITES)}
            if len(written) > self.max_entries:
                raise _TooManyKeys(
                    f"batch writes {len(written)} keys, more than max_entries={self.max_entries}"
                    "; nothing was written"
                )
        now = time.monotonic()
        data = self._data
        results: list[Any] = []
        append = results.append
        apply = self._semantics.apply
        versions = self._versions
        for cmd in commands:
            kind = type(cmd)
            key = cmd.key
            if kind is Get:  # the hot path, inline (and a read refreshes the key's LRU place)
                entry = self._live(key, now)
                if entry is None:
                    append(None)
                else:
                    data.move_to_end(key)
                    append(entry[0])
            elif kind is Set:  # the other hot path: what Semantics.apply does for a Set
                ttl = cmd.ttl  # type: ignore[union-attr]
                expires = None if ttl is None else now + ttl  # type: ignore[operator]
                self._put(key, cmd.value, expires, next(versions))  # type: ignore[union-attr]
                append(True)
            elif kind is IndexedWrite:
                append(
                    self._indexes.write(
                        cmd,  # type: ignore[arg-type]
                        self._prefix + cmd.bucket,  # type: ignore[union-attr]
                        now,
                        self._store,
                        data.__delitem__,
                    )
                )
            elif kind is IndexRead:
                append(self._indexes.read(cmd, self._prefix, now))  # type: ignore[arg-type]
            else:
                result, new = apply(cmd, self._live(key, now), now)
                if new is None:
                    del data[key]
                elif new is not UNCHANGED:
                    self._put(key, new.value, new.expires, new.token)
                append(result)
        return results

    async def _near_get(self, keys: list[str]) -> list[tuple[Any, float | None]]:
        now = time.monotonic()
        out: list[tuple[Any, float | None]] = []
        for key in keys:
            entry = self._live(key, now)
            if entry is None:
                out.append((None, 0.0))
            else:
                self._data.move_to_end(key)
                out.append((entry[0], None if entry[1] is None else entry[1] - now))
        return out

    async def _clear(self) -> None:
        self._indexes.clear(self._prefix)
        if not self._prefix:
            self._data.clear()
            return
        for key in [k for k in self._data if k.startswith(self._prefix)]:
            del self._data[key]

    async def scan(self, prefix: str = "", count: int = 500) -> AsyncIterator[str]:
        """Every live key starting with ``prefix`` (without the namespace), in insertion
        order of a snapshot taken when the scan starts; yields to the event loop every
        ``count`` keys. A key deleted or expired since the snapshot is skipped.

        Example::

            keys = [key async for key in backend.scan("user:")]
        """
        check_scan_args(prefix, count)
        start = self._prefix + prefix
        cut = len(self._prefix)
        snapshot = [k for k in self._data if k.startswith(start)]
        for i, key in enumerate(snapshot, 1):
            if self._live(key, time.monotonic()) is not None:
                yield key[cut:]
            if i % count == 0:
                await asyncio.sleep(0)

    def __len__(self) -> int:
        now = time.monotonic()
        return sum(1 for k in list(self._data) if self._live(k, now) is not None)
