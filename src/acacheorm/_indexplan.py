"""Index plans of queries by field: which index a filter reads, counts without rows, and
``order_by`` + ``limit`` walks of an ordered index.

Every source here hands out candidate keys; `FilterQuery` reads the rows and re-checks the
whole condition on each, so an index entry can never produce a wrong row. Counts read no
rows only when the index answers the whole condition exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._commands import NOT_READ, Batch, Get, IndexRead
from ._executor import Plan
from ._index import IndexedField, IndexSpec, canonical, exact_score, is_nan, score
from ._lookups import And, Lookup

if TYPE_CHECKING:
    from ._schema import Schema

PAGE = 500
_RANGE = {"lt", "lte", "gt", "gte", "range"}


def _text(f: IndexedField, value: Any) -> str:
    if value is not None and f.ordered == "num" and not isinstance(f.field.python_type, tuple):
        if f.field.python_type is float:
            value = float(value)
    return canonical(value)


def read_for(spec: IndexSpec, lk: Lookup) -> tuple[IndexRead, bool, str] | None:
    """The index read (bucket key left blank) that selects the candidates of ``lk``,
    whether it is exact (counts need no rows), and a description; None if no index helps."""
    f = spec.field_for(lk.name)
    if f is None:
        return None
    op, value = lk.lookup, lk.value
    if is_nan(value) or (op == "range" and any(map(is_nan, value))):
        return None  # NaN equals nothing and has no order: the rows decide
    # An equality read says whether the field is numeric and ordered: a backend may answer
    # it from the ordered entries (Redis keeps no equality entries for most such values).
    eq_kind = "num" if f.ordered == "num" else "eq"
    if op == "exact":
        read = IndexRead("", "eq", f.name, (_text(f, value),), eq_kind)
        return read, True, f"{f.name} == {value!r}"
    if op == "in" and isinstance(value, frozenset):
        if any(map(is_nan, value)):
            return None
        # None is never "in" anything (as in SQL): only the other values select rows.
        texts = tuple(sorted({_text(f, v) for v in value if v is not None}))
        read = IndexRead("", "eq", f.name, texts, eq_kind)
        return read, True, f"{f.name} in {len(texts)} value(s)"
    if op == "isnull" and value is True:
        return IndexRead("", "eq", f.name, ("n",), eq_kind), True, f"{f.name} is null"
    if f.ordered is None:
        return None
    if op == "startswith" and f.ordered == "lex":
        return IndexRead("", "prefix", f.name, (value,)), True, f"{f.name} starts with {value!r}"
    if op not in _RANGE:
        return None
    lo = hi = None
    lo_open = hi_open = False
    if op == "range":
        lo, hi = value
    elif op in ("gt", "gte"):
        lo, lo_open = value, op == "gt"
    else:
        hi, hi_open = value, op == "lt"
    exact = True
    if f.ordered == "num":
        exact = all(v is None or exact_score(v) for v in (lo, hi))
        # A rounded score: keep the bound inclusive, the rows re-check it.
        lo_open = lo_open and exact
        hi_open = hi_open and exact
        lo = None if lo is None else score(lo)
        hi = None if hi is None else score(hi)
    read = IndexRead("", "range", f.name, (), f.ordered, lo, hi, lo_open, hi_open)
    return read, exact, f"{f.name} {op} {value!r}"


def best_read(spec: IndexSpec, where: And) -> tuple[IndexRead, bool, str] | None:
    """The most selective index read for the top-level lookups of ``where`` (equality
    before ranges); its ``exact`` is True only when it answers the whole condition."""
    found: list[tuple[int, tuple[IndexRead, bool, str]]] = []
    for part in where.parts:
        if isinstance(part, Lookup):
            got = read_for(spec, part)
            if got is not None:
                found.append((0 if got[0].op == "eq" else 1, got))
    if not found:
        return None
    found.sort(key=lambda t: t[0])
    read, exact, text = found[0][1]
    return read, exact and len(where.parts) == 1, text


def fan_out(spec: IndexSpec, read: IndexRead) -> list[IndexRead]:
    """One copy of ``read`` per bucket (one round trip per node on a cluster)."""
    rest = tuple(read)[1:]  # every field but the key (faster than _replace per bucket)
    new = tuple.__new__  # IndexRead without its constructor's call
    return [new(IndexRead, (name, *rest)) for name in spec.bucket_names()]


class IndexSource:
    """The candidate keys an index read selects."""

    def __init__(self, schema: Schema, spec: IndexSpec, read: IndexRead, text: str) -> None:
        self.schema = schema
        self.spec = spec
        self.read = read
        self.text = text
        self.keys: list[str] | None = None
        # the rows read along with the index, in step with ``keys`` (`NOT_READ`: not read)
        self.payloads: list[Any] = []
        self.page: tuple[list[str], list[Any]] = ([], [])

    def listing(self) -> None:
        return None

    def next_keys(self, listing: Any) -> Plan:
        if self.keys is None:
            # The first rows of each bucket come with the index read where the backend can
            # (Redis, memory): a small selection costs one round trip.
            cmds = fan_out(self.spec, self.read._replace(rows=PAGE))
            results = (yield [(self.schema.backend, Batch(tuple(cmds)))])[0]
            keys: list[str] = []
            payloads: list[Any] = []
            for result in results:
                if isinstance(result, BaseException):
                    raise result
                if not result:
                    continue
                # a backend adds the rows to every item of a read or to none (IndexRead)
                columns = list(zip(*result, strict=True))  # keys, values[, rows]
                keys += columns[0]
                payloads += columns[2] if len(columns) == 3 else [NOT_READ] * len(result)
            if len(set(keys)) < len(keys):  # a row selected twice: its first place
                first: dict[str, Any] = {}
                for key, payload in zip(keys, payloads, strict=True):
                    if first.get(key, NOT_READ) is NOT_READ:
                        first[key] = payload
                keys, payloads = list(first), list(first.values())
            self.keys, self.payloads = keys, payloads
        page, self.keys = self.keys[:PAGE], self.keys[PAGE:]
        self.page = (page, self.payloads[:PAGE])
        del self.payloads[:PAGE]
        return page

    def prefetched(self, keys: list[str]) -> list[Any]:
        """The rows read along with the index for the page of keys just listed, ``keys``
        (`NOT_READ` for the others)."""
        page, payloads = self.page
        assert keys is page, "prefetched() takes the page next_keys() gave last"
        return payloads

    def describe(self) -> str:
        return (
            f"index: {self.schema.model_name}.{self.text} (one index read per bucket, "
            f"{self.spec.buckets()} bucket(s), in one round trip per node, with the first {PAGE} "
            f"rows of each bucket where the backend can), then one multi-get round trip per "
            f"{PAGE} other selected rows"
        )


def count_plan(schema: Schema, spec: IndexSpec, read: IndexRead, limit: int | None = None) -> Plan:
    """The number of live rows an exact index read selects (counting stops at ``limit``
    per bucket), reading no rows."""
    cmds = fan_out(spec, read._replace(count_only=True, limit=limit))
    results = (yield [(schema.backend, Batch(tuple(cmds)))])[0]
    total = 0
    for result in results:
        if isinstance(result, BaseException):
            raise result
        total += result
    return total


def ordered_field(spec: IndexSpec, name: str) -> IndexedField | None:
    f = spec.fields.get(name)
    return f if f is not None and f.ordered is not None else None


def ordered_plan(
    schema: Schema,
    spec: IndexSpec,
    f: IndexedField,
    desc: bool,
    where: And,
    need: int,
    sort_key: Callable[[Any], Any],
) -> Plan:
    """The first ``need`` live rows matching ``where`` in ``sort_key`` order, whose first
    key is the ordered indexed field ``f``: walks the index in value order (a merge over the
    buckets), reading only rows that can be among the first ``need``; ties at the cut are
    all read, so the primary-key tie-break is exact."""
    bound_read: IndexRead | None = None
    others = 0
    for part in where.parts:
        if isinstance(part, Lookup) and bound_read is None:
            got = read_for(spec, part)
            if got is not None and spec.field_for(part.name) is f and got[0].op != "eq":
                bound_read = got[0]
                continue
        others += 1
    if bound_read is None:
        bound_read = IndexRead("", "range", f.name, (), f.ordered or "num")
    backend = schema.backend
    buckets = fan_out(spec, bound_read._replace(desc=desc))
    n = len(buckets)
    fetched: list[list[tuple[str, Any]]] = [[] for _ in range(n)]
    exhausted = [False] * n
    k = need + 1 + (need + 10 if others else 0)
    read_keys: set[str] = set()
    payload_of: dict[str, Any] = {}
    matched: list[Any] = []
    test = where.matches
    attname = f.attname

    def value_of(obj: Any) -> Any:
        v = obj.__dict__[attname]
        return score(v) if f.ordered == "num" else v

    def before(a: Any, b: Any) -> bool:  # a comes strictly before b in the walk
        return bool(a > b) if desc else bool(a < b)

    num = f.ordered == "num"
    nr = NOT_READ

    while True:
        wanted = [
            (
                b,
                buckets[b]._replace(
                    offset=len(fetched[b]), limit=k - len(fetched[b]), rows=k - len(fetched[b])
                ),
            )
            for b in range(n)
            if not exhausted[b] and len(fetched[b]) < k
        ]
        if wanted:
            results = (yield [(backend, Batch(tuple(c for _, c in wanted)))])[0]
            for (b, cmd), result in zip(wanted, results, strict=True):
                if isinstance(result, BaseException):
                    raise result
                if num:
                    rows = [(item[0], float(item[1])) for item in result]
                else:
                    rows = [(item[0], item[1]) for item in result]
                # a backend adds the rows to every item of a read or to none (IndexRead)
                if result and len(result[0]) == 3:
                    payload_of.update([(item[0], item[2]) for item in result if item[2] is not nr])
                fetched[b].extend(rows)
                if len(rows) < (cmd.limit or 0):
                    exhausted[b] = True
        open_ends = [fetched[b][-1][1] for b in range(n) if not exhausted[b] and fetched[b]]
        bound: Any = None
        if open_ends:
            bound = max(open_ends) if desc else min(open_ends)
        # (v, key) of the candidates not read yet that come before the bound (`before`,
        # inlined: this looks at every candidate fetched)
        if bound is None:
            cands = [(v, key) for fb in fetched for key, v in fb if key not in read_keys]
        elif desc:
            cands = [
                (v, key) for fb in fetched for key, v in fb if v > bound and key not in read_keys
            ]
        else:
            cands = [
                (v, key) for fb in fetched for key, v in fb if v < bound and key not in read_keys
            ]
        safe = sorted(cands, reverse=desc)
        if safe:
            if not others:  # every candidate matches: read just enough, plus the ties
                missing = need - len(matched)
                cut = min(len(safe), max(missing, 0))
                while 0 < cut < len(safe) and safe[cut][0] == safe[cut - 1][0]:
                    cut += 1
                safe = safe[: max(cut, 1)]
            keys = [key for _, key in safe]
            read_keys.update(keys)
            payloads = [payload_of.pop(key, NOT_READ) for key in keys]
            to_read = [i for i, p in enumerate(payloads) if p is NOT_READ]
            if to_read:
                batch = Batch(tuple(Get(keys[i]) for i in to_read))
                for i, got in zip(to_read, (yield [(backend, batch)])[0], strict=True):
                    payloads[i] = got
            for obj in schema.decode_many(keys, payloads):
                if obj is not None and test(obj):
                    matched.append(obj)
            matched.sort(key=sort_key)
            del matched[need + PAGE :]
        if len(matched) >= need:
            last: Any = value_of(matched[need - 1]) if need else None
            unread = False  # a candidate not read yet that does not come after the last row
            for fb in fetched:
                for key, v in fb:
                    if not (last > v if desc else last < v) and key not in read_keys:
                        unread = True
                        break
                if unread:
                    break
            if not unread and (bound is None or last is None or before(last, bound)):
                break
        if bound is None and not any(
            key not in read_keys for b in range(n) for key, _ in fetched[b]
        ):
            break
        if not safe:  # every candidate fetched ties with the bound: look much further
            k *= 4
    matched.sort(key=sort_key)
    return matched[:need]
