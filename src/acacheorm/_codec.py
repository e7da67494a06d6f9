"""What is stored: the envelope around every value, and rows encoded and decoded.

The envelope is a few bytes saying who wrote a value and how:

```
byte 0     0xAC                       magic
byte 1     format version             1: the body is a map of field names to values
                                      2: the body is the array of the values (positional)
bytes 2-3  serializer tag (big-endian) which serializer wrote the body
bytes 4-5  schema fingerprint          which field layout the body has (16 bits)
version 1:
bytes 6-   the serializer's body, a map
version 2:
bytes 6-7  layout check                16 more bits of the layout's hash (another hash)
bytes 8-   the field names            UTF-8, each followed by 0x1F, the last by 0x1E
then       the serializer's body, the array of the values in that order
```

Models whose serializer can write arrays (``Serializer.positional``: msgpack) store version
2; the others (JSON, readable as it is in ``redis-cli``; pickle, whose signature covers the
body only, so names outside it could be relabelled; protobuf, whose messages have their own
field numbers) store version 1. Both versions stay readable by every model.

A reader picks the serializer by its tag among those its model reads (its own and
``Meta.read_serializers``, so a model that changed serializer still reads old rows, and a
payload can never choose any other registered serializer). It takes the fast path when the
whole prefix is its own: for version 2 that is the tag, both fingerprint halves (32 bits of
hash over field names, types and stored options) *and the exact field names in order*, so
positions are never trusted on a hash alone: a 16-bit collision cannot swap two values, and a
row of another layout (fields added, removed, reordered) is read by its names, the careful
way. The array must hold exactly one value per name, and every value is type-checked.

Rows are encoded by each field's ``to_primitive`` and the model's serializer, and decoded
by a fast build generated once per model (`compile_build`: the values in field order,
checked by exact type, the instance's ``__dict__`` made in one dict display) or, when
anything is off, the careful way that says what (`build_lenient`).
"""

from __future__ import annotations

import datetime
import hashlib
import operator
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ._exceptions import SerializationError, ValidationError
from ._fields import Field
from ._fields_scalar import EnumField
from ._fields_struct import ListField
from ._fields_time import DateField, DateTimeField, DateTimeTZField
from ._types import collector_paused
from .serializers import Serializer, registry

if TYPE_CHECKING:
    from ._base import Model
    from ._schema import Schema

MAGIC = 0xAC
VERSION = 1  # a map body
POSITIONAL = 2  # an array body after the field names
HEADER_SIZE = 6
_HEADER = struct.Struct(">BBHH")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
_NAME_END = b"\x1f"  # after each field name of a positional envelope
_NAMES_END = b"\x1e"  # after the last one


_dt_fromiso = datetime.datetime.fromisoformat

#: Field types whose stored primitive is the value itself and is checked on the fast path
#: of a read by its exact type (``type(v) is int``: a bool is not an int).
_EXACT_TYPES = (int, float, bool, str)


class EnvelopeError(ValueError):
    """The bytes are not an acacheorm envelope this version can read."""


class Envelope(NamedTuple):
    """A stored value taken apart (see `open_envelope`)."""

    version: int
    tag: int
    fingerprint: int
    #: version 2 only: the second 16 bits of the layout hash, and the field names in order
    check: int | None
    names: tuple[str, ...] | None
    body: bytes


def header(tag: int, fingerprint: int, version: int = VERSION) -> bytes:
    """The six header bytes for ``tag`` and ``fingerprint`` (computed once per schema)."""
    return _pack_header(MAGIC, version, tag, fingerprint)


def positional_header(tag: int, fingerprint: int, check: int, names: tuple[str, ...]) -> bytes:
    """The whole prefix of a positional row: header, layout check and field names."""
    encoded = [n.encode("utf-8") for n in names]
    return (
        header(tag, fingerprint, POSITIONAL)
        + check.to_bytes(2, "big")
        + _NAME_END.join(encoded)
        + _NAMES_END
    )


def can_name_positionally(names: tuple[str, ...]) -> bool:
    """Whether field names fit a positional envelope (no separator byte in any)."""
    return bool(names) and all(n and "\x1e" not in n and "\x1f" not in n for n in names)


def open_envelope(data: bytes) -> Envelope:
    """Take a stored value apart; `EnvelopeError` if it is not an envelope of a version
    this one reads."""
    if len(data) < HEADER_SIZE:
        raise EnvelopeError(f"payload of {len(data)} bytes is shorter than the envelope header")
    magic, version, tag, fingerprint = _unpack_header(data)
    if magic != MAGIC:
        raise EnvelopeError("payload does not start with the acacheorm envelope marker")
    if version == VERSION:
        return Envelope(version, tag, fingerprint, None, None, data[HEADER_SIZE:])
    if version != POSITIONAL:
        raise EnvelopeError(
            f"payload envelope version {version} is not readable by this version "
            f"(which reads versions {VERSION} and {POSITIONAL})"
        )
    end = data.find(_NAMES_END, HEADER_SIZE + 2)
    if end < 0:
        raise EnvelopeError("the field names of a positional payload have no end marker")
    try:
        names = tuple(str(data[HEADER_SIZE + 2 : end], "utf-8").split("\x1f"))
    except UnicodeDecodeError as exc:
        raise EnvelopeError(
            f"the field names of a positional payload are not UTF-8: {exc}"
        ) from None
    if "" in names or len(set(names)) != len(names):
        raise EnvelopeError("the field names of a positional payload are empty or repeated")
    check = int.from_bytes(data[HEADER_SIZE : HEADER_SIZE + 2], "big")
    return Envelope(version, tag, fingerprint, check, names, data[end + 1 :])


def unwrap(data: bytes) -> tuple[int, int, bytes]:
    """Split an envelope into ``(tag, fingerprint, body)``; `EnvelopeError` if it is not one.
    (`open_envelope` also says whether the body is positional, and its field names.)"""
    envelope = open_envelope(data)
    return envelope.tag, envelope.fingerprint, envelope.body


def body_fields(envelope: Envelope, serializer: Serializer) -> dict[str, Any]:
    """The stored row as a dict by field name, whichever form its body has;
    `SerializationError` if the body is not the form its envelope says."""
    if envelope.names is None:
        return serializer.loads(envelope.body)
    if not serializer.positional:
        raise SerializationError(
            f"the payload is a positional row (envelope version {POSITIONAL}), which "
            f"serializer {serializer.name!r} does not write"
        )
    values = serializer.loads_values(envelope.body)
    if len(values) != len(envelope.names):
        raise SerializationError(
            f"the stored row holds {len(values)} values for its {len(envelope.names)} field names"
        )
    return dict(zip(envelope.names, values, strict=True))


def fingerprint(parts: list[str]) -> int:
    """A 16-bit fingerprint of a schema description."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=2).digest()
    return int.from_bytes(digest, "big")


def layout_check(parts: list[str]) -> int:
    """16 more bits of hash of a schema description (independent of `fingerprint`: keyed
    by another personalization), for the header of a positional row."""
    digest = hashlib.blake2b(
        "\x1f".join(parts).encode(), digest_size=2, person=b"acacheorm.layout"
    ).digest()
    return int.from_bytes(digest, "big")


def value_getter(attnames: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A function of a dict giving the tuple of its values under ``attnames``, in order."""
    if len(attnames) == 1:
        (only,) = attnames
        return lambda d: (d[only],)
    return operator.itemgetter(*attnames)


# -- rows ------------------------------------------------------------------------------------


def to_primitives(schema: Schema, instance: Model) -> dict[str, Any]:
    """The row as a dict of primitives, by field name, in field order."""
    d = instance.__dict__
    binary = schema.binary
    if schema._plain and len(d) == schema._nfields:
        data = d.copy()  # exactly the fields, in field order (see __init__/decode)
    else:
        data = {n: d[a] for n, a in schema.attnames.items()}
    for name, convert in schema._encoders:
        v = data[name]
        if v is not None:
            try:
                data[name] = convert(v, binary)
            except Exception as exc:
                raise _unstorable(name, exc) from exc
    return data


def to_values(schema: Schema, instance: Model) -> list[Any]:
    """The row as the list of its primitives, in field order."""
    values = [*schema._attvalues(instance.__dict__)]
    binary = schema.binary
    for i, name, convert in schema._value_encoders:
        v = values[i]
        if v is not None:
            try:
                values[i] = convert(v, binary)
            except Exception as exc:
                raise _unstorable(name, exc) from exc
    return values


def _unstorable(name: str, exc: Exception) -> SerializationError:
    """The error of a field value that its field cannot convert for storage."""
    return SerializationError(
        f"field {name!r} cannot be converted for storage: {type(exc).__name__}: {exc}"
    )


def encode(schema: Schema, instance: Model) -> bytes:
    """The stored bytes for an instance: envelope header + serializer body."""
    try:
        if schema.positional:
            return schema.row_header + schema.serializer.dumps_values(to_values(schema, instance))
        return schema.header + schema.serializer.dumps(to_primitives(schema, instance))
    except SerializationError as exc:
        raise SerializationError(
            exc.reason, key=schema.key_of(instance), model=schema.model_name
        ) from exc


def decode(schema: Schema, key: str, payload: bytes) -> Model:
    """An instance from stored bytes; `SerializationError` names the key and the model.

    The payload must be written by the model's serializer or one of
    ``Meta.read_serializers``, every value must fit its field, and the row's primary key
    must be the one ``key`` is for (a row copied under another key is refused).
    """
    obj = None
    if schema.positional:  # the fast path, as in decode_many
        prefix = schema.row_header
        if payload[: len(prefix)] == prefix:
            unpack = schema._unpack_values
            try:
                body = payload[len(prefix) :]
                if unpack is not None:
                    values = unpack[0](body, ext_hook=unpack[1])
                else:
                    values = schema._loads_values(body)
                obj = schema._fast_build(values, key)
            except Exception:
                obj = None
    if obj is None and payload[:HEADER_SIZE] == schema.header:  # a map of the current layout
        try:
            data = schema.serializer.loads(payload[HEADER_SIZE:])
            if data.keys() == schema._name_set:
                obj = schema._fast_build([*schema._fieldvalues(data)], key)
        except Exception:
            obj = None
    if obj is not None:
        return obj
    model = schema.model_name
    try:
        return _decode(schema, key, payload)
    except SerializationError as exc:
        raise SerializationError(exc.reason, key=key, model=model) from exc
    except EnvelopeError as exc:
        raise SerializationError(str(exc), key=key, model=model) from exc
    except Exception as exc:  # a field's conversion, a StructField's deserializer, ...
        raise SerializationError(
            f"stored value does not fit the model: {type(exc).__name__}: {exc}",
            key=key,
            model=model,
        ) from exc


def _decode(schema: Schema, key: str, payload: bytes) -> Model:
    """The careful way: a payload of another serializer or schema version, or one the
    fast build refused (a value of another type than the model writes, such as an int
    for a float, a bad value, another row's key), converted and validated field by
    field, so that the error says which."""
    envelope = open_envelope(payload)
    tag = envelope.tag
    serializer = schema.readers.get(tag)
    if serializer is None:
        raise SerializationError(_foreign_tag(schema, tag))
    if tag == schema.serializer.tag and envelope.fingerprint == schema.fingerprint:
        # A row claiming the model's own layout must have it: a 16-bit fingerprint alone
        # is no proof (two layouts share one in 65,536), so a positional row's whole
        # layout (the second fingerprint half and the names) must be the model's too.
        if envelope.names is not None and not payload.startswith(schema.row_header):
            raise SerializationError(
                f"stored layout (fields {', '.join(envelope.names)}; check "
                f"{envelope.check:#06x}) is not the model's although its fingerprint is"
            )
    data = body_fields(envelope, serializer)
    if (
        tag == schema.serializer.tag
        and envelope.fingerprint == schema.fingerprint
        and data.keys() != schema._name_set
    ):
        raise SerializationError("stored fields do not match the model's fields")
    obj = build_lenient(schema, data, serializer.binary)
    _check_key(schema, key, obj)
    return obj


def _foreign_tag(schema: Schema, tag: int) -> str:
    other = registry.get_by_tag(tag)
    if other is None:
        return f"payload written by an unknown serializer (tag {tag:#06x})"
    return (
        f"payload written by serializer {other.name!r} (tag {tag:#06x}), which "
        f"{schema.model_name} does not read: it reads {schema.serializer.name!r}"
        + "".join(f", {s.name!r}" for s in schema.read_serializers)
        + " (list a serializer it used before in Meta.read_serializers)"
    )


def _check_key(schema: Schema, key: str, obj: Model) -> None:
    own = schema.key_of(obj)
    if own != key:
        pk = ", ".join(
            f"{n}={v!r}" for n, v in zip(schema.pk_names, schema.pk_values(obj), strict=True)
        )
        raise SerializationError(
            f"the stored row is the one with {pk}, whose key is {own!r}: a row found "
            "under another row's key is refused"
        )


def decode_many(schema: Schema, keys: list[str], payloads: list[Any]) -> list[Model | None]:
    """`decode` for a multi-get's results (``None`` stays ``None``; an error in a slot is
    raised).

    The hot path of every read, so it is kept flat. A large batch is decoded with the
    cyclic garbage collector paused: decoding creates no reference cycles, only many
    small containers, and each of them would otherwise count towards a collection that
    walks every live object (it halved the decode time of 10,000 rows, measured).
    """
    return collector_paused(len(payloads), _decode_many, schema, keys, payloads)


def _decode_many(schema: Schema, keys: list[str], payloads: list[Any]) -> list[Model | None]:
    if not schema.positional:
        return _decode_many_maps(schema, keys, payloads)
    prefix = schema.row_header
    size = len(prefix)
    build = schema._fast_build
    out: list[Model | None] = []
    append = out.append
    if schema._unpack_values is not None:  # msgpack's: the same loop, unpackb called inline
        unpackb, ext_hook = schema._unpack_values
        for key, payload in zip(keys, payloads, strict=True):
            if payload.__class__ is bytes and payload[:size] == prefix:
                try:
                    obj = build(unpackb(payload[size:], ext_hook=ext_hook), key)
                except Exception:
                    obj = None
                append(decode(schema, key, payload) if obj is None else obj)  # decode says why
            else:
                append(_other_slot(schema, key, payload))
        return out
    loads = schema._loads_values
    for key, payload in zip(keys, payloads, strict=True):
        if payload.__class__ is bytes and payload[:size] == prefix:
            try:
                obj = build(loads(payload[size:]), key)
            except Exception:
                obj = None
            append(decode(schema, key, payload) if obj is None else obj)  # decode says why
        else:
            append(_other_slot(schema, key, payload))
    return out


def _other_slot(schema: Schema, key: str, payload: Any) -> Model | None:
    """A multi-get slot that is not a row of the current layout: a miss, an error (raised),
    or a payload of another form, read by `decode`."""
    if payload is None:
        return None
    if isinstance(payload, BaseException):
        raise payload
    return decode(schema, key, payload)


def _decode_many_maps(schema: Schema, keys: list[str], payloads: list[Any]) -> list[Model | None]:
    header = schema.header
    loads = schema.serializer.loads
    names = schema._name_set
    values_of = schema._fieldvalues
    build = schema._fast_build
    out: list[Model | None] = []
    append = out.append
    for key, payload in zip(keys, payloads, strict=True):
        if payload is None:
            append(None)
            continue
        if isinstance(payload, BaseException):
            raise payload
        if payload[:HEADER_SIZE] != header:
            append(decode(schema, key, payload))
            continue
        try:
            data = loads(payload[HEADER_SIZE:])
            obj = build([*values_of(data)], key) if data.keys() == names else None
        except Exception:
            obj = None
        append(decode(schema, key, payload) if obj is None else obj)  # decode raises why
    return out


def build_lenient(schema: Schema, data: dict[str, Any], binary: bool) -> Model:
    """An instance from a payload of another schema version: unknown fields are dropped,
    missing ones take their defaults, every value is validated."""
    values: dict[str, Any] = {}
    for name, field in schema.fields.items():
        if name in data:
            v = data[name]
            try:
                if v is not None:
                    v = field.from_primitive(v, binary)
                values[schema.attnames[name]] = field.clean(v)
            except ValidationError as exc:
                raise SerializationError(f"stored value does not fit: {exc}") from exc
            except Exception as exc:
                raise SerializationError(
                    f"stored value of field {name!r} does not fit: {type(exc).__name__}: {exc}"
                ) from exc
        elif field.has_default():
            values[schema.attnames[name]] = field.get_default()
        else:
            raise SerializationError(f"stored row has no value for field {name!r}")
    obj = schema.model.__new__(schema.model)
    schema._set_dict(obj, values)
    return obj


def stored_options(field: Field[Any]) -> str:
    """The options of ``field`` that change what is stored (a TimestampField's resolution),
    for the schema fingerprint; empty for a field without any, so its fingerprint stays."""
    extra = str(getattr(field, "fingerprint_extra", ""))
    item = getattr(field, "field", None)  # a ListField's item field
    if isinstance(item, Field):
        inner = stored_options(item)
        if inner:
            extra += f"[{type(item).__name__}{inner}]"
    return extra


def _exact_type(field: Field[Any]) -> type | None:
    """The exact type a stored primitive of ``field`` has, for a field stored as itself."""
    if field.identity and not isinstance(field, ListField):
        t = field.python_type
        if isinstance(t, type) and t in _EXACT_TYPES:
            return t
    return None


def compile_build(
    schema: Schema, by_key_of: bool = False, retag: Callable[[str], str] | None = None
) -> Callable[[list[Any], str], Model | None]:
    """The fast build of a row of the schema's own layout: a function generated once per
    model, straight-line code with one check per field (cheaper than a loop over the
    fields, measured), that takes the row's values in field order (a ``list``: a
    positional body as decoded, or a map body's values picked in field order) and returns
    the instance, or None when anything is off so the caller takes the careful way, which
    says what (a list of another length raises ValueError, which the callers treat alike).

    A field stored as itself is checked by exact type (``type(v) is int``: a bool is no
    int; ``None`` only if the field is ``null``); a list of such items item by item; any
    other field is converted by its ``from_primitive``, which refuses a primitive of the
    wrong type. Then the key is recomputed from the row and compared with the key read
    (``by_key_of``: by ``schema.key_of``; ``retag``: a single primary key's plain key passed
    through it, the same key ``key_of`` gives, without the calls around it). Last, the
    instance's ``__dict__`` is set to one dict display of the values (not through
    ``Model.__setattr__``). Names enter the source only through ``repr``.
    """
    env: dict[str, Any] = {
        "_new": object.__new__,
        "_set_dict": schema._set_dict,
        "_model": schema.model,
        "_binary": schema.binary,
        "_prefix": schema.prefix,
        "_key_of": schema.key_of,
        "_list": list,
    }
    fields = list(schema.fields.items())
    var = [f"v{i}" for i in range(len(fields))]
    lines = [
        "def build(values, key):",
        "    if type(values) is not _list:",
        "        return None",
        f"    {', '.join(var)}, = values",
    ]
    add = lines.append

    def check_type(v: str, exact: type, nullable: bool, indent: str) -> None:
        env[f"_t_{exact.__name__}"] = exact
        test = f"type({v}) is not _t_{exact.__name__}"
        add(f"{indent}if {test}{f' and {v} is not None' if nullable else ''}:")
        add(f"{indent}    return None")

    for i, (_name, field) in enumerate(fields):
        v = var[i]
        exact = _exact_type(field)
        if exact is not None:
            check_type(v, exact, field.null, "    ")
            continue
        inner = "    " if not field.null else "        "
        # Every check below starts with an exact type check, which refuses None too.
        body: list[str] = []
        item = field.field if isinstance(field, ListField) and field.identity else None
        item_exact = _exact_type(item) if item is not None else None
        if item is not None and item_exact is not None:
            body.append(f"{inner}if type({v}) is not _list:")
            body.append(f"{inner}    return None")
            body.append(f"{inner}for x in {v}:")
            env[f"_t_{item_exact.__name__}"] = item_exact
            test = f"type(x) is not _t_{item_exact.__name__}"
            body.append(f"{inner}    if {test}{' and x is not None' if item.null else ''}:")
            body.append(f"{inner}        return None")
        elif not _inline_conversion(i, field, v, env, inner, body.append):
            if not field.null:  # a field's own conversion might take None
                add(f"    if {v} is None:")
                add("        return None")
            env[f"_p{i}"] = field.from_primitive
            if field.identity:  # a list of lists, a custom field: convert and validate
                env[f"_c{i}"] = field.clean
                body.append(f"{inner}{v} = _c{i}(_p{i}({v}, _binary))")
            else:
                body.append(f"{inner}{v} = _p{i}({v}, _binary)")
        if field.null:
            add(f"    if {v} is not None:")
        lines.extend(body)
    display = (
        "{"
        + ", ".join(f"{schema.attnames[n]!r}: {var[i]}" for i, (n, _) in enumerate(fields))
        + "}"
    )
    attname = None if by_key_of and retag is None else schema._single_attname
    if attname is not None:
        pk_var = var[[schema.attnames[n] for n, _ in fields].index(attname)]
        pk_field = schema.pk_fields[0]
        env["_key_part"] = str if type(pk_field).key_part is Field.key_part else pk_field.key_part
        if retag is not None:
            env["_retag"] = retag
            add(f"    if _retag(_prefix + _key_part({pk_var})) != key:")
        else:
            add(f"    if _prefix + _key_part({pk_var}) != key:")
        add("        return None")
        add("    obj = _new(_model)")
        add(f"    _set_dict(obj, {display})")
    else:
        add("    obj = _new(_model)")
        add(f"    _set_dict(obj, {display})")
        add("    if _key_of(obj) != key:")
        add("        return None")
    add("    return obj")
    exec("\n".join(lines), env)  # the source holds field names only as repr()s
    build: Callable[[list[Any], str], Model | None] = env["build"]
    return build


def _inline_conversion(
    i: int, field: Field[Any], v: str, env: dict[str, Any], indent: str, add: Callable[[str], None]
) -> bool:
    """The source of the fast read of a field of one of a few built-in types whose
    ``from_primitive`` is short enough to write inline (without its calls), or False.

    Each is as strict as the ``from_primitive`` it stands for, or stricter (exact types:
    a row it refuses takes the careful way, which reads it if the field's own
    conversion does): an `EnumField` whose members' values are all ``int`` or all
    ``str`` looks the member up by a value of that exact type; a `DateTimeTZField` (exactly
    that class) reads ISO text and takes the result only if it is in UTC, as written; a
    `DateTimeField` or `DateField` reads ISO text; a `ForeignKeyField` to a model class
    with a single primary key stored as itself checks that key's exact type.
    """
    kind = type(field)
    if kind is EnumField:
        types = {type(value) for value in field._by_value}
        if len(types) != 1 or next(iter(types)) not in (int, str):
            return False
        env[f"_vt{i}"] = next(iter(types))
        env[f"_m{i}"] = {value: member for value, (member, _) in field._by_value.items()}
        add(f"{indent}if type({v}) is not _vt{i}:")
        add(f"{indent}    return None")
        add(f"{indent}{v} = _m{i}.get({v})")
        add(f"{indent}if {v} is None:")
        add(f"{indent}    return None")
        return True
    if kind is DateTimeTZField or kind is DateTimeField or kind is DateField:
        env["_t_str"] = str
        env[f"_iso{i}"] = datetime.date.fromisoformat if kind is DateField else _dt_fromiso
        add(f"{indent}if type({v}) is not _t_str:")
        add(f"{indent}    return None")
        add(f"{indent}{v} = _iso{i}({v})")
        if kind is DateTimeTZField:
            env["_UTC"] = datetime.UTC
            add(f"{indent}if {v}.tzinfo is not _UTC:")
            add(f"{indent}    return None")
        return True
    from ._relations import ForeignKeyField  # imports the schema, which imports this module
    from ._schema import schema_of

    if kind is ForeignKeyField and isinstance(field.to, type):
        rel = schema_of(field.to)
        exact = _exact_type(rel.pk_fields[0]) if rel is not None and not rel.composite else None
        if exact is None:
            return False
        env[f"_t_{exact.__name__}"] = exact
        add(f"{indent}if type({v}) is not _t_{exact.__name__}:")
        add(f"{indent}    return None")
        return True
    return False


def dict_setter(model: type) -> Callable[[Any, dict[str, Any]], None]:
    """Sets an instance's whole ``__dict__`` (the C descriptor, not ``Model.__setattr__``)."""
    for klass in model.__mro__:
        descriptor = klass.__dict__.get("__dict__")
        if descriptor is not None:
            return descriptor.__set__  # type: ignore[no-any-return]
    raise TypeError(f"{model.__name__} instances have no __dict__")  # pragma: no cover
