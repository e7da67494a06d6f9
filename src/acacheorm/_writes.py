"""The write-row step: the one place a row write (or delete) becomes backend commands.

Insert, update (its compare-and-swap), save, get_or_create, update_or_create, delete and
their many- and cross-model forms all build their commands here, from the row's key and its
new value. A model without indexes gets the plain command (``Set``, ``Add``, ``Replace``,
``Cas``, ``Delete``): the same batches, the same round trips as always. A model with
indexes gets one `IndexedWrite` per row, which the backend runs atomically with the row's
index entries and unique checks. ``on_delete`` actions run before a delete, in
`on_delete_plan`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._base import Model
from ._commands import (
    Add,
    Cas,
    Command,
    Delete,
    IndexedWrite,
    Replace,
    Set,
    Touch,
    WriteTTL,
)
from ._exceptions import IntegrityError
from ._executor import Plan
from ._index import RESTRICT, SET_NULL, check_backend, dependents_of, on_delete_of, spec_of
from ._types import collector_paused

if TYPE_CHECKING:
    from ._index import IndexSpec
    from ._schema import Schema

_PLAIN: dict[str, Any] = {"set": Set, "add": Add, "replace": Replace}


def write_row(
    schema: Schema,
    mode: str,
    key: str,
    new: Model | None,
    ttl: WriteTTL = None,
    token: Any = None,
    old: Model | None = None,
) -> Command:
    """The command that writes ``new`` under ``key`` (``mode`` ``"set"``, ``"add"``,
    ``"replace"``, ``"cas"`` with ``token``) or deletes it (``mode`` ``"delete"``, ``new``
    None). ``old`` is the row as last read, when the caller has it (unused by indexes: the
    backend keeps each row's entries)."""
    spec = spec_of(schema)
    if spec is None:
        if mode == "delete":
            return Delete(key)
        assert new is not None
        if mode == "cas":
            return Cas(key, schema.encode(new), token, ttl)
        return _PLAIN[mode](key, schema.encode(new), ttl)  # type: ignore[no-any-return]
    check_backend(schema)
    index = spec.index_of(key)
    if new is None:
        return IndexedWrite(key, index, "delete")
    terms, unique = spec.terms(new)
    return IndexedWrite(key, index, mode, schema.encode(new), ttl, token, terms, unique)


def touch_row(schema: Schema, key: str, ttl: float | None) -> Command:
    """The command that sets a row's remaining lifetime (``touch``): a plain `Touch`, or for
    an indexed model an `IndexedWrite` that moves the row's index entries' expiry with it."""
    spec = spec_of(schema)
    if spec is None:
        return Touch(key, ttl)
    check_backend(schema)
    return IndexedWrite(key, spec.index_of(key), "touch", b"", ttl)


def write_rows(
    schema: Schema, mode: str, instances: Sequence[Model], ttl: WriteTTL
) -> tuple[Command, ...]:
    """`write_row` for each instance (``set``/``add``/``replace``), keyed by its pk."""
    spec = spec_of(schema)
    key_of, encode = schema.key_of, schema.encode
    if spec is None and mode == "set":
        return tuple(Set(key_of(i), encode(i), ttl) for i in instances)  # type: ignore[arg-type]
    if spec is None:
        return tuple(write_row(schema, mode, key_of(i), i, ttl) for i in instances)
    check_backend(schema)
    # no reference cycles among what this makes: the collector is paused for a large batch
    return collector_paused(len(instances), _indexed_rows, spec, mode, instances, ttl)


def _indexed_rows(
    spec: IndexSpec, mode: str, instances: Sequence[Model], ttl: WriteTTL
) -> tuple[Command, ...]:
    """write_row's IndexedWrite for each instance, with what is the same for every row
    looked up once."""
    schema = spec.schema
    key_of, encode = schema.key_of, schema.encode
    terms = spec.terms
    # tuple.__new__: the IndexedWrite of every field, without the NamedTuple's own __new__
    # (half the cost of building one; the fields are those of its constructor, in order)
    new = tuple.__new__
    if spec.tagged():
        keys = [key_of(i) for i in instances]
        return tuple(
            [
                new(IndexedWrite, (k, b, mode, encode(i), ttl, None, *terms(i)))
                for k, b, i in zip(keys, _buckets_of(spec, keys), instances, strict=True)
            ]
        )
    bucket = spec.bucket_name(0)
    key_of = spec.untagged_key_of
    # a list comprehension, then its tuple: faster than the tuple of a generator
    return tuple(
        [
            new(IndexedWrite, (key_of(i), bucket, mode, encode(i), ttl, None, *terms(i)))
            for i in instances
        ]
    )


def _buckets_of(spec: IndexSpec, keys: list[str]) -> list[str]:
    """``spec.index_of(k)`` for each tagged row key, computed once per bucket tag: the
    bucket of a key ending with a bucket's tag is that tag's."""
    index_of = spec.index_of
    known: dict[str, str] = {}
    head = "{" + spec.tag + "."
    out: list[str] = []
    add = out.append
    for k in keys:
        tag = k[k.rfind("{") :]
        b = known.get(tag)
        if b is None:
            b = index_of(k)
            if tag.startswith(head) and tag.endswith("}"):
                known[tag] = b
        add(b)
    return out


def delete_rows(schema: Schema, keys: Sequence[str]) -> tuple[Command, ...]:
    """The commands that delete these rows (and their index entries)."""
    if spec_of(schema) is None:
        return tuple(Delete(k) for k in keys)
    return tuple(write_row(schema, "delete", k, None) for k in keys)


def checked(schema: Schema, command: Command, result: Any) -> Any:
    """A write's result, or its error raised (a unique value taken: `IntegrityError` naming
    the model, field and value)."""
    if isinstance(result, IntegrityError):
        unique = getattr(result, "unique", "")
        field, _, text = unique.partition("\x00")
        raise IntegrityError(
            f"{schema.model_name}.{field}: the value {_show(text)} is held by another live "
            f"row (unique=True); nothing written (key {command.key!r})"
        ) from None
    if isinstance(result, BaseException):
        raise result
    return result


def _show(text: str) -> str:
    kind, rest = text[:1], text[1:]
    return repr(rest) if kind == "s" else rest


def has_dependents(schema: Schema) -> bool:
    return bool(dependents_of(schema))


def on_delete_plan(schema: Schema, pks: Sequence[tuple[Any, ...]]) -> Plan:
    """Run the ``on_delete`` actions of the foreign keys pointing at these rows: RESTRICT
    first (an `IntegrityError` before anything is deleted), then SET_NULL and CASCADE.
    Each dependent row is written atomically; the whole is not one transaction."""
    from ._filter import FilterQuery

    values = [pk if schema.composite else pk[0] for pk in pks]
    if not values:
        return
    deps = dependents_of(schema)
    for model, field in deps:
        if on_delete_of(field) is RESTRICT:
            q: FilterQuery[Any] = FilterQuery(model).filter(**{f"{field.attname}__in": values})
            n = yield from q.count()._plan()
            if n:
                raise IntegrityError(
                    f"{schema.model_name}: {n} {model.__name__} row(s) point at it through "
                    f"{model.__name__}.{field.name} (on_delete=co.RESTRICT); nothing deleted"
                )
    for model, field in deps:
        action = on_delete_of(field)
        if action is RESTRICT:
            continue
        q = FilterQuery(model).filter(**{f"{field.attname}__in": values})
        if action is SET_NULL:
            yield from q.update(**{field.name: None})._plan()
        else:
            yield from q.delete()._plan()
