"""The protobuf serializer: a row is one message of a user-supplied class.

Needs ``acacheorm[protobuf]``; ``google.protobuf`` is imported when a `ProtobufSerializer` is
built, never at ``import acacheorm``.

How a dict of primitives maps onto a message, field by field (the dict key is the field name):

- scalars: int into the integer types (range-checked), float (or an int that converts
  exactly) into ``double``, a float that a 32-bit float holds exactly into ``float``, bool,
  str into ``string``, bytes into ``bytes``, int into an enum. Anything else is an error,
  never a silent conversion.
- ``None``: leaves a field with presence (proto3 ``optional``, proto2 ``optional``, message
  and wrapper fields, oneof members) unset, and such a field reads back as ``None``. ``None``
  for a field without presence (a plain proto3 scalar, a repeated field, a map) is an error:
  it would come back as ``0``/``""``/``[]``. Fields without presence read back with their
  value (proto3 default included).
- list/tuple into repeated fields, dict into map fields and nested messages (recursively).
- wrappers (``google.protobuf.StringValue`` and friends) hold their bare value:
  ``{"email": "a@b.c"}`` or ``{"email": None}``.
- ``google.protobuf.Struct`` holds a dict, ``ListValue`` a list and ``Value`` any JSON-like
  value (None, bool, number, str, list, dict). Their numbers are doubles: ints are accepted
  up to 2**53 in magnitude, and integral numbers in that range read back as ``int`` (the
  format cannot tell ``2.0`` from ``2``). Bytes are refused there.
- other well-known types (Timestamp, Duration, Any, ...) are ordinary messages:
  ``{"seconds": 1, "nanos": 0}``.

Decoding yields every field of the message; fields the writer knew but the reader's schema
does not (a newer writer) are ignored, as protobuf does.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigurationError, SerializationError
from .base import Serializer, derive_tag

if TYPE_CHECKING:
    from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
    from google.protobuf.message import Message

__all__ = ["ProtobufSerializer"]

_INSTALL_HINT = "protobuf is not installed: pip install 'acacheorm[protobuf]'"

_Check = Callable[[Any], Any]
_Setter = Callable[[Any, Any], None]
_Getter = Callable[[Any], Any]
_Fill = Callable[[Any, Any], None]
_ToPy = Callable[[Any], Any]

_WRAPPERS = frozenset(
    f"google.protobuf.{n}Value"
    for n in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"
_LIST_VALUE = "google.protobuf.ListValue"
_MAX_EXACT = 2**53  # largest magnitude up to which every int is exactly a double
#: How deeply nested messages protobuf's parsers read (upb, C++ and pure Python alike): a
#: deeper message is written without complaint and then refused by every read.
PARSE_DEPTH_LIMIT = 100
_F32 = struct.Struct("<f")


def _import_protobuf() -> Any:
    try:
        from google.protobuf import descriptor, message
    except ImportError as exc:
        raise ConfigurationError(_INSTALL_HINT) from exc
    return descriptor, message


class _FieldError(Exception):
    """A value does not fit; ``path`` is filled in innermost first on the way out."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []

    def where(self) -> str:
        out = ""
        for part in reversed(self.path):
            out += part if part.startswith("[") else (f".{part}" if out else part)
        return out


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


# -- scalar checks: return the value to store, or raise _FieldError --------------------------


def _int_check(lo: int, hi: int, what: str) -> _Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _FieldError(f"expected an int for {what}, got {_describe(value)}")
        number = int(value)  # an IntEnum member becomes a plain int
        if not lo <= number <= hi:
            raise _FieldError(f"{number} is out of range for {what}")
        return number

    return check


def _check_bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _FieldError(f"expected a bool, got {_describe(value)}")
    return value


def _check_str(value: Any) -> str:
    if not isinstance(value, str):
        raise _FieldError(f"expected a str, got {_describe(value)}")
    return str(value)


def _check_bytes(value: Any) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise _FieldError(f"expected bytes, got {_describe(value)}")
    return bytes(value)


def _check_double(value: Any) -> float:
    if type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _FieldError(f"expected a float, got {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.nan
    if isinstance(value, int) and number != value:
        raise _FieldError(f"the int {value} cannot be stored exactly in a double")
    return number


def _check_float(value: Any) -> float:
    number = _check_double(value)
    if math.isfinite(number):
        try:
            exact = _F32.unpack(_F32.pack(number))[0] == number
        except OverflowError:
            exact = False
        if not exact:
            raise _FieldError(
                f"{value!r} cannot be stored exactly in a 32-bit float field "
                "(declare the field `double`)"
            )
    return number


def _enum_check(enum: EnumDescriptor) -> _Check:
    base = _int_check(-(2**31), 2**31 - 1, f"enum {enum.full_name}")
    if not getattr(enum, "is_closed", False):
        return base  # open (proto3) enums keep unknown numbers
    numbers = frozenset(enum.values_by_number)

    def check(value: Any) -> int:
        number: int = base(value)
        if number not in numbers:
            raise _FieldError(f"{number} is not a value of the closed enum {enum.full_name}")
        return number

    return check


def _scalar_check(field: FieldDescriptor) -> _Check:
    fd, _ = _import_protobuf()
    fdc = fd.FieldDescriptor
    cpp = field.cpp_type
    type_names = {
        getattr(fdc, attr): attr[5:].lower() for attr in dir(fdc) if attr.startswith("TYPE_")
    }
    what = type_names.get(field.type, "an integer field")
    if cpp == fdc.CPPTYPE_INT32:
        return _int_check(-(2**31), 2**31 - 1, what)
    if cpp == fdc.CPPTYPE_INT64:
        return _int_check(-(2**63), 2**63 - 1, what)
    if cpp == fdc.CPPTYPE_UINT32:
        return _int_check(0, 2**32 - 1, what)
    if cpp == fdc.CPPTYPE_UINT64:
        return _int_check(0, 2**64 - 1, what)
    if cpp == fdc.CPPTYPE_DOUBLE:
        return _check_double
    if cpp == fdc.CPPTYPE_FLOAT:
        return _check_float
    if cpp == fdc.CPPTYPE_BOOL:
        return _check_bool
    if cpp == fdc.CPPTYPE_ENUM:
        assert field.enum_type is not None
        return _enum_check(field.enum_type)
    if cpp == fdc.CPPTYPE_STRING:
        return _check_bytes if field.type == fdc.TYPE_BYTES else _check_str
    raise TypeError(f"not a scalar field: {field.full_name}")  # pragma: no cover


# -- google.protobuf.Struct / Value / ListValue ---------------------------------------------


def _fill_value(msg: Any, value: Any) -> None:
    if value is None:
        msg.null_value = 0
    elif value is True or value is False:
        msg.bool_value = value
    elif isinstance(value, int):
        if not -_MAX_EXACT <= value <= _MAX_EXACT:
            raise _FieldError(
                f"the int {value} is beyond 2**53, which a Struct/Value number (a double) "
                "cannot hold exactly"
            )
        msg.number_value = float(value)
    elif isinstance(value, float):
        msg.number_value = value
    elif isinstance(value, str):
        msg.string_value = value
    elif isinstance(value, Mapping):
        msg.struct_value.SetInParent()
        _fill_struct(msg.struct_value, value)
    elif isinstance(value, list | tuple):
        msg.list_value.SetInParent()
        _fill_list_value(msg.list_value, value)
    else:
        raise _FieldError(
            f"a google.protobuf.Value holds None, bool, numbers, str, lists and dicts, "
            f"not {_describe(value)}"
        )


def _fill_struct(msg: Any, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise _FieldError(f"expected a dict for google.protobuf.Struct, got {_describe(value)}")
    fields = msg.fields
    for key, item in value.items():
        if type(key) is not str:
            raise _FieldError(f"google.protobuf.Struct keys are str, not {_describe(key)}")
        try:
            _fill_value(fields[key], item)
        except _FieldError as exc:
            exc.path.append(f"[{key!r}]")
            raise


def _fill_list_value(msg: Any, value: Any) -> None:
    if not isinstance(value, list | tuple):
        raise _FieldError(f"expected a list for google.protobuf.ListValue, got {_describe(value)}")
    add = msg.values.add
    for index, item in enumerate(value):
        try:
            _fill_value(add(), item)
        except _FieldError as exc:
            exc.path.append(f"[{index}]")
            raise


def _value_to_py(msg: Any) -> Any:
    kind = msg.WhichOneof("kind")
    if kind == "number_value":
        number: float = msg.number_value
        if (
            number.is_integer()
            and -_MAX_EXACT <= number <= _MAX_EXACT
            and (number or math.copysign(1.0, number) > 0)  # keep -0.0 a float
        ):
            return int(number)
        return number
    if kind == "string_value":
        return msg.string_value
    if kind == "bool_value":
        return msg.bool_value
    if kind == "struct_value":
        return _struct_to_py(msg.struct_value)
    if kind == "list_value":
        return _list_value_to_py(msg.list_value)
    return None  # null_value, or not set at all


def _struct_to_py(msg: Any) -> dict[str, Any]:
    return {key: _value_to_py(item) for key, item in msg.fields.items()}


def _list_value_to_py(msg: Any) -> list[Any]:
    return [_value_to_py(item) for item in msg.values]


# -- messages -------------------------------------------------------------------------------


class _Codec:
    """Converts between one message type and dicts; built once per type and serializer."""

    __slots__ = ("full_name", "getters", "oneofs", "setters")

    def __init__(self, descriptor: Descriptor) -> None:
        self.full_name: str = descriptor.full_name
        self.setters: dict[str, _Setter] = {}
        self.getters: list[tuple[str, _Getter]] = []
        # real oneofs only: a proto3 `optional` is a synthetic oneof of one field
        self.oneofs: list[tuple[str, tuple[str, ...]]] = [
            (o.name, tuple(f.name for f in o.fields))
            for o in descriptor.oneofs
            if len(o.fields) > 1
        ]

    def fill(self, msg: Any, data: Mapping[str, Any]) -> None:
        setters = self.setters
        for key, value in data.items():
            setter = setters.get(key)
            if setter is None:
                raise _FieldError(f"unknown field {key!r}: {self.full_name} has no such field")
            try:
                setter(msg, value)
            except _FieldError as exc:
                exc.path.append(key)
                raise
            except Exception as exc:  # protobuf's own checks (bad UTF-8, ...)
                error = _FieldError(str(exc))
                error.path.append(key)
                raise error from exc
        for oneof, members in self.oneofs:
            given = [m for m in members if data.get(m) is not None]
            if len(given) > 1:
                raise _FieldError(
                    f"{', '.join(given)} are all members of oneof {oneof!r} in "
                    f"{self.full_name}; at most one may be non-None"
                )

    def to_dict(self, msg: Any) -> dict[str, Any]:
        return {name: get(msg) for name, get in self.getters}


def _codec(descriptor: Descriptor, cache: dict[str, _Codec]) -> _Codec:
    codec = cache.get(descriptor.full_name)
    if codec is not None:
        return codec
    # registered before its fields are built, so recursive message types find it
    codec = cache[descriptor.full_name] = _Codec(descriptor)
    for field in descriptor.fields:
        setter, getter = _field_handlers(field, cache)
        codec.setters[field.name] = setter
        codec.getters.append((field.name, getter))
    return codec


def _message_kind(descriptor: Descriptor, cache: dict[str, _Codec]) -> tuple[_Fill, _ToPy]:
    """How to fill a message of this type from a primitive, and read it back."""
    full_name = descriptor.full_name
    if full_name in _WRAPPERS:
        check = _scalar_check(descriptor.fields_by_name["value"])

        def fill_wrapper(msg: Any, value: Any) -> None:
            msg.value = check(value)

        return fill_wrapper, operator.attrgetter("value")
    if full_name == _STRUCT:
        return _fill_struct, _struct_to_py
    if full_name == _VALUE:
        return _fill_value, _value_to_py
    if full_name == _LIST_VALUE:
        return _fill_list_value, _list_value_to_py
    codec = _codec(descriptor, cache)

    def fill_message(msg: Any, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise _FieldError(f"expected a dict for message {full_name}, got {_describe(value)}")
        codec.fill(msg, value)

    return fill_message, codec.to_dict


def _field_handlers(field: FieldDescriptor, cache: dict[str, _Codec]) -> tuple[_Setter, _Getter]:
    name = field.name
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        return _map_handlers(field, message, cache)
    if field.is_repeated:
        return _repeated_handlers(field, cache)
    if message is not None:
        fill, to_py = _message_kind(message, cache)

        def set_message(msg: Any, value: Any) -> None:
            if value is None:
                return
            sub = getattr(msg, name)
            sub.SetInParent()  # present even when the value is empty or a default
            fill(sub, value)

        def get_message(msg: Any) -> Any:
            return to_py(getattr(msg, name)) if msg.HasField(name) else None

        return set_message, get_message

    check = _scalar_check(field)
    if field.has_presence:

        def set_optional(msg: Any, value: Any) -> None:
            if value is not None:
                setattr(msg, name, check(value))

        def get_optional(msg: Any) -> Any:
            return getattr(msg, name) if msg.HasField(name) else None

        return set_optional, get_optional

    def set_scalar(msg: Any, value: Any) -> None:
        if value is None:
            raise _FieldError(_no_presence(field))
        setattr(msg, name, check(value))

    return set_scalar, operator.attrgetter(name)


def _no_presence(field: FieldDescriptor) -> str:
    return (
        f"None, but {field.full_name} has no presence, so it would read back as its default; "
        "declare it `optional` (or use a wrapper type such as google.protobuf.StringValue)"
    )


def _repeated_handlers(field: FieldDescriptor, cache: dict[str, _Codec]) -> tuple[_Setter, _Getter]:
    name = field.name
    message = field.message_type

    def expect_list(value: Any) -> None:
        if value is None:
            raise _FieldError(f"None, but the repeated field {field.full_name} has no presence")
        if not isinstance(value, list | tuple):
            raise _FieldError(f"expected a list for a repeated field, got {_describe(value)}")

    if message is not None:
        fill, to_py = _message_kind(message, cache)
        none_ok = message.full_name == _VALUE

        def set_messages(msg: Any, value: Any) -> None:
            expect_list(value)
            add = getattr(msg, name).add
            for index, item in enumerate(value):
                try:
                    if item is None and not none_ok:
                        raise _FieldError("None cannot be an element of a repeated field")
                    fill(add(), item)
                except _FieldError as exc:
                    exc.path.append(f"[{index}]")
                    raise

        def get_messages(msg: Any) -> list[Any]:
            return [to_py(item) for item in getattr(msg, name)]

        return set_messages, get_messages

    check = _scalar_check(field)

    def set_scalars(msg: Any, value: Any) -> None:
        expect_list(value)
        items = []
        for index, item in enumerate(value):
            try:
                items.append(check(item))
            except _FieldError as exc:
                exc.path.append(f"[{index}]")
                raise
        getattr(msg, name).extend(items)

    def get_scalars(msg: Any) -> list[Any]:
        return list(getattr(msg, name))

    return set_scalars, get_scalars


def _map_handlers(
    field: FieldDescriptor, entry: Descriptor, cache: dict[str, _Codec]
) -> tuple[_Setter, _Getter]:
    name = field.name
    check_key = _scalar_check(entry.fields_by_name["key"])
    value_field = entry.fields_by_name["value"]
    value_message = value_field.message_type

    def expect_dict(value: Any) -> None:
        if value is None:
            raise _FieldError(f"None, but the map field {field.full_name} has no presence")
        if not isinstance(value, Mapping):
            raise _FieldError(f"expected a dict for a map field, got {_describe(value)}")

    if value_message is not None:
        fill, to_py = _message_kind(value_message, cache)
        none_ok = value_message.full_name == _VALUE

        def set_message_map(msg: Any, value: Any) -> None:
            expect_dict(value)
            container = getattr(msg, name)
            for key, item in value.items():
                try:
                    key = check_key(key)
                    if item is None and not none_ok:
                        raise _FieldError("None cannot be a map value")
                    fill(container[key], item)
                except _FieldError as exc:
                    exc.path.append(f"[{key!r}]")
                    raise

        def get_message_map(msg: Any) -> dict[Any, Any]:
            return {key: to_py(item) for key, item in getattr(msg, name).items()}

        return set_message_map, get_message_map

    check_value = _scalar_check(value_field)

    def set_scalar_map(msg: Any, value: Any) -> None:
        expect_dict(value)
        container = getattr(msg, name)
        for key, item in value.items():
            try:
                container[check_key(key)] = check_value(item)
            except _FieldError as exc:
                exc.path.append(f"[{key!r}]")
                raise

    def get_scalar_map(msg: Any) -> dict[Any, Any]:
        return dict(getattr(msg, name))

    return set_scalar_map, get_scalar_map


def _static_depth(descriptor: Descriptor, stack: tuple[str, ...]) -> int | None:
    """How many levels of messages a message of this type can nest (itself included), or
    None if there is no bound (a recursive type, Struct, Value or ListValue)."""
    name = descriptor.full_name
    if name in stack or name in (_STRUCT, _VALUE, _LIST_VALUE):
        return None
    deepest = 0
    for field in descriptor.fields:
        if field.message_type is not None:
            depth = _static_depth(field.message_type, (*stack, name))
            if depth is None:
                return None
            deepest = max(deepest, depth)
    return deepest + 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _unframe(payload: bytes) -> bytes:
    """The message body after its length prefix. Protobuf has no framing of its own: a
    payload cut between two fields would parse as a valid, shorter message, so every body
    is written after its length, and a length that does not match is an error."""
    n = shift = i = 0
    while True:
        if i >= len(payload) or i > 9:
            raise ValueError("truncated length prefix")
        b = payload[i]
        n |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            break
        shift += 7
    if len(payload) - i != n:
        raise ValueError(f"payload holds {len(payload) - i} bytes, its prefix says {n}")
    return payload[i:]


class ProtobufSerializer(Serializer):
    """Rows as one protobuf message of ``message_class`` (see the module docstring for the
    mapping). ``name`` defaults to ``"protobuf." + full message name``; the tag is derived
    from it, so payloads say which message type wrote them.

    Example::

        users = co.registry.register("protobuf.user", co.ProtobufSerializer(user_pb2.User))

        class User(co.Model):
            ...
            class Meta:
                serializer = "protobuf.user"
    """

    binary = True

    def __init__(self, message_class: type[Message], *, name: str | None = None) -> None:
        _, message_module = _import_protobuf()
        if not (
            isinstance(message_class, type) and issubclass(message_class, message_module.Message)
        ):
            raise TypeError(
                f"ProtobufSerializer needs a protobuf message class, not {message_class!r}"
            )
        descriptor: Descriptor = message_class.DESCRIPTOR  # type: ignore[assignment]
        self.message_class = message_class
        self.descriptor = descriptor
        self.full_name: str = descriptor.full_name
        self.name = name if name is not None else f"protobuf.{descriptor.full_name}"
        self.tag = derive_tag(self.name)
        self._codec = _codec(descriptor, {})
        # Only messages that can nest deeper than the parsers read (Struct/Value/ListValue,
        # a recursive message) have their larger bodies parsed back before they are written.
        depth = _static_depth(descriptor, ())
        self._may_nest_too_deep = depth is None or depth > PARSE_DEPTH_LIMIT

    def dumps(self, data: dict[str, Any]) -> bytes:
        if not isinstance(data, dict):
            raise SerializationError(
                f"protobuf {self.full_name}: a row is a dict, not {type(data).__name__}"
            )
        msg = self.message_class()
        try:
            self._codec.fill(msg, data)
            body = msg.SerializeToString(deterministic=True)
            # each level of nesting takes at least two bytes (a tag and a length)
            if self._may_nest_too_deep and len(body) >= 2 * (PARSE_DEPTH_LIMIT - 1):
                self._check_readable(body, data)
            return _varint(len(body)) + body
        except _FieldError as exc:
            where = exc.where()
            where = f" field {where}:" if where else ""
            raise SerializationError(
                f"protobuf {self.full_name} cannot hold this row:{where} {exc.message}"
            ) from exc
        except Exception as exc:
            raise SerializationError(
                f"protobuf {self.full_name} cannot encode this row: {exc}"
            ) from exc

    def _check_readable(self, body: bytes, data: dict[str, Any]) -> None:
        """Parse ``body`` back; a `_FieldError` naming the field if no reader could."""
        try:
            self.message_class().ParseFromString(body)
            return
        except Exception as exc:
            error = _FieldError(
                f"nested deeper than protobuf's parsers read ({PARSE_DEPTH_LIMIT} levels of "
                "messages; each list or dict inside a Struct or Value takes two or three), "
                f"so it could never be read back: {exc}"
            )
            cause = exc
        for name, value in data.items():  # which field: each one alone in a message
            alone = self.message_class()
            self._codec.setters[name](alone, value)
            try:
                self.message_class().ParseFromString(alone.SerializeToString())
            except Exception:
                error.path.append(name)
                break
        raise error from cause

    def loads(self, payload: bytes) -> dict[str, Any]:
        msg = self.message_class()
        try:
            msg.ParseFromString(_unframe(payload))
            if not msg.IsInitialized():
                missing = ", ".join(msg.FindInitializationErrors())  # type: ignore[attr-defined]
                raise ValueError(f"required fields are missing: {missing}")
            return self._codec.to_dict(msg)
        except Exception as exc:
            raise SerializationError(
                f"invalid protobuf payload for {self.full_name}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        name = "" if self.name == f"protobuf.{self.full_name}" else f", name={self.name!r}"
        return f"ProtobufSerializer({self.message_class.__qualname__}{name})"
