"""The frozen per-model schema: fields, primary key, key format, TTL, serializer, codec."""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import _payload
from ._exceptions import SerializationError, ValidationError
from ._fields import KEY_SEPARATOR, Field, ListField, escape_key_part
from ._types import NOTHING
from .backends.base import Backend
from .serializers import Serializer, registry

#: Field types whose stored primitive is the value itself and is checked on the fast path
#: of a read by its exact type (``type(v) is int``: a bool is not an int).
_EXACT_TYPES = (int, float, bool, str)

if TYPE_CHECKING:
    from ._model import Model


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
        self._single_key_part = self.pk_fields[0].key_part
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
        # The namespace and the name are escaped like key parts, so that no other namespace
        # and name (namespace "a:b" with name "c" against namespace "a" with name "b:c") and
        # no composite key can produce the same prefix.
        self.prefix = (f"{escape_key_part(namespace)}{KEY_SEPARATOR}" if namespace else "") + (
            f"{escape_key_part(name)}{KEY_SEPARATOR}" if key_format is None else ""
        )
        self.attnames = {n: getattr(f, "attname", n) for n, f in fields.items()}
        self.attnames_set = frozenset(self.attnames.values())
        self._set_dict = _dict_setter(model)
        #: Fields set to the current time by every write (``auto_now=True``).
        self.auto_now = tuple(f for f in fields.values() if getattr(f, "auto_now", False))
        self.fingerprint = _payload.fingerprint(
            [f"{n}={type(f).__name__}{_stored_options(f)}" for n, f in fields.items()]
        )
        self.binary = serializer.binary
        self.header = _payload.header(serializer.tag, self.fingerprint)
        # The serializers a payload may name: the model's own and Meta.read_serializers,
        # never whatever else the registry holds (a payload must not pick its own decoder).
        self.read_serializers = read_serializers
        self.readers: dict[int, Serializer] = {s.tag: s for s in (*read_serializers, serializer)}
        self._name_set = frozenset(fields)
        # Conversions needed on write; on read, the generated fast build (see _compile_build).
        self._renamed = [(n, a) for n, a in self.attnames.items() if n != a]
        self._encoders = [(n, f.to_primitive) for n, f in fields.items() if not f.identity]
        self._plain = not self._renamed  # attribute names are the field names
        self._nfields = len(fields)
        self._fast_build: Callable[[dict[str, Any], str], Model | None] = _compile_build(self)

    # -- primary keys and keys --------------------------------------------------------------

    def normalize_pk(self, value: Any) -> tuple[Any, ...]:
        """A user's pk (a value, a tuple, a dict or an instance) as a tuple of clean values."""
        if (
            not self.composite
            and type(value) is self._pk_fast_type
            and (type(value) is not str or value.isascii())
        ):
            return (value,)
        from ._model import Model

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

    def key(self, pk: tuple[Any, ...]) -> str:
        """The key under which the row with primary key values ``pk`` is stored."""
        fmt = self.key_format
        if fmt is None:
            if len(pk) == 1:
                return self.prefix + self.pk_fields[0].key_part(pk[0])
            return self.prefix + KEY_SEPARATOR.join(
                f.key_part(v) for f, v in zip(self.pk_fields, pk, strict=True)
            )
        if callable(fmt):
            return self.prefix + str(fmt(*pk))
        return self.prefix + fmt % pk

    def key_of(self, instance: Model) -> str:
        """The key of an instance's row."""
        if self._single_attname is not None:
            return self.prefix + self._single_key_part(instance.__dict__[self._single_attname])
        return self.key(self.pk_values(instance))

    def pk_key_part(self, pk: tuple[Any, ...]) -> str:
        """The text of a whole primary key inside another model's key (foreign keys)."""
        return KEY_SEPARATOR.join(
            escape_key_part(f.key_part(v)) for f, v in zip(self.pk_fields, pk, strict=True)
        )

    # -- payloads ---------------------------------------------------------------------------

    def to_primitives(self, instance: Model) -> dict[str, Any]:
        """The row as a dict of primitives, by field name, in field order."""
        d = instance.__dict__
        binary = self.binary
        if self._plain and len(d) == self._nfields:
            data = d.copy()  # exactly the fields, in field order (see __init__/decode)
        else:
            data = {n: d[a] for n, a in self.attnames.items()}
        for name, convert in self._encoders:
            v = data[name]
            if v is not None:
                try:
                    data[name] = convert(v, binary)
                except Exception as exc:
                    raise SerializationError(
                        f"field {name!r} cannot be converted for storage: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
        return data

    def encode(self, instance: Model) -> bytes:
        """The stored bytes for an instance: envelope header + serializer body."""
        try:
            return self.header + self.serializer.dumps(self.to_primitives(instance))
        except SerializationError as exc:
            raise SerializationError(
                exc.reason, key=self.key_of(instance), model=self.model_name
            ) from exc

    def decode(self, key: str, payload: bytes) -> Model:
        """An instance from stored bytes; `SerializationError` names the key and the model.

        The payload must be written by the model's serializer or one of
        ``Meta.read_serializers``, every value must fit its field, and the row's primary key
        must be the one ``key`` is for (a row copied under another key is refused).
        """
        if payload[:6] == self.header:  # the fast path, as in decode_many
            try:
                data = self.serializer.loads(payload[6:])
                obj = self._fast_build(data, key) if data.keys() == self._name_set else None
            except Exception:
                obj = None
            if obj is not None:
                return obj
        model = self.model_name
        try:
            return self._decode(key, payload)
        except SerializationError as exc:
            raise SerializationError(exc.reason, key=key, model=model) from exc
        except _payload.EnvelopeError as exc:
            raise SerializationError(str(exc), key=key, model=model) from exc
        except Exception as exc:  # a field's conversion, a StructField's deserializer, ...
            raise SerializationError(
                f"stored value does not fit the model: {type(exc).__name__}: {exc}",
                key=key,
                model=model,
            ) from exc

    def _decode(self, key: str, payload: bytes) -> Model:
        """The careful way: a payload of another serializer or schema version, or one the
        fast build refused (a value of another type than the model writes, such as an int
        for a float, a bad value, another row's key), converted and validated field by
        field, so that the error says which."""
        tag, fingerprint, body = _payload.unwrap(payload)
        serializer = self.readers.get(tag)
        if serializer is None:
            raise SerializationError(self._foreign_tag(tag))
        data = serializer.loads(body)
        if tag == self.serializer.tag and fingerprint == self.fingerprint:
            if data.keys() != self._name_set:
                raise SerializationError("stored fields do not match the model's fields")
        obj = self.build_lenient(data, serializer.binary)
        self._check_key(key, obj)
        return obj

    def _foreign_tag(self, tag: int) -> str:
        other = registry.get_by_tag(tag)
        if other is None:
            return f"payload written by an unknown serializer (tag {tag:#06x})"
        return (
            f"payload written by serializer {other.name!r} (tag {tag:#06x}), which "
            f"{self.model_name} does not read: it reads {self.serializer.name!r}"
            + "".join(f", {s.name!r}" for s in self.read_serializers)
            + " (list a serializer it used before in Meta.read_serializers)"
        )

    def _check_key(self, key: str, obj: Model) -> None:
        own = self.key_of(obj)
        if own != key:
            pk = ", ".join(
                f"{n}={v!r}" for n, v in zip(self.pk_names, self.pk_values(obj), strict=True)
            )
            raise SerializationError(
                f"the stored row is the one with {pk}, whose key is {own!r}: a row found "
                "under another row's key is refused"
            )

    def decode_many(self, keys: list[str], payloads: list[Any]) -> list[Model | None]:
        """`decode` for a multi-get's results (``None`` stays ``None``; an error in a slot is
        raised).

        The hot path of every read, so it is kept flat. A large batch is decoded with the
        cyclic garbage collector paused: decoding creates no reference cycles, only many
        small containers, and each of them would otherwise count towards a collection that
        walks every live object (it halved the decode time of 10,000 rows, measured).
        """
        if len(payloads) < 256 or not gc.isenabled():
            return self._decode_many(keys, payloads)
        gc.disable()
        try:
            return self._decode_many(keys, payloads)
        finally:
            gc.enable()

    def _decode_many(self, keys: list[str], payloads: list[Any]) -> list[Model | None]:
        header = self.header
        loads = self.serializer.loads
        names = self._name_set
        build = self._fast_build
        out: list[Model | None] = []
        append = out.append
        for key, payload in zip(keys, payloads, strict=True):
            if payload is None:
                append(None)
                continue
            if isinstance(payload, BaseException):
                raise payload
            if payload[:6] != header:
                append(self.decode(key, payload))
                continue
            try:
                data = loads(payload[6:])
                obj = build(data, key) if data.keys() == names else None
            except Exception:
                obj = None
            append(self.decode(key, payload) if obj is None else obj)  # decode raises why
        return out

    def build_lenient(self, data: dict[str, Any], binary: bool) -> Model:
        """An instance from a payload of another schema version: unknown fields are dropped,
        missing ones take their defaults, every value is validated."""
        values: dict[str, Any] = {}
        for name, field in self.fields.items():
            if name in data:
                v = data[name]
                try:
                    if v is not None:
                        v = field.from_primitive(v, binary)
                    values[self.attnames[name]] = field.clean(v)
                except ValidationError as exc:
                    raise SerializationError(f"stored value does not fit: {exc}") from exc
                except Exception as exc:
                    raise SerializationError(
                        f"stored value of field {name!r} does not fit: {type(exc).__name__}: {exc}"
                    ) from exc
            elif field.has_default():
                values[self.attnames[name]] = field.get_default()
            else:
                raise SerializationError(f"stored row has no value for field {name!r}")
        obj = self.model.__new__(self.model)
        self._set_dict(obj, values)
        return obj

    def __repr__(self) -> str:
        return f"<Schema {self.model_name} key={self.prefix}... fields={list(self.fields)}>"


def _stored_options(field: Field[Any]) -> str:
    """The options of ``field`` that change what is stored (a TimestampField's resolution),
    for the schema fingerprint; empty for a field without any, so its fingerprint stays."""
    extra = str(getattr(field, "fingerprint_extra", ""))
    item = getattr(field, "field", None)  # a ListField's item field
    if isinstance(item, Field):
        inner = _stored_options(item)
        if inner:
            extra += f"[{type(item).__name__}{inner}]"
    return extra


class NamedSchema(Schema):
    """A schema whose backend is named (``Meta.backend = "main"``): the name is looked up
    in `acacheorm.backends` on every use, so models can be imported before the backend is
    configured, and ``co.backends.override`` swaps it."""

    @property
    def backend(self) -> Backend:  # type: ignore[override]
        from .backends import get

        assert self.backend_name is not None
        return get(self.backend_name, self.model_name)


def _dict_setter(model: type) -> Callable[[Any, dict[str, Any]], None]:
    """Sets an instance's whole ``__dict__`` (the C descriptor, not ``Model.__setattr__``)."""
    for klass in model.__mro__:
        descriptor = klass.__dict__.get("__dict__")
        if descriptor is not None:
            return descriptor.__set__  # type: ignore[no-any-return]
    raise TypeError(f"{model.__name__} instances have no __dict__")  # pragma: no cover


def resolve_ttl(schema_ttl: float | None, ttl: Any) -> float | None:
    """The TTL for a write: the call's ``ttl=`` if given, else the model's."""
    from .backends.base import normalize_ttl

    if ttl is NOTHING:
        return schema_ttl
    return normalize_ttl(ttl)


def _exact_type(field: Field[Any]) -> type | None:
    """The exact type a stored primitive of ``field`` has, for a field stored as itself."""
    if field.identity and not isinstance(field, ListField):
        t = field.python_type
        if isinstance(t, type) and t in _EXACT_TYPES:
            return t
    return None


def _compile_build(
    schema: Schema, by_key_of: bool = False
) -> Callable[[dict[str, Any], str], Model | None]:
    """The fast build of a row of the schema's own format: a function generated once per
    model, with one straight-line check per field (cheaper than a loop over the fields,
    measured), that turns the decoded dict into an instance in place, or returns
    None when anything is off so the caller takes the careful way, which says what.

    A field stored as itself is checked by exact type (``type(v) is int``: a bool is no
    int; ``None`` only if the field is ``null``); a list of such items item by item; any
    other field is converted by its ``from_primitive``, which refuses a primitive of the
    wrong type. Last, the key is recomputed from the row and compared with the key read.
    Names enter the source only through ``repr``.
    """
    env: dict[str, Any] = {
        "_new": object.__new__,
        "_set_dict": schema._set_dict,
        "_model": schema.model,
        "_binary": schema.binary,
        "_prefix": schema.prefix,
        "_key_of": schema.key_of,
    }
    lines = ["def build(data, key):"]
    add = lines.append

    def check_type(var: str, exact: type, nullable: bool, indent: str) -> None:
        env[f"_t_{exact.__name__}"] = exact
        test = f"type({var}) is not _t_{exact.__name__}"
        add(f"{indent}if {test}{f' and {var} is not None' if nullable else ''}:")
        add(f"{indent}    return None")

    for i, (name, field) in enumerate(schema.fields.items()):
        add(f"    v = data[{name!r}]")
        exact = _exact_type(field)
        if exact is not None:
            check_type("v", exact, field.null, "    ")
            continue
        if not field.null:
            add("    if v is None:")
            add("        return None")
        inner = "    " if not field.null else "        "
        if field.null:
            add("    if v is not None:")
        item = field.field if isinstance(field, ListField) and field.identity else None
        item_exact = _exact_type(item) if item is not None else None
        if item is not None and item_exact is not None:
            add(f"{inner}if type(v) is not list:")
            add(f"{inner}    return None")
            add(f"{inner}for x in v:")
            check_type("x", item_exact, item.null, inner + "    ")
        elif field.identity:  # a list of lists, a custom field: convert and validate
            env[f"_c{i}"] = field.clean
            env[f"_p{i}"] = field.from_primitive
            add(f"{inner}data[{name!r}] = _c{i}(_p{i}(v, _binary))")
        else:
            env[f"_p{i}"] = field.from_primitive
            add(f"{inner}data[{name!r}] = _p{i}(v, _binary)")
    for name, attname in schema._renamed:
        add(f"    data[{attname!r}] = data.pop({name!r})")
    add("    obj = _new(_model)")
    add("    _set_dict(obj, data)")  # not through Model.__setattr__
    attname = None if by_key_of else schema._single_attname
    if attname is not None:
        pk_field = schema.pk_fields[0]
        env["_key_part"] = str if type(pk_field).key_part is Field.key_part else pk_field.key_part
        add(f"    if _prefix + _key_part(data[{attname!r}]) != key:")
    else:
        add("    if _key_of(obj) != key:")
    add("        return None")
    add("    return obj")
    exec("\n".join(lines), env)  # the source holds field names only as repr()s
    build: Callable[[dict[str, Any], str], Model | None] = env["build"]
    return build
