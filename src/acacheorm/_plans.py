"""Plans: what the compiler turns queries into, given the backend's capabilities.

A plan is a sans-I/O generator driven by the executor (`acacheorm._executor.run`, or
`acacheorm._executor.drive` with canned results in tests). This module holds the steps the
queries share: the capability checks made before anything is sent, the multi-get of rows by
key and the relation levels of ``select_related``/``prefetch`` (one batch per level), and
the candidate sources of queries by field (a scan of the model's keys, the keys a filter
names, an index).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._auto import counter_key
from ._base import State, state_of
from ._commands import (
    KEEP_TTL,
    Add,
    Batch,
    Capabilities,
    Cas,
    Command,
    Get,
    Gets,
    Incr,
    IndexRead,
    Replace,
)
from ._exceptions import AtomicityError, BackendError, ConfigurationError, ConflictError
from ._executor import Backoff, KeyListing, Plan, Scan, Step
from ._index import IndexSpec, spec_of, untag
from ._indexplan import IndexSource, best_read
from ._keys import count_separators as _separators
from ._lookups import And, Lookup
from ._relations import ForeignKeyField

if TYPE_CHECKING:
    from ._base import Model
    from ._schema import Schema
    from .backends.base import Backend

#: Keys listed per scan step and rows read per multi-get.
PAGE_SIZE = 500


def check_result(result: Any) -> Any:
    """A slot's result, or its exception raised."""
    if isinstance(result, BaseException):
        raise result
    return result


# -- what the backend can do -----------------------------------------------------------------


def check_atomic(schema: Schema, rows: int, keys: Sequence[str] = ()) -> None:
    """Refuse, before anything is sent, an all-or-nothing write of ``rows`` rows that the
    model's backend cannot run so: two or more on a backend without atomic batches
    (memcached), or ``keys`` (when known) in more than one hash slot of a Redis Cluster."""
    backend = schema.backend
    caps = backend.capabilities
    if rows < 2:
        return
    if not caps.atomic_batch:
        raise AtomicityError(
            f"{schema.model_name}: {type(backend).__name__} cannot write {rows} rows "
            "all-or-nothing (it has no transactions); write them without atomic=True"
        )
    if caps.atomic_one_slot and keys:
        slots = {hash_slot(backend.full_key(k)) for k in keys}
        if len(slots) > 1:
            raise AtomicityError(
                f"{schema.model_name}: an atomic batch on Redis Cluster needs every key in one "
                f"hash slot; these keys span {len(slots)} slots (give them a common "
                "{hash tag})"
            )


def check_cas(schema: Schema, what: str) -> None:
    """Refuse, before anything is sent, a plan that needs compare-and-swap on a backend
    without it."""
    backend = schema.backend
    if not backend.capabilities.native_cas:
        raise ConfigurationError(
            f"{schema.model_name}: {what} needs compare-and-swap (Gets/Cas), and "
            f"{type(backend).__name__} declares none (Capabilities.native_cas)"
        )


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def hash_slot(key: str) -> int:
    """The Redis Cluster hash slot of a full key: CRC16 of its ``{hash tag}`` if it has a
    non-empty one, else of the whole key, modulo 16384."""
    data = key.encode("utf-8", "surrogatepass")
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return _crc16(data) % 16384


# -- reads by key and relation levels --------------------------------------------------------


def _get_step(requests: Sequence[tuple[Schema, str]]) -> Step:
    """One multi-get batch per backend for ``(schema, key)`` requests, in request order."""
    by_backend: dict[int, tuple[Backend, list[Any]]] = {}
    for schema, key in requests:
        entry = by_backend.get(id(schema.backend))
        if entry is None:
            entry = by_backend[id(schema.backend)] = (schema.backend, [])
        entry[1].append(Get(key))
    return [(backend, Batch(tuple(cmds))) for backend, cmds in by_backend.values()]


def _split_get_results(
    requests: Sequence[tuple[Schema, str]], step: Step, results: list[list[Any]]
) -> list[Any]:
    per_backend = {id(b): iter(r) for (b, _), r in zip(step, results, strict=True)}
    return [check_result(next(per_backend[id(schema.backend)])) for schema, _ in requests]


_LOADED = State.LOADED


def prefetch_plan(
    instances: Iterable[Model | None], tree: dict[str, Any], decoded: bool = False
) -> Plan:
    """Load the foreign keys in ``tree`` for ``instances``: one multi-get per backend per
    level, for every distinct related row. ``decoded``: the instances are rows just read
    (or None), all loaded."""
    objs = [i for i in instances if i is not None and (decoded or state_of(i) is _LOADED)]
    level: list[tuple[list[Model], dict[str, Any]]] = [(objs, tree)]
    while level:
        wanted: dict[tuple[int, str], tuple[Schema, tuple[Any, ...]]] = {}
        # Per foreign key of a level: its name, the instances that have one, their targets.
        links: list[tuple[str, list[Model], list[tuple[int, str]]]] = []
        for objs, subtree in level:
            for name in subtree:
                linked: list[Model] = []
                targets: list[tuple[int, str]] = []
                links.append((name, linked, targets))
                model: type[Model] | None = None
                for obj in objs:
                    if type(obj) is not model:  # the field and its related schema, per model
                        model = type(obj)
                        field = model._schema.fields[name]
                        assert isinstance(field, ForeignKeyField)
                        attname = field.attname
                        rel_schema = field.rel_model._schema
                        composite = rel_schema.composite
                        ident_of: dict[Any, tuple[int, str]] = {}
                    raw = obj.__dict__[attname]
                    if raw is None:
                        continue
                    # Rows sharing a related row share its key, computed once (for ints and
                    # strs, whose equal values always make equal keys: 1 == True == 1.0 not).
                    plain = type(raw) is int or type(raw) is str
                    ident = ident_of.get(raw) if plain else None
                    if ident is None:
                        pk = raw if composite else (raw,)
                        ident = (id(rel_schema), rel_schema.key(pk))
                        wanted.setdefault(ident, (rel_schema, pk))
                        if plain:
                            ident_of[raw] = ident
                    linked.append(obj)
                    targets.append(ident)
        if not wanted:
            return
        requests = [(schema, key) for (_, key), (schema, _) in wanted.items()]
        step = _get_step(requests)
        raw_results = yield step
        payloads = _split_get_results(requests, step, raw_results)
        loaded: dict[tuple[int, str], Model] = {}
        for (ident, (schema, pk)), payload in zip(wanted.items(), payloads, strict=True):
            if payload is None:
                loaded[ident] = schema.model._sparse(pk, "missing")
            else:
                loaded[ident] = schema.decode(ident[1], payload)
        next_level: dict[int, tuple[list[Model], dict[str, Any]]] = {}
        for name, linked, targets in links:
            for obj, ident in zip(linked, targets, strict=True):
                obj.__dict__[name] = loaded[ident]
        for objs, subtree in level:
            for name, sub in subtree.items():
                if not sub:
                    continue
                for obj in objs:
                    rel = obj.__dict__.get(name)
                    if rel is None or rel.is_sparse:
                        continue
                    key = id(sub)
                    entry = next_level.setdefault(key, ([], sub))
                    entry[0].append(rel)
        level = [
            (list({id(o): o for o in objs}.values()), sub) for objs, sub in next_level.values()
        ]


# -- candidate sources of queries by field ---------------------------------------------------


def check_listable(schema: Schema) -> None:
    """A `ConfigurationError` when the model's backend cannot list its keys."""
    backend = schema.backend
    if not backend.capabilities.listable:
        raise ConfigurationError(
            f"{schema.model_name}: queries by field (filter, exclude, all, count, first, "
            f"get by non-key fields) need a backend that can list its keys, and "
            f"{type(backend).__name__} cannot (Memcached has no way to enumerate keys "
            "short of dumping its LRU, which misses keys and is never used for queries); "
            "read rows by primary key, or keep this model on Redis, memory or the filesystem"
        )


# -- candidate sources -----------------------------------------------------------------------


def _format_pattern(fmt: str) -> tuple[str, re.Pattern[str]]:
    """The fixed text before the first conversion of a ``%``-format key, and a pattern that
    matches every key the format can produce."""
    conversion = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?(.)")
    pattern = []
    literal: str | None = None
    pos = 0
    for m in conversion.finditer(fmt):
        text = fmt[pos : m.start()]
        pattern.append(re.escape(text))
        pos = m.end()
        conv = m.group(1)
        if conv == "%":
            pattern.append("%")
            continue
        if literal is None:
            literal = "".join(p for p in pattern)
        pattern.append(r"\s*[-+]?\d+" if conv in "diu" else ".+?")
    pattern.append(re.escape(fmt[pos:]))
    if literal is None:
        literal = "".join(pattern)
    # ``literal`` holds escaped text; recover the plain prefix for the scan.
    plain = re.sub(r"\\(.)", r"\1", literal)
    return plain, re.compile("".join(pattern), re.DOTALL)


class ScanSource:
    """Every key of the model: a listing of the keys under its prefix, in pages.

    Keys that this model cannot have produced (another model's rows under a longer name,
    its id counter) are skipped before anything is read.
    """

    def __init__(self, schema: Schema, page_size: int = PAGE_SIZE) -> None:
        self.schema = schema
        self.page_size = page_size
        self.counter = counter_key(schema)
        self.spec = spec_of(schema)
        fmt = schema.key_format
        self.pattern: re.Pattern[str] | None = None
        self.parts = len(schema.pk_names)
        if fmt is None:
            self.prefix = schema.prefix
        elif isinstance(fmt, str):
            literal, pattern = _format_pattern(fmt)
            self.prefix = schema.prefix + literal
            self.pattern = pattern
        else:
            self.prefix = schema.prefix
        if not self.prefix:
            raise ConfigurationError(
                f"{schema.model_name}: its keys (key_format {fmt!r}) have no fixed prefix, so "
                "its rows cannot be told from other keys of the store; give the model a "
                "Meta.namespace of its own, or a key_format that starts with fixed text"
            )

    def owns(self, key: str) -> bool:
        """Whether ``key`` can be a row key of this model."""
        if key == self.counter:
            return False
        if self.spec is not None:
            key = untag(self.spec, key)
        rest = key[len(self.schema.prefix) :]
        if self.pattern is not None:
            return self.pattern.fullmatch(rest) is not None
        if self.schema.key_format is not None:
            return True  # a callable format: every key under the model's namespace
        return _separators(rest) == self.parts - 1

    def next_keys(self, listing: KeyListing | None) -> Plan:
        """The next non-empty page of candidate keys; ``[]`` at the end."""
        assert listing is not None
        while True:
            page: list[str] = yield Scan(listing)
            if not page:
                return []
            keys = [k for k in page if self.owns(k)]
            if keys:
                return keys

    def listing(self) -> KeyListing:
        return KeyListing(self.schema.backend, self.prefix, self.page_size)

    def describe(self) -> str:
        return (
            f"full scan: reads every row of {self.schema.model_name} (keys listed under "
            f"{self.prefix!r} about {self.page_size} per round trip, then one multi-get "
            f"round trip per page of up to {self.page_size} rows)"
        )


class KeySource:
    """The keys of primary keys named by the filter (``pk=``/``pk__in=``): no listing."""

    def __init__(self, schema: Schema, pks: list[tuple[Any, ...]]) -> None:
        self.schema = schema
        self.keys = list(dict.fromkeys(schema.key(pk) for pk in pks))

    def listing(self) -> None:
        return None

    def next_keys(self, listing: Any) -> Plan:
        keys, self.keys = self.keys[:PAGE_SIZE], self.keys[PAGE_SIZE:]
        return keys
        yield  # pragma: no cover - a plan, for the same protocol as ScanSource

    def describe(self) -> str:
        n = len(self.keys)
        return (
            f"key lookup: reads {n} row(s) of {self.schema.model_name} by primary key "
            f"({max(1, -(-n // PAGE_SIZE))} multi-get round trip(s))"
        )


def pk_keys(schema: Schema, cond: And) -> list[tuple[Any, ...]] | None:
    """The primary keys a filter is limited to by a top-level ``pk``/``pk__in`` lookup."""
    for part in cond.parts:
        if not isinstance(part, Lookup):
            continue
        if part.name == "pk" or (not schema.composite and part.name in schema.pk_names):
            if part.lookup == "exact":
                values = [part.value]
            elif part.lookup == "in" and isinstance(part.value, frozenset):
                values = sorted(part.value, key=repr)
            else:
                continue
            if schema.composite:
                return [tuple(v) for v in values]
            return [(v,) for v in values]
    return None


def candidate_source(schema: Schema, where: And) -> ScanSource | KeySource | IndexSource:
    """Where a filter's candidate keys come from: the keys its primary-key lookups name, the
    keys an index selects, or every key of the model. Rows are re-checked against the whole
    condition whatever the source."""
    pks = pk_keys(schema, where)
    if pks is not None:
        return KeySource(schema, pks)
    spec = spec_of(schema)
    if spec is not None:
        best = best_read(spec, where)
        if best is not None:
            return IndexSource(schema, spec, best[0], best[2])
    return ScanSource(schema)


def exact_index_read(schema: Schema, where: And) -> tuple[IndexSpec, IndexRead] | None:
    """The index read that answers ``where`` exactly (a count without reading rows)."""
    spec = spec_of(schema)
    if spec is None or pk_keys(schema, where) is not None:
        return None
    best = best_read(spec, where)
    if best is None or not best[1]:
        return None
    return spec, best[0]


# -- emulations of commands a backend lacks natively -----------------------------------------

#: Compare-and-swap rounds before an emulated command gives up with ConflictError.
EMULATION_ATTEMPTS = 100

_INTEGER = re.compile(rb" *(-?[0-9]+) *")  # memcached pads in-place increments with spaces


def needs_emulation(caps: Capabilities, command: Command) -> bool:
    """Whether ``command`` is one the backend declares it cannot run natively."""
    kind = type(command)
    if kind is Incr:
        return not caps.negative_incr and command.delta < 0  # type: ignore[union-attr]
    if kind is Replace:
        return not caps.replace_keep_ttl and command.ttl is KEEP_TTL  # type: ignore[union-attr]
    return False


def emulation_plan(backend: Backend, command: Command, *, create: bool = True) -> Plan:
    """``command`` (an `Incr` or a ``Replace(..., KEEP_TTL)``) as plain round trips: read
    the key with its version token, write the new value only if unchanged, keeping the
    key's remaining TTL; a lost race is read again after a `Backoff`. Returns the command's
    result, or the exception of a failed slot (as a backend would put in the slot)."""
    key = command.key
    for attempt in range(1, EMULATION_ATTEMPTS + 1):
        if attempt > 1:
            yield Backoff(attempt - 1)
        got = (yield [(backend, Batch((Gets(key),)))])[0][0]
        if isinstance(got, BaseException):
            return got
        if isinstance(command, Replace):
            if got is None:
                return False
            write: Command = Cas(key, command.value, got[1], KEEP_TTL)
        else:
            assert isinstance(command, Incr)
            if got is None:
                if not create:
                    return None
                new = command.delta
                write = Add(key, str(new).encode(), command.ttl)
            else:
                match = _INTEGER.fullmatch(got[0])
                if match is None:
                    return BackendError(f"incr: the value under {key!r} is not an integer")
                new = int(match.group(1)) + command.delta
                write = Cas(key, str(new).encode(), got[1], KEEP_TTL)
        done = (yield [(backend, Batch((write,)))])[0][0]
        if isinstance(done, BaseException):
            return done
        if done:
            return True if isinstance(command, Replace) else new
    what = "replace" if isinstance(command, Replace) else "incr"
    return ConflictError(f"{what} of {key!r} kept losing to other writers")
