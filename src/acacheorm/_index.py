"""Secondary indexes: which fields are indexed, the index entries of a row, and the bucket a
row lives in.

A model with ``index=True``/``unique=True`` fields (or a foreign key with an ``on_delete``
other than ``DO_NOTHING``) gets an `IndexSpec`. Every write of one of its rows is an
`IndexedWrite` carrying the row's new index entries (`IndexTerm`); the backend keeps each
row's entries and replaces them atomically with the row. Reads by field ask the backend for
the keys an `IndexRead` selects, one command per bucket, and re-check every row they read.

Buckets: on Redis Cluster a row and its index entries must share a hash slot, so the rows of
an indexed model are spread over ``Capabilities.index_buckets`` buckets (16), ``b =
crc32(key) % 16``, and the row key ends with the bucket's hash tag ``{<model>.<k>}``
(``{user.41}``: the tags are chosen so that the buckets' slots spread evenly over the slot
space, see `bucket_tags`). A model with a unique field keeps one bucket (a unique value must
be checked in the same slot as every row that could hold it). Elsewhere there is one bucket
and keys are unchanged.
"""

from __future__ import annotations

import enum
import math
import uuid
import weakref
import zlib
from typing import TYPE_CHECKING, Any, NamedTuple

from ._base import Model
from ._codec import compile_build
from ._commands import IndexTerm
from ._exceptions import ConfigurationError
from ._fields import Field
from ._fields_scalar import (
    BooleanField,
    EnumField,
    FloatField,
    IntegerField,
    StringField,
    UUIDField,
)
from ._keys import bucket_name, bucket_tags, hash_tag, index_base, tag_key, tag_of, untag_key
from ._relations import ForeignKeyField
from ._schema import lookup_model

if TYPE_CHECKING:
    from ._schema import Schema


class OnDelete(enum.Enum):
    """What deleting a row does to the rows whose foreign key points at it
    (``ForeignKeyField(on_delete=...)``; each needs, and implies, an index on the field).

    Example::

        class Article(co.Model):
            id = co.IntegerField(primary_key=True)
            author = co.ForeignKeyField(User, on_delete=co.CASCADE)
    """

    CASCADE = "CASCADE"
    RESTRICT = "RESTRICT"
    SET_NULL = "SET_NULL"
    DO_NOTHING = "DO_NOTHING"

    def __repr__(self) -> str:
        return f"co.{self.value}"


#: Deleting a row deletes the rows pointing at it (``ForeignKeyField(on_delete=)``).
CASCADE = OnDelete.CASCADE
#: A row that other rows point at cannot be deleted: `IntegrityError`, nothing deleted.
RESTRICT = OnDelete.RESTRICT
#: Deleting a row sets the foreign key of the rows pointing at it to ``None``.
SET_NULL = OnDelete.SET_NULL
#: Deleting a row leaves the rows pointing at it alone (they read it as ``[missing]``).
DO_NOTHING = OnDelete.DO_NOTHING

#: Buckets of an indexed model on a backend that spreads them (Redis Cluster).
CLUSTER_BUCKETS = 16
_EXACT_INT = 2**53


class IndexedField(NamedTuple):
    name: str
    attname: str
    field: Field[Any]
    #: ``"num"``/``"lex"`` for ordered values (ranges, ``startswith``, ``order_by``), else None.
    ordered: str | None
    unique: bool


def _ordered_kind(field: Field[Any]) -> str | None:
    target: Field[Any] = field
    if isinstance(field, ForeignKeyField):
        return None
    if isinstance(target, IntegerField | FloatField) and not isinstance(target, BooleanField):
        return "num"
    if isinstance(target, StringField):
        return "lex"
    return None


def _check_indexable(model_name: str, field: Field[Any]) -> None:
    if isinstance(field, ForeignKeyField):
        return
    if isinstance(
        field, IntegerField | FloatField | StringField | BooleanField | UUIDField | EnumField
    ):
        return
    raise ConfigurationError(
        f"{model_name}.{field.name}: index=/unique= work on integer, float, string, bool, "
        f"UUID, enum and foreign key fields, not on a {type(field).__name__}"
    )


def canonical(value: Any) -> str:
    """The index text of a value: equal values (as the field compares them) give equal text,
    different values different text."""
    if value is None:
        return "n"
    if isinstance(value, bool):
        return "b1" if value else "b0"
    if isinstance(value, int):
        return f"i{value}"
    if isinstance(value, float):
        return f"f{value + 0.0!r}"
    if isinstance(value, str):
        return f"s{value}"
    if isinstance(value, uuid.UUID):
        return f"u{value.hex}"
    if isinstance(value, enum.Enum):
        return "e" + canonical(value.value)
    if isinstance(value, tuple):  # a composite foreign key
        return "t" + "\x1f".join(canonical(v) for v in value)
    return f"r{value!r}"


def score(value: Any) -> float:
    """The sort score of a numeric value; an integer beyond a float's range scores as
    +-infinity (not `exact_score`: reads keep such bounds inclusive and re-check rows)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def exact_score(value: Any) -> bool:
    """Whether ``score(value)`` orders exactly like the value (no rounding)."""
    return isinstance(value, float) or -_EXACT_INT <= value <= _EXACT_INT


class IndexSpec:
    """The indexed fields of a model and where its rows' index entries live."""

    def __init__(self, schema: Schema, fields: list[IndexedField]) -> None:
        self.schema = schema
        self.fields = {f.name: f for f in fields}
        self.by_attname = {f.attname: f for f in fields}
        self.has_unique = any(f.unique for f in fields)
        self.base = index_base(schema.namespace, schema.name)
        self.tag = hash_tag(schema.name)
        # per field: the entries of its int and str values, by value (an int and a str
        # are never equal, and only values of exactly these types are kept)
        self._memo: dict[str, dict[Any, tuple[tuple[IndexTerm, ...], str]]] = {
            f.name: {} for f in fields
        }
        self._walk = [(f.name, f.attname, f.ordered, f.unique, self._memo[f.name]) for f in fields]
        #: The key of a row where keys carry no bucket tag (``schema.key_of`` without the
        #: check whether they do: set with the tagged ``key_of``).
        self.untagged_key_of = schema.key_of
        self._names: dict[int, tuple[str, ...]] = {}  # bucket names, by bucket count

    def buckets(self) -> int:
        n = self.schema.backend.capabilities.index_buckets
        return 1 if self.has_unique else n

    def bucket_of(self, plain_key: str, n: int) -> int:
        return zlib.crc32(plain_key.encode()) % n if n > 1 else 0

    def bucket_name(self, b: int) -> str:
        """The name every key of bucket ``b`` derives from (its hash tag included)."""
        return self.bucket_names()[b]

    def bucket_names(self) -> tuple[str, ...]:
        """`bucket_name` of every bucket, in bucket order (worked out once per count)."""
        n = self.buckets()
        names = self._names.get(n)
        if names is None:
            names = tuple(bucket_name(self.base, t) for t in bucket_tags(self.tag, n))
            self._names[n] = names
        return names

    def tagged(self) -> bool:
        """Whether row keys carry their bucket's hash tag (Redis Cluster)."""
        return self.schema.backend.capabilities.index_buckets > 1

    def index_of(self, key: str) -> str:
        """The bucket name of a row key."""
        if not self.tagged():
            return self.bucket_name(0)
        plain = untag(self, key)
        if plain == key:  # stored before the model had indexes: its own slot, not a bucket's
            return self.bucket_name(self.bucket_of(key, self.buckets()))
        return bucket_name(self.base, tag_of(key, plain))

    def field_for(self, name: str) -> IndexedField | None:
        """The indexed field a lookup name (field name or raw foreign key attname) means."""
        found = self.fields.get(name)
        return found if found is not None else self.by_attname.get(name)

    def terms(self, obj: Model) -> tuple[tuple[IndexTerm, ...], tuple[str, ...]]:
        """The index entries of a row and its unique values."""
        terms: tuple[IndexTerm, ...] = ()
        unique: tuple[str, ...] = ()
        values = obj.__dict__
        for name, attname, ordered, is_unique, memo in self._walk:
            value: Any = values.get(attname)
            kind = type(value)
            if kind is int or kind is str:
                # the common cases: the entries of a value are built once and kept (at most
                # _MEMO values per field, the latest ones: a full memo starts over; strings
                # of up to 64 characters), the same as the general path below builds them
                got = memo.get(value)
                if got is None:
                    got = _simple_terms(name, ordered, value)
                    if kind is int or len(value) <= 64:
                        if len(memo) >= _MEMO:
                            memo.clear()
                        memo[value] = got
                terms += got[0]
                text = got[1]
            else:
                text = canonical(value)
                terms += (_term((name, "eq", text)),)
                if value is not None and ordered == "num" and not is_nan(value):
                    terms += (_term((name, "num", score(value))),)
                elif value is not None and ordered == "lex":
                    terms += (_term((name, "lex", value)),)
            if is_unique and value is not None:
                unique += (f"{name}\x00{text}",)
        return terms, unique


#: Values per indexed field whose entries `IndexSpec.terms` keeps built.
_MEMO = 4096


def _simple_terms(name: str, ordered: str | None, value: Any) -> tuple[tuple[IndexTerm, ...], str]:
    """The entries of an int or str value (and its canonical text)."""
    text = canonical(value)
    eq = _term((name, "eq", text))
    if ordered == "num" and type(value) is int:
        return (eq, _term((name, "num", score(value)))), text
    if ordered == "lex" and type(value) is str:
        return (eq, _term((name, "lex", value))), text
    return (eq,), text


def _term(parts: tuple[str, str, Any]) -> IndexTerm:
    return tuple.__new__(IndexTerm, parts)


_specs: dict[int, IndexSpec] = {}
#: Foreign keys that point at a model with an on_delete action:
#: id(target schema) -> [(model, field)].
_dependents: dict[int, list[tuple[weakref.ref[type[Model]], ForeignKeyField[Any]]]] = {}


def spec_of(schema: Schema) -> IndexSpec | None:
    """The model's index spec, None for a model without indexes."""
    return _specs.get(id(schema))


def dependents_of(schema: Schema) -> list[tuple[type[Model], ForeignKeyField[Any]]]:
    """The foreign keys (with an on_delete action) that point at this model."""
    found = []
    for ref, field in _dependents.get(id(schema), []):
        model = ref()
        # Entries of a model since garbage-collected, or of another schema that had this id.
        if model is not None and model._schema.fields.get(field.name) is field:
            try:
                target = field.rel_model._schema
            except LookupError:  # a target that no longer resolves
                continue
            if target is schema:
                found.append((model, field))
    return found


def check_backend(schema: Schema) -> None:
    """A `ConfigurationError` naming the backend when it cannot keep indexes."""
    backend = schema.backend
    if not backend.capabilities.indexes:
        raise ConfigurationError(
            f"{schema.model_name}: index=, unique= and on_delete other than DO_NOTHING need "
            f"a backend that keeps secondary indexes, and {type(backend).__name__} does not"
            + (
                " (Memcached cannot list or group its keys)"
                if "Memcached" in type(backend).__name__
                else ""
            )
            + "; keep this model on Redis or in memory, or drop the option"
        )


def setup_indexes(model: type[Model]) -> None:
    """Called once a model class is built: record its indexed fields, check its backend,
    and register its ``on_delete`` foreign keys with the models they point at."""
    schema = model._schema
    register_pending(model)
    fields: list[IndexedField] = []
    for name, field in schema.fields.items():
        on_delete = getattr(field, "on_delete", DO_NOTHING)
        index = bool(getattr(field, "index", False)) or on_delete is not DO_NOTHING
        unique = bool(getattr(field, "unique", False))
        if not (index or unique):
            continue
        if field.primary_key:
            raise ConfigurationError(
                f"{model.__name__}.{name}: a primary key is unique and found by key already; "
                "index=/unique= are for other fields"
            )
        _check_indexable(model.__name__, field)
        fields.append(
            IndexedField(name, schema.attnames[name], field, _ordered_kind(field), unique)
        )
        if on_delete is not DO_NOTHING:
            assert isinstance(field, ForeignKeyField)
            _register_dependent(model, field)
    _specs.pop(id(schema), None)
    if not fields:
        return
    if getattr(schema, "backend_name", None) is None:
        # A backend given by name is bound at start-up: checked by each write instead.
        check_backend(schema)
    spec = IndexSpec(schema, fields)
    _specs[id(schema)] = spec
    _install_bucketed_keys(schema, spec)


def _register_dependent(model: type[Model], field: ForeignKeyField[Any]) -> None:
    to = field.to
    if isinstance(to, str):
        try:
            target = model if to == "self" else lookup_model(to)
        except LookupError:
            _pending.setdefault(to, []).append((model, field))
            return
    else:
        target = to
    _add_dependent(target, model, field)


def _add_dependent(target: type[Model], model: type[Model], field: ForeignKeyField[Any]) -> None:
    """Record that ``model.field`` points at ``target``; a redefinition of the same model
    (same module and name) replaces its earlier entry."""
    entries = _dependents.setdefault(id(target._schema), [])
    name = (model.__module__, model.__qualname__, field.name)
    entries[:] = [
        (ref, f)
        for ref, f in entries
        if (m := ref()) is not None and (m.__module__, m.__qualname__, f.name) != name
    ]
    entries.append((weakref.ref(model), field))


_pending: dict[str, list[tuple[type[Model], ForeignKeyField[Any]]]] = {}


def register_pending(model: type[Model]) -> None:
    """Foreign keys declared before the model they point at (by name)."""
    for name in (model.__name__, f"{model.__module__}.{model.__name__}"):
        for dep_model, field in _pending.pop(name, []):
            _add_dependent(model, dep_model, field)


def _install_bucketed_keys(schema: Schema, spec: IndexSpec) -> None:
    """On a backend with several buckets, a row key ends with its bucket's hash tag."""
    plain_key = schema.key
    plain_key_of = schema.key_of

    spec_schema = spec.schema
    tag = spec.tag
    crc32 = zlib.crc32
    # the tags of the buckets, built once per bucket count: tag_key(key, tag, b) is key + tags[b]
    tags: dict[int, list[str]] = {}

    def tagged(key: str) -> str:
        # spec.tagged(), buckets(), bucket_of() and tag_key() inlined: this runs once per
        # row read
        n = spec_schema.backend.capabilities.index_buckets
        if n <= 1:
            return key
        if spec.has_unique:  # one bucket
            n = 1
        suffixes = tags.get(n)
        if suffixes is None:
            suffixes = tags[n] = [tag_key("", text) for text in bucket_tags(tag, n)]
        return key + suffixes[crc32(key.encode()) % n if n > 1 else 0]

    plain_keys = schema.keys
    setattr(schema, "key", lambda pk: tagged(plain_key(pk)))  # noqa: B010
    setattr(schema, "key_of", lambda obj: tagged(plain_key_of(obj)))  # noqa: B010
    spec.untagged_key_of = plain_key_of
    setattr(schema, "keys", lambda pks: list(map(tagged, plain_keys(pks))))  # noqa: B010
    # The fast decode compares a row's key with the key it was read from: the tagged one.
    schema._fast_build = compile_build(schema, by_key_of=True, retag=tagged)


def untag(spec: IndexSpec, key: str) -> str:
    """A row key without its bucket tag (for matching it against the key format)."""
    return untag_key(key, spec.tag)


def on_delete_of(field: Field[Any]) -> OnDelete:
    value = getattr(field, "on_delete", DO_NOTHING)
    assert isinstance(value, OnDelete)
    return value


def is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
