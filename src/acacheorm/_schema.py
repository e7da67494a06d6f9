"""The frozen per-model schema: fields, primary key, key format, TTL, serializer, codec."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import _codec
from ._base import Model
from ._exceptions import ConfigurationError, ValidationError
from ._fields import Field
from ._keys import model_prefix, pk_text, row_key
from ._types import NOTHING
from .backends.base import Backend
from .serializers import MsgpackSerializer, Serializer
from .serializers.msgpack import values_unpacker


class Schema:
    """Everything the compiler needs to know about a model, computed once at definition."""

    def __init__(
        self,
        *,
        model: type[Model],
        name: str,
        namespace: str,
        fields: dict[str, Field[Any]],
        pk_names: tuple[str, ...],
        composite: bool,
        backend: Backend | str,
        serializer: Serializer,
        ttl: float | None,
        key_format: str | Callable[..., str] | None,
        read_serializers: tuple[Serializer, ...] = (),
    ) -> None:
        self.model = model
        self.model_name = model.__name__
        self.name = name
        self.namespace = namespace
        self.fields = fields
        self.field_names = tuple(fields)
        self.pk_names = pk_names
        self.pk_fields = tuple(fields[n] for n in pk_names)
        self._pk_fast_type = self.pk_fields[0].fast_type if len(pk_names) == 1 else None
        single = len(pk_names) == 1 and key_format is None
        self._single_attname = (
            getattr(self.pk_fields[0], "attname", pk_names[0]) if single else None
        )
        part = self.pk_fields[0].key_part
        # Field.key_part is str(value): the builtin itself then, without a method frame.
        self._single_key_part = str if getattr(part, "__func__", None) is Field.key_part else part
        self.composite = composite
        #: The name of a backend configured at start-up (``Meta.backend = "main"``), or None.
        self.backend_name: str | None = None
        if isinstance(backend, str):
            self.backend_name = backend  # a NamedSchema looks it up on each use
        else:
            self.backend = backend
        self.serializer = serializer
        self.ttl = ttl
        self.key_format = key_format
        self.prefix = model_prefix(namespace, name, key_format)
        self.attnames = {n: getattr(f, "attname", n) for n, f in fields.items()}
        self.attnames_set = frozenset(self.attnames.values())
        self._set_dict = _codec.dict_setter(model)
        #: Fields set to the current time by every write (``auto_now=True``).
        self.auto_now = tuple(f for f in fields.values() if getattr(f, "auto_now", False))
        layout = [f"{n}={type(f).__name__}{_codec.stored_options(f)}" for n, f in fields.items()]
        self.fingerprint = _codec.fingerprint(layout)
        self.binary = serializer.binary
        #: The header of a map row of this layout (envelope version 1).
        self.header = _codec.header(serializer.tag, self.fingerprint)
        #: Whether rows are written as arrays (envelope version 2, see `acacheorm._codec`).
        self.positional = serializer.positional and _codec.can_name_positionally(self.field_names)
        #: What every row written now starts with: the header, and for a positional row
        #: the layout check and the field names too.
        self.row_header = (
            _codec.positional_header(
                serializer.tag, self.fingerprint, _codec.layout_check(layout), self.field_names
            )
            if self.positional
            else self.header
        )
        # The serializers a payload may name: the model's own and Meta.read_serializers,
        # never whatever else the registry holds (a payload must not pick its own decoder).
        self.read_serializers = read_serializers
        self.readers: dict[int, Serializer] = {s.tag: s for s in (*read_serializers, serializer)}
        self._name_set = frozenset(fields)
        # Conversions needed on write; on read, the generated fast build (see _codec.compile_build).
        self._renamed = [(n, a) for n, a in self.attnames.items() if n != a]
        self._encoders = [(n, f.to_primitive) for n, f in fields.items() if not f.identity]
        self._value_encoders = [
            (i, n, f.to_primitive) for i, (n, f) in enumerate(fields.items()) if not f.identity
        ]
        # A row's values in field order: from an instance's __dict__, from a map body.
        self._attvalues = _codec.value_getter(tuple(self.attnames.values()))
        self._fieldvalues = _codec.value_getter(self.field_names)
        self._loads_values = serializer.loads_values
        # msgpack's own unpackb, for decode_many (without loads_values' Python frame)
        self._unpack_values = (
            values_unpacker() if type(serializer) is MsgpackSerializer and self.positional else None
        )
        self._plain = not self._renamed  # attribute names are the field names
        self._nfields = len(fields)
        self._fast_build: Callable[[list[Any], str], Model | None] = _codec.compile_build(self)

    # -- primary keys and keys --------------------------------------------------------------

    def normalize_pk(self, value: Any) -> tuple[Any, ...]:
        """A user's pk (a value, a tuple, a dict or an instance) as a tuple of clean values."""
        if (
            not self.composite
            and type(value) is self._pk_fast_type
            and (type(value) is not str or value.isascii())
        ):
            return (value,)
        names = self.pk_names
        if isinstance(value, Model):
            if type(value)._schema is not self:
                raise TypeError(
                    f"expected a {self.model_name} (or its primary key), "
                    f"not a {type(value).__name__}"
                )
            return self.pk_values(value)
        if isinstance(value, Mapping):
            unknown = set(value) - set(names) - {self.attnames[n] for n in names}
            if unknown:
                raise TypeError(
                    f"{self.model_name}: {sorted(unknown)} not part of the primary key {names}"
                )
            parts = []
            for n in names:
                if n in value:
                    parts.append(value[n])
                elif self.attnames[n] in value:
                    parts.append(value[self.attnames[n]])
                else:
                    raise TypeError(f"{self.model_name}: primary key part {n!r} missing")
            value = tuple(parts)
        elif not self.composite:
            value = (value,)
        elif not isinstance(value, tuple | list):
            raise TypeError(
                f"{self.model_name} has a composite primary key {names}; give a "
                f"tuple or a dict, not {value!r}"
            )
        if len(value) != len(names):
            raise TypeError(
                f"{self.model_name}: primary key {names} takes {len(names)} "
                f"values, got {len(value)}"
            )
        return tuple(self.clean_pk_part(f, v) for f, v in zip(self.pk_fields, value, strict=True))

    def clean_pk_part(self, field: Field[Any], value: Any) -> Any:
        if value is None:
            raise ValidationError(
                "a primary key may not be None", model=self.model_name, field=field.name, value=None
            )
        return field.clean(value)

    def pk_values(self, instance: Model) -> tuple[Any, ...]:
        d = instance.__dict__
        return tuple(d[self.attnames[n]] for n in self.pk_names)

    def normalize_pks(self, pks: Iterable[Any]) -> list[tuple[Any, ...]]:
        """`normalize_pk` of each of ``pks``, in order; plain ints and ASCII strs of a
        single-field key (`normalize_pk`'s own fast case) without a call each."""
        normalize = self.normalize_pk
        fast = None if self.composite else self._pk_fast_type
        if fast is int:
            return [(pk,) if type(pk) is int else normalize(pk) for pk in pks]
        if fast is str:
            return [(pk,) if type(pk) is str and pk.isascii() else normalize(pk) for pk in pks]
        return [normalize(pk) for pk in pks]

    def key(self, pk: tuple[Any, ...]) -> str:
        """The key under which the row with primary key values ``pk`` is stored."""
        if self._single_attname is not None:  # one key part, no key_format: row_key's case
            return self.prefix + self._single_key_part(pk[0])
        return row_key(self.prefix, self.pk_fields, pk, self.key_format)

    def keys(self, pks: list[tuple[Any, ...]]) -> list[str]:
        """`key` of each of ``pks``, in order."""
        if self._single_attname is not None:
            prefix = self.prefix
            part = self._single_key_part
            return [prefix + part(pk[0]) for pk in pks]
        return [self.key(pk) for pk in pks]

    def key_of(self, instance: Model) -> str:
        """The key of an instance's row."""
        if self._single_attname is not None:
            return self.prefix + self._single_key_part(instance.__dict__[self._single_attname])
        return self.key(self.pk_values(instance))

    def pk_key_part(self, pk: tuple[Any, ...]) -> str:
        """The text of a whole primary key inside another model's key (foreign keys)."""
        return pk_text(self.pk_fields, pk)

    # -- payloads ---------------------------------------------------------------------------

    def to_primitives(self, instance: Model) -> dict[str, Any]:
        """The row as a dict of primitives, by field name, in field order."""
        return _codec.to_primitives(self, instance)

    def encode(self, instance: Model) -> bytes:
        """The stored bytes for an instance: envelope header + serializer body."""
        return _codec.encode(self, instance)

    def decode(self, key: str, payload: bytes) -> Model:
        """An instance from stored bytes; `SerializationError` names the key and the model
        (see `acacheorm._codec.decode`)."""
        return _codec.decode(self, key, payload)

    def decode_many(self, keys: list[str], payloads: list[Any]) -> list[Model | None]:
        """`decode` for a multi-get's results (``None`` stays ``None``; an error in a slot is
        raised)."""
        return _codec.decode_many(self, keys, payloads)

    def build_lenient(self, data: dict[str, Any], binary: bool) -> Model:
        """An instance from a payload of another schema version (see `_codec.build_lenient`)."""
        return _codec.build_lenient(self, data, binary)

    def __repr__(self) -> str:
        return f"<Schema {self.model_name} key={self.prefix}... fields={list(self.fields)}>"


class NamedSchema(Schema):
    """A schema whose backend is named (``Meta.backend = "main"``): the name is looked up
    in `acacheorm.backends` on every use, so models can be imported before the backend is
    configured, and ``co.backends.override`` swaps it."""

    @property
    def backend(self) -> Backend:  # type: ignore[override]
        from .backends import get

        assert self.backend_name is not None
        return get(self.backend_name, self.model_name)


def resolve_ttl(schema_ttl: float | None, ttl: Any) -> float | None:
    """The TTL for a write: the call's ``ttl=`` if given, else the model's."""
    from .backends.base import normalize_ttl

    if ttl is NOTHING:
        return schema_ttl
    return normalize_ttl(ttl)


# -- the model registry -----------------------------------------------------------------

#: Every concrete model by class name (and by "module.Name"), for ForeignKeyField("Name").
_models_by_name: dict[str, list[type[Model]]] = {}


def register_model(cls: type[Model]) -> None:
    """Record a concrete model under its name and its "module.Name" (see `lookup_model`)."""
    _models_by_name.setdefault(cls.__name__, []).append(cls)
    _models_by_name.setdefault(f"{cls.__module__}.{cls.__name__}", []).append(cls)


def schema_of(cls: type) -> Schema | None:
    """The schema of a concrete model class, ``None`` for an abstract one."""
    schema = cls.__dict__.get("_schema")
    return schema if isinstance(schema, Schema) else None


def lookup_model(name: str, module: str | None = None, where: str = "") -> type[Model]:
    """The model called ``name`` (or ``"module.Name"``) for a foreign key declared in
    ``module``: a model of that name in ``module`` first (its latest definition, for a
    notebook that redefines it); else the only module that has one. Two other modules with
    one is a `ConfigurationError` naming both."""
    found = _models_by_name.get(name, [])
    if not found:
        raise LookupError(f"no model named {name!r} is defined")
    if module is not None:
        local = [m for m in found if m.__module__ == module]
        if local:
            return local[-1]
    modules = {m.__module__: m for m in found}  # the latest definition per module
    if len(modules) > 1:
        names = " and ".join(f"{m.__module__}.{m.__qualname__}" for m in modules.values())
        raise ConfigurationError(
            f"{where + ': ' if where else ''}the model name {name!r} is ambiguous ({names}); "
            "pass the class, or 'module.Name'"
        )
    return found[-1]
