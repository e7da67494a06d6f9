"""What is stored: the envelope around every value, and rows encoded and decoded.

The envelope is a few bytes saying who wrote a value:

```
byte 0     0xAC                       magic
byte 1     format version (1)
bytes 2-3  serializer tag (big-endian) which serializer wrote the body
bytes 4-5  schema fingerprint          which field layout the body has
bytes 6-   the serializer's body
```

Six bytes in all. A reader picks the serializer by its tag among those its model reads (its
own and ``Meta.read_serializers``, so a model that changed serializer still reads old rows,
and a payload can never choose any other registered serializer) and takes the fast path
when the fingerprint is its own.

Rows are encoded by each field's ``to_primitive`` and the model's serializer, and decoded
by a fast build generated once per model (`compile_build`, which keeps a cheap type check
per field) or, when anything is off, the careful way that says what (`build_lenient`).
"""

from __future__ import annotations

import gc
import hashlib
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._exceptions import SerializationError, ValidationError
from ._fields import Field
from ._fields_struct import ListField
from .serializers import registry

if TYPE_CHECKING:
    from ._base import Model
    from ._schema import Schema

MAGIC = 0xAC
VERSION = 1
HEADER_SIZE = 6
_HEADER = struct.Struct(">BBHH")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from


#: Field types whose stored primitive is the value itself and is checked on the fast path
#: of a read by its exact type (``type(v) is int``: a bool is not an int).
_EXACT_TYPES = (int, float, bool, str)


class EnvelopeError(ValueError):
    """The bytes are not an acacheorm envelope this version can read."""


def header(tag: int, fingerprint: int) -> bytes:
    """The six header bytes for ``tag`` and ``fingerprint`` (computed once per schema)."""
    return _pack_header(MAGIC, VERSION, tag, fingerprint)


def unwrap(data: bytes) -> tuple[int, int, bytes]:
    """Split an envelope into ``(tag, fingerprint, body)``; `EnvelopeError` if it is not one."""
    if len(data) < HEADER_SIZE:
        raise EnvelopeError(f"payload of {len(data)} bytes is shorter than the envelope header")
    magic, version, tag, fingerprint = _unpack_header(data)
    if magic != MAGIC:
        raise EnvelopeError("payload does not start with the acacheorm envelope marker")
    if version != VERSION:
        raise EnvelopeError(
            f"payload envelope version {version} is not readable by this version "
            f"(which reads version {VERSION})"
        )
    return tag, fingerprint, data[HEADER_SIZE:]


def fingerprint(parts: list[str]) -> int:
    """A 16-bit fingerprint of a schema description."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=2).digest()
    return int.from_bytes(digest, "big")


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
                raise SerializationError(
                    f"field {name!r} cannot be converted for storage: {type(exc).__name__}: {exc}"
                ) from exc
    return data


def encode(schema: Schema, instance: Model) -> bytes:
    """The stored bytes for an instance: envelope header + serializer body."""
    try:
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
    if payload[:HEADER_SIZE] == schema.header:  # the fast path, as in decode_many
        try:
            data = schema.serializer.loads(payload[HEADER_SIZE:])
            obj = schema._fast_build(data, key) if data.keys() == schema._name_set else None
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
    tag, fingerprint, body = unwrap(payload)
    serializer = schema.readers.get(tag)
    if serializer is None:
        raise SerializationError(_foreign_tag(schema, tag))
    data = serializer.loads(body)
    if tag == schema.serializer.tag and fingerprint == schema.fingerprint:
        if data.keys() != schema._name_set:
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
    if len(payloads) < 256 or not gc.isenabled():
        return _decode_many(schema, keys, payloads)
    gc.disable()
    try:
        return _decode_many(schema, keys, payloads)
    finally:
        gc.enable()


def _decode_many(schema: Schema, keys: list[str], payloads: list[Any]) -> list[Model | None]:
    header = schema.header
    loads = schema.serializer.loads
    names = schema._name_set
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
            obj = build(data, key) if data.keys() == names else None
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
) -> Callable[[dict[str, Any], str], Model | None]:
    """The fast build of a row of the schema's own format: a function generated once per
    model, with one straight-line check per field (cheaper than a loop over the fields,
    measured), that turns the decoded dict into an instance in place, or returns
    None when anything is off so the caller takes the careful way, which says what.

    A field stored as itself is checked by exact type (``type(v) is int``: a bool is no
    int; ``None`` only if the field is ``null``); a list of such items item by item; any
    other field is converted by its ``from_primitive``, which refuses a primitive of the
    wrong type. Last, the key is recomputed from the row and compared with the key read
    (``by_key_of``: by ``schema.key_of``; ``retag``: a single primary key's plain key passed
    through it, the same key ``key_of`` gives, without the calls around it).
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
    attname = None if by_key_of and retag is None else schema._single_attname
    if attname is not None:
        pk_field = schema.pk_fields[0]
        env["_key_part"] = str if type(pk_field).key_part is Field.key_part else pk_field.key_part
        if retag is not None:
            env["_retag"] = retag
            add(f"    if _retag(_prefix + _key_part(data[{attname!r}])) != key:")
        else:
            add(f"    if _prefix + _key_part(data[{attname!r}]) != key:")
    else:
        add("    if _key_of(obj) != key:")
    add("        return None")
    add("    return obj")
    exec("\n".join(lines), env)  # the source holds field names only as repr()s
    build: Callable[[dict[str, Any], str], Model | None] = env["build"]
    return build


def dict_setter(model: type) -> Callable[[Any, dict[str, Any]], None]:
    """Sets an instance's whole ``__dict__`` (the C descriptor, not ``Model.__setattr__``)."""
    for klass in model.__mro__:
        descriptor = klass.__dict__.get("__dict__")
        if descriptor is not None:
            return descriptor.__set__  # type: ignore[no-any-return]
    raise TypeError(f"{model.__name__} instances have no __dict__")  # pragma: no cover
