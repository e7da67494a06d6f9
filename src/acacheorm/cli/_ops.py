"""The operations behind ``python -m acacheorm inspect|stats|migrate``, free of any CLI.

Each works on a backend (bytes, keys, TTLs) and, for ``migrate``, a model's schema; none
prints. The click commands in ``acacheorm.cli`` render what these return.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import Any, NamedTuple

from .. import _codec, _executor
from .._cas import read_versions, write_unchanged
from .._commands import KEEP_TTL, MISSING, Batch, Command, Get, Ttl
from .._exceptions import SerializationError
from .._executor import Plan
from .._index import spec_of
from .._keys import separator_positions as _separators
from .._model import Model
from .._writes import write_row
from ..backends.base import Backend
from ..serializers import Serializer, registry


class OperationError(Exception):
    """An operation cannot go on (missing key, not an envelope, unknown serializer, ...);
    the message says why and what to do."""


# -- importing user code ----------------------------------------------------------------------


def import_object(spec: str) -> Any:
    """``"package.module:Name"`` (or ``"package.module:Outer.Name"``) → the object.

    The current directory is importable, as with ``python -m``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise OperationError(f"expected MODULE:Name (e.g. myapp.models:User), not {spec!r}")
    import_module(module_name)
    obj: Any = sys.modules[module_name]
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise OperationError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def import_module(name: str) -> None:
    """Import ``name`` (for the serializers or models it registers), cwd on the path."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(name)
    except ImportError as exc:
        raise OperationError(f"cannot import {name!r}: {exc}") from exc


def import_model(spec: str) -> type[Model]:
    """``"myapp.models:User"`` → the model class, or `OperationError` saying what it is."""
    obj = import_object(spec)
    if not (isinstance(obj, type) and issubclass(obj, Model) and "_schema" in obj.__dict__):
        raise OperationError(f"{spec} is not a concrete acacheorm model: {obj!r}")
    return obj


# -- serializers by tag -----------------------------------------------------------------------


def serializer_names(tag: int) -> list[str]:
    """The registered names whose serializer writes ``tag`` (usually one)."""
    names = []
    for name in registry.names():
        try:
            if registry.get_by_name(name).tag == tag:
                names.append(name)
        except KeyError:  # unregistered meanwhile
            continue
    return names


def describe_tag(tag: int) -> str:
    """``"msgpack (tag 0x0002)"``, or ``"unregistered (tag 0x8123)"``."""
    names = serializer_names(tag)
    return f"{'/'.join(names) if names else 'unregistered'} (tag {tag:#06x})"


def payload_format(payload: bytes) -> str:
    """The serializer name(s) of a stored payload, or ``"not an envelope"``."""
    try:
        tag, _fp, _body = _codec.unwrap(payload)
    except _codec.EnvelopeError:
        return "not an envelope"
    names = serializer_names(tag)
    return "/".join(names) if names else f"tag {tag:#06x}"


# -- inspect ----------------------------------------------------------------------------------


class Inspection(NamedTuple):
    """A stored value taken apart: the envelope, then the row its serializer wrote."""

    key: str
    size: int
    version: int
    tag: int
    serializer: Serializer
    fingerprint: int
    fields: dict[str, Any]
    raw: bytes
    #: Seconds left before the key expires, ``None`` if it never does.
    remaining_ttl: float | None = None


async def inspect_key(backend: Backend, key: str, model: type[Model] | None = None) -> Inspection:
    """Read ``key`` (and its remaining TTL, in the same round trip) and decode its envelope
    and body; `OperationError` if it cannot.

    With ``model``, only the serializers that model reads (its own and
    ``Meta.read_serializers``) may decode the body, as on any read of the model: a stored
    payload never picks another registered serializer (an unsigned pickle, say). Without
    one, any registered serializer but an unsigned pickle may.
    """
    value, left = await _executor.execute_batch(backend, Batch((Get(key), Ttl(key))))
    for result in (value, left):
        if isinstance(result, BaseException):
            raise result
    if value is None:
        raise OperationError(f"no value is stored under {key!r} in {backend!r}")
    if left is MISSING:  # expired between the two commands
        left = 0.0
    try:
        envelope = _codec.open_envelope(value)
    except _codec.EnvelopeError as exc:
        raise OperationError(
            f"the value under {key!r} ({len(value)} bytes, starting {value[:8].hex(' ')}) is "
            f"not an acacheorm envelope: {exc}"
        ) from exc
    tag, fingerprint = envelope.tag, envelope.fingerprint
    if model is not None and tag not in model._schema.readers:
        raise OperationError(
            f"the value under {key!r} was written by {describe_tag(tag)}, which "
            f"{model.__name__} does not read (not its serializer, not in its "
            "Meta.read_serializers); it was not decoded"
        )
    serializer = registry.get_by_tag(tag) if model is None else model._schema.readers[tag]
    if model is None and getattr(serializer, "unsafe_allow_unsigned", False):
        raise OperationError(
            f"the value under {key!r} is tagged as {describe_tag(tag)}, an unsigned pickle: "
            "loading it would run whatever code its writer chose, so it is only decoded "
            "through a model that reads that serializer (--model MODULE:Model)"
        )
    if serializer is None:
        raise OperationError(
            f"the value under {key!r} was written by serializer tag {tag:#06x}, which is not "
            f"registered here (registered: {', '.join(registry.names())}); import the module "
            "that registers it with --import MODULE"
        )
    try:
        fields = _codec.body_fields(envelope, serializer)
    except SerializationError as exc:
        raise OperationError(
            f"the {serializer.name} body of {key!r} cannot be decoded: {exc}"
        ) from exc
    return Inspection(key, len(value), value[1], tag, serializer, fingerprint, fields, value, left)


def human_seconds(seconds: float) -> str:
    """``3725`` → ``"1h 2m 5s"``."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    if minutes or hours or days:
        parts.append(f"{minutes}m")
    parts.append(f"{secs}s")
    return " ".join(parts)


# -- stats ------------------------------------------------------------------------------------


class GroupStats(NamedTuple):
    """Keys sharing a prefix: how many, their value bytes, and who wrote them."""

    prefix: str
    keys: int
    bytes: int
    formats: dict[str, int]


def group_of(key: str, depth: int | None = None) -> str:
    """The group of a key: its text up to the last ``:`` (``"app:user:1"`` → ``"app:user"``),
    or its first ``depth`` parts; ``""`` for a key with no ``:``. A ``:`` escaped inside a
    key part (``\\:``, as primary keys holding ``:`` are written) does not split."""
    cuts = _separators(key)
    if not cuts:
        return ""
    if depth is None:
        return key[: cuts[-1]]
    return key[: cuts[min(depth, len(cuts)) - 1]]


async def collect_stats(
    backend: Backend,
    prefix: str = "",
    *,
    depth: int | None = None,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> list[GroupStats]:
    """Keys and value bytes per group (see `group_of`), largest groups first.

    Keys come from `Backend.scan`; values are read ``batch_size`` keys per round trip. A key
    deleted between the scan and the read is not counted.
    """
    groups: dict[str, list[Any]] = {}

    async def flush(keys: list[str]) -> None:
        values = await backend.get_many(*keys)
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue
            entry = groups.setdefault(group_of(key, depth), [0, 0, {}])
            entry[0] += 1
            entry[1] += len(value)
            fmt = payload_format(value)
            entry[2][fmt] = entry[2].get(fmt, 0) + 1
        if progress is not None:
            progress(len(keys))

    pending: list[str] = []
    async for key in backend.scan(prefix, batch_size):
        pending.append(key)
        if len(pending) >= batch_size:
            await flush(pending)
            pending = []
    if pending:
        await flush(pending)
    stats = [GroupStats(p, n, size, fmts) for p, (n, size, fmts) in groups.items()]
    stats.sort(key=lambda s: (-s.bytes, s.prefix))
    return stats


# -- migrate ----------------------------------------------------------------------------------


class MigrationReport(NamedTuple):
    """What `migrate` did (or, with ``dry_run``, would do) to the rows it found."""

    scanned: int
    migrated: int
    current: int
    changed: int
    vanished: int
    failed: list[tuple[str, str]]
    dry_run: bool


def model_key_prefix(model: type[Model]) -> str:
    """The prefix every stored key of ``model`` starts with (its namespace and name, or the
    literal start of a ``%``-format ``key_format``); `OperationError` if it has none."""
    schema = model._schema
    fmt = schema.key_format
    if fmt is None:
        return schema.prefix
    if callable(fmt):
        raise OperationError(
            f"{schema.model_name} computes its keys with a function (Meta.key_format), so its "
            "keys have no known prefix; give one with --prefix"
        )
    literal = fmt.split("%%")
    head = []
    for part in literal:
        cut = part.find("%")
        if cut >= 0:
            head.append(part[:cut])
            break
        head.append(part)
    start = "%".join(head)
    if not schema.prefix + start:
        raise OperationError(
            f"{schema.model_name}.Meta.key_format {fmt!r} starts with a placeholder, so its "
            "keys have no known prefix; give one with --prefix"
        )
    return schema.prefix + start


async def scan_keys(backend: Backend, prefix: str, count: int = 500) -> list[str]:
    """Every key under ``prefix`` (see `Backend.scan`), as a list."""
    return [key async for key in backend.scan(prefix, count)]


async def count_keys(
    backend: Backend,
    prefix: str,
    count: int = 500,
    progress: Callable[[int], None] | None = None,
) -> int:
    """How many keys are under ``prefix``, without holding them; ``progress(n)`` every
    ``count`` keys (for a progress display of the listing)."""
    n = pending = 0
    async for _ in backend.scan(prefix, count):
        n += 1
        pending += 1
        if pending >= count:
            if progress is not None:
                progress(pending)
            pending = 0
    if pending and progress is not None:
        progress(pending)
    return n


async def _chunks(keys: Iterable[str] | AsyncIterable[str], size: int) -> AsyncIterator[list[str]]:
    """Lists of up to ``size`` keys, pulled from ``keys`` as they are needed."""
    chunk: list[str] = []
    if isinstance(keys, AsyncIterable):
        async for key in keys:
            chunk.append(key)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    else:
        for key in keys:
            chunk.append(key)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def migrate_plan(
    backend: Backend, model: type[Model], keys: Sequence[str], *, dry_run: bool = False
) -> Plan:
    """The plan that migrates the rows under ``keys`` (one batch of `migrate`); its value
    is the `MigrationReport` of these keys.

    One round trip reads the rows with their version tokens (`read_versions`, as an update
    does); each row whose envelope is not already the model's (serializer tag and schema
    fingerprint) is decoded the way any read decodes an old row (by its envelope's
    serializer, unknown fields dropped, missing ones defaulted) and encoded anew; one round
    trip writes them back only where unchanged (`write_unchanged`, as an update does), with
    ``KEEP_TTL``. A row changed or deleted since it was read is left alone and counted as
    ``changed``, not retried: it holds someone else's newer write. A failed slot, read or
    write, is reported in ``failed`` and the other rows go on. ``dry_run`` reads and
    decodes but writes nothing.
    """
    schema = model._schema
    header = schema.row_header
    # An indexed model's rows are all written again: that (re)builds their index entries,
    # for rows stored before the index was declared.
    indexed = spec_of(schema) is not None
    current = vanished = migrated = changed = 0
    failed: list[tuple[str, str]] = []
    writes: list[Command] = []
    got = yield from read_versions(backend, keys)
    for key, item in zip(keys, got, strict=True):
        if isinstance(item, BaseException):
            failed.append((key, f"read failed: {item}"))
            continue
        if item is None:
            vanished += 1
            continue
        payload, token = item
        if payload[: len(header)] == header and not indexed:
            current += 1
            continue
        try:
            writes.append(
                write_row(schema, "cas", key, schema.decode(key, payload), KEEP_TTL, token)
            )
        except SerializationError as exc:
            failed.append((key, str(exc)))
            continue
    if dry_run:
        migrated = len(writes)
    elif writes:
        results = yield from write_unchanged(backend, writes)
        for command, ok in zip(writes, results, strict=True):
            if isinstance(ok, BaseException):
                failed.append((command.key, f"write failed: {ok}"))
            elif ok:
                migrated += 1
            else:
                changed += 1
    return MigrationReport(len(keys), migrated, current, changed, vanished, failed, dry_run)


async def migrate(
    backend: Backend,
    model: type[Model],
    keys: Iterable[str] | AsyncIterable[str],
    *,
    batch_size: int = 500,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> MigrationReport:
    """Rewrite the rows under ``keys`` with ``model``'s current serializer and schema.

    Per batch of ``batch_size`` keys, the executor runs a `migrate_plan`: one round trip of
    ``Gets``, then one of ``Cas(..., KEEP_TTL)`` for the rows to rewrite, so each row keeps
    its remaining TTL and a row changed (or deleted) since it was read is left alone and
    counted as ``changed``. Batch hooks and logging see every round trip. ``dry_run`` reads
    and decodes but writes nothing.

    ``keys`` may be an async iterable (``backend.scan(prefix)``): keys are pulled a batch
    at a time, so memory stays bounded by ``batch_size`` whatever the number of rows.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, not {batch_size!r}")
    total = MigrationReport(0, 0, 0, 0, 0, [], dry_run)
    async for chunk in _chunks(keys, batch_size):
        part = await _executor.run(migrate_plan(backend, model, chunk, dry_run=dry_run))
        total = MigrationReport(
            total.scanned + part.scanned,
            total.migrated + part.migrated,
            total.current + part.current,
            total.changed + part.changed,
            total.vanished + part.vanished,
            total.failed + part.failed,
            dry_run,
        )
        if progress is not None:
            progress(len(chunk))
    return total
