"""Secondary indexes of the in-process backend: `IndexedWrite` and `IndexRead` on
in-process structures, run inside the backend's (synchronous, hence atomic) batch loop.

Per index bucket: each row's entries (so a write or delete replaces them without reading the
row), a set of row keys per equality value, a sorted list of ``(value, key)`` per ordered
field (`sortedcontainers`), the holder of each unique value, and the rows' expiry times.
Every read checks the liveness of the rows it lists (an expired row is never listed or
counted, cleaned up or not); each write also reclaims a few expired rows' entries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import Any

from sortedcontainers import SortedKeyList  # type: ignore[import-untyped]

from .._commands import KEEP_TTL, NOT_READ, IndexedWrite, IndexRead, IndexTerm
from .._exceptions import IntegrityError

_SWEEP = 4  # expired rows reclaimed per write
_first = itemgetter(0)


class _Bucket:
    __slots__ = ("eq", "expiry", "ordered", "rows", "unique")

    def __init__(self) -> None:
        self.rows: dict[str, tuple[tuple[IndexTerm, ...], tuple[str, ...], float]] = {}
        self.eq: dict[tuple[str, str], set[str]] = {}
        self.ordered: dict[tuple[str, str], Any] = {}
        self.unique: dict[str, str] = {}
        self.expiry: Any = SortedKeyList(key=_first)

    def add(
        self, key: str, terms: tuple[IndexTerm, ...], unique: tuple[str, ...], exp: float
    ) -> None:
        self.rows[key] = (terms, unique, exp)
        for term in terms:
            if term.kind == "eq":
                self.eq.setdefault((term.field, str(term.value)), set()).add(key)
            else:
                lst = self.ordered.get((term.field, term.kind))
                if lst is None:
                    lst = self.ordered[(term.field, term.kind)] = SortedKeyList(key=_first)
                lst.add((term.value, key))
        for u in unique:
            self.unique[u] = key
        if exp != float("inf"):
            self.expiry.add((exp, key))

    def remove(self, key: str) -> None:
        entry = self.rows.pop(key, None)
        if entry is None:
            return
        terms, unique, exp = entry
        for term in terms:
            if term.kind == "eq":
                members = self.eq.get((term.field, str(term.value)))
                if members is not None:
                    members.discard(key)
                    if not members:
                        del self.eq[(term.field, str(term.value))]
            else:
                lst = self.ordered.get((term.field, term.kind))
                if lst is not None:
                    lst.discard((term.value, key))
        for u in unique:
            if self.unique.get(u) == key:
                del self.unique[u]
        if exp != float("inf"):
            self.expiry.discard((exp, key))


def _item(cmd: IndexRead, key: str, value: Any, entry: list[Any], n: int) -> tuple[Any, ...]:
    if not cmd.rows:
        return (key, value)
    return (key, value, entry[0] if n < cmd.rows else NOT_READ)


class MemoryIndexes:
    """The index buckets of one in-process backend."""

    def __init__(self, live: Callable[[str, float], list[Any] | None]) -> None:
        self._live = live
        self.buckets: dict[str, _Bucket] = {}

    def clear(self, prefix: str) -> None:
        for name in [n for n in self.buckets if n.startswith(prefix)]:
            del self.buckets[name]

    def write(
        self,
        cmd: IndexedWrite,
        index: str,
        now: float,
        store: Callable[[str, bytes, float | None], None],
        delete: Callable[[str], None],
    ) -> Any:
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = _Bucket()
        self._sweep(bucket, now)
        key = cmd.key
        entry = self._live(key, now)
        mode = cmd.mode
        if mode == "delete":
            bucket.remove(key)
            if entry is None:
                return False
            delete(key)
            return True
        if mode == "touch":
            if entry is None:
                return False
            ttl = cmd.ttl
            entry[1] = None if ttl is None or ttl is KEEP_TTL else now + ttl
            old = bucket.rows.get(key)
            if old is not None:
                bucket.remove(key)
                exp = float("inf") if entry[1] is None else entry[1]
                bucket.add(key, old[0], old[1], exp)
            return True
        if (mode == "add" and entry is not None) or (mode in ("replace", "cas") and entry is None):
            return False
        if mode == "cas" and entry is not None and entry[2] != cmd.token:
            return False
        for u in cmd.unique:
            holder = bucket.unique.get(u)
            if holder is not None and holder != key and self._live(holder, now) is not None:
                err = IntegrityError(f"unique value taken by {holder!r}")
                err.unique = u  # type: ignore[attr-defined]
                return err
        ttl = cmd.ttl
        if ttl is KEEP_TTL:
            expires = entry[1] if entry is not None else None
        else:
            expires = None if ttl is None else now + ttl
        store(key, cmd.value, expires)
        bucket.remove(key)
        bucket.add(key, cmd.terms, cmd.unique, float("inf") if expires is None else expires)
        return True

    def _sweep(self, bucket: _Bucket, now: float) -> None:
        expiry = bucket.expiry
        for _ in range(_SWEEP):
            if not expiry or expiry[0][0] > now:
                return
            _, key = expiry[0]
            if self._live(key, now) is None:
                bucket.remove(key)
            else:  # rewritten with a new expiry meanwhile: its entry is stale
                expiry.pop(0)

    def read(self, cmd: IndexRead, prefix: str, now: float) -> Any:
        bucket = self.buckets.get(cmd.key)
        if bucket is None:
            return 0 if cmd.count_only else []
        cut = len(prefix)
        dead: list[str] = []
        try:
            if cmd.op == "eq":
                count = 0
                found: list[tuple[str, Any]] = []
                for text in cmd.values:
                    for key in bucket.eq.get((cmd.field, text), ()):
                        entry = self._live(key, now)
                        if entry is None:
                            dead.append(key)
                        elif cmd.count_only:
                            count += 1
                        else:
                            found.append(_item(cmd, key[cut:], None, entry, len(found)))
                return count if cmd.count_only else found
            skip, left = cmd.offset, cmd.limit
            count = 0
            out: list[tuple[str, Any]] = []
            for value, key in self._walk(bucket, cmd):
                if left is not None and left <= 0:
                    break
                entry = self._live(key, now)
                if entry is None:
                    dead.append(key)
                    continue
                if skip:
                    skip -= 1
                    continue
                if cmd.count_only:
                    count += 1
                else:
                    out.append(_item(cmd, key[cut:], value, entry, len(out)))
                if left is not None:
                    left -= 1
            return count if cmd.count_only else out
        finally:
            for key in dead:
                bucket.remove(key)

    @staticmethod
    def _walk(bucket: _Bucket, cmd: IndexRead) -> Iterator[tuple[Any, str]]:
        kind = "lex" if cmd.op == "prefix" else cmd.kind
        lst = bucket.ordered.get((cmd.field, kind))
        if not lst:
            return iter(())
        if cmd.op == "prefix":
            p = cmd.values[0]
            start = lst.bisect_key_left(p)
            end = start
            n = len(lst)
            while end < n and lst[end][0].startswith(p):
                end += 1
        else:
            lo, hi = cmd.lo, cmd.hi
            if lo is None:
                start = 0
            elif cmd.lo_open:
                start = lst.bisect_key_right(lo)
            else:
                start = lst.bisect_key_left(lo)
            if hi is None:
                end = len(lst)
            elif cmd.hi_open:
                end = lst.bisect_key_left(hi)
            else:
                end = lst.bisect_key_right(hi)
        if start >= end:
            return iter(())
        return lst.islice(start, end, reverse=cmd.desc)  # type: ignore[no-any-return]
