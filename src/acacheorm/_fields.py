"""Field descriptors: validation, conversion to primitives and back.

A field converts a Python value to a *primitive* (None, bool, int, float, str, bytes, list,
dict) that every serializer can carry, and back, exactly. ``binary`` says whether the
serializer carries bytes natively; where it does not (JSON), bytes travel as base64 text.
On a model class ``User.name`` is the field; on an instance ``user.name`` is the value.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import decimal
import enum
import math
import operator
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Self, TypedDict, TypeVar, Unpack, overload

from ._base import Model, ModelBase, State, state_of
from ._exceptions import ConfigurationError, ValidationError
from ._keys import escape_key_part
from ._types import NOTHING

T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)

_UTC = datetime.UTC
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=_UTC)
_IMMUTABLE_DEFAULTS = (
    str,
    bytes,
    int,
    float,
    bool,
    type(None),
    decimal.Decimal,
    uuid.UUID,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    enum.Enum,
    tuple,
    frozenset,
)


class IndexOptions(TypedDict, total=False):
    """The index options every field takes, a primary key's included (see `FieldOptions`)."""

    index: bool
    unique: bool


class FieldOptions(IndexOptions, total=False):
    """The options every field takes (the one place they are declared).

    ``null``: ``None`` is allowed; ``default``: a value, or a zero-argument callable called
    per instance (mutable values are copied per instance); ``primary_key``: the field is (part
    of) the key; ``index``: a secondary index on the field (queries by field read only what
    it selects); ``unique``: also no two live rows with the same value.

    Example::

        email = co.StringField(null=True, index=True, unique=True)
    """

    null: bool
    default: Any
    primary_key: bool


_OPTION_NAMES = frozenset(FieldOptions.__annotations__)


if TYPE_CHECKING:
    # To a type checker a field object fits any annotation, so that the annotated style
    # ``name: str = co.StringField()`` checks; ``user.name`` is still typed by ``__get__``.
    _FieldBase = Any
else:

    class _FieldBase:
        __slots__ = ()


class Field(_FieldBase, Generic[T]):  # type: ignore[misc]
    """Base class of every field: a typed descriptor.

    Options shared by every field: ``null`` (``None`` allowed), ``default`` (a value, or a
    zero-argument callable called per instance; mutable values are copied per instance) and
    ``primary_key``.

    Example::

        class User(co.Model):
            id = co.IntegerField(primary_key=True)
            name = co.StringField(max_length=64)
    """

    #: True when the primitive is the value itself (no conversion needed on load).
    identity: bool = False
    #: The Python type(s) a value must have (used for messages and fast checks).
    python_type: type | tuple[type, ...] = object
    #: A value of exactly this type needs no validation (set when the field has no bounds).
    fast_type: type | None = None

    name: str
    model: type[Model]
    #: ``index=True``: a secondary index on the field (queries by field read only what it
    #: selects); ``unique=True``: also no two live rows with the same value (see
    #: `FieldOptions`).
    index: bool = False
    unique: bool = False

    def __init__(self, **options: Unpack[FieldOptions]) -> None:
        for option in options.keys() - _OPTION_NAMES:
            raise TypeError(
                f"{type(self).__name__}() got an unexpected keyword argument {option!r}"
            )
        # index=None and unique=None mean "not given"; null and primary_key take a bool.
        for option, value in options.items():
            if option != "default" and not isinstance(value, bool):
                if value is None and option in IndexOptions.__annotations__:
                    continue
                raise TypeError(f"{option} must be a bool, not {value!r}")
        self.null: bool = options.get("null", False)
        self.default = options.get("default", NOTHING)
        self.primary_key: bool = options.get("primary_key", False)
        if self.primary_key and self.null:
            raise TypeError("a primary key field cannot be null=True")
        self.index = bool(options.get("index"))
        self.unique = bool(options.get("unique"))
        self.name = ""

    # -- descriptor protocol ----------------------------------------------------------------

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: Any) -> Self: ...

    @overload
    def __get__(self, instance: object, owner: Any) -> T: ...

    def __get__(self, instance: object | None, owner: Any) -> Self | T:
        if instance is None:
            return self
        try:
            return instance.__dict__[self.name]  # type: ignore[no-any-return]
        except KeyError:
            raise _not_loaded(instance, self.name) from None

    def __set__(self, instance: Any, value: T) -> None:
        instance.__dict__[self.name] = self.clean(value)

    # -- validation -------------------------------------------------------------------------

    def has_default(self) -> bool:
        """Whether the field can be left out: it has a ``default`` or is ``null=True``.

        Example::

            assert User.email.has_default()      # null=True: defaults to None
        """
        return self.default is not NOTHING or self.null

    def get_default(self) -> Any:
        """A fresh default value: the callable's result, or a copy of a mutable default.

        Example::

            assert User.phones.get_default() == []   # default=list: a new list each time
        """
        default = self.default
        if default is NOTHING:
            return None
        if callable(default):
            return default()
        if isinstance(default, _IMMUTABLE_DEFAULTS):
            return default
        return copy.deepcopy(default)

    def clean(self, value: Any) -> Any:
        """Validate ``value`` for this field; the value to store, or `ValidationError`."""
        if value is None:
            if self.null:
                return None
            raise self._error("may not be None", value)
        try:
            return self.validate(value)
        except ValidationError as exc:
            if exc.field is None:
                raise self._error(str(exc), value) from None
            raise
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise self._error(str(exc), value) from None

    def validate(self, value: Any) -> T:
        """Check and coerce a non-None value; raise ValueError/TypeError with a message."""
        return value  # type: ignore[no-any-return]

    def _error(self, message: str, value: Any) -> ValidationError:
        model = getattr(self, "model", None)
        return ValidationError(
            f"{message} (got {_short_repr(value)})",
            model=model.__name__ if model is not None else None,
            field=self.name or type(self).__name__,
            value=value,
        )

    # -- conversion -------------------------------------------------------------------------

    def to_primitive(self, value: T, binary: bool) -> Any:
        """The primitive stored for a (valid, non-None) value."""
        return value

    def from_primitive(self, primitive: Any, binary: bool) -> T:
        """The value for a stored primitive (not None); raise on a primitive of a wrong type."""
        return primitive  # type: ignore[no-any-return]

    def key_part(self, value: T) -> str:
        """The text of this value inside a key (primary key fields)."""
        return str(value)

    def to_json(self, value: T) -> Any:
        """A (valid, non-None) value as data `json.dumps` accepts: UUIDs, datetimes,
        dates, times and decimals as text, bytes as base64, enums by value.

        Example::

            assert User.created_at.to_json(moment) == "2024-05-01T12:00:00+00:00"
        """
        return self.to_primitive(value, False)

    def from_json(self, data: Any) -> T:
        """The value for what `to_json` gave (not None); raises on data of a wrong type.

        Example::

            assert User.token.from_json(str(token)) == token
        """
        return self.from_primitive(data, False)

    # -- expressions for atomic updates (``User.update(id=1, visits=User.visits + 1)``) ----

    def __add__(self, other: Any) -> Expression:
        self._check_operand("+", other)
        return Expression(self, operator.add, other, "+")

    def __sub__(self, other: Any) -> Expression:
        self._check_operand("-", other)
        return Expression(self, operator.sub, other, "-")

    # -- conditions for queries by field (``User.filter(User.age >= 18)``) --------------
    # Two fields compare by identity (fields are dict keys and set members); a field of a
    # model compared with a value is a condition.

    __hash__ = object.__hash__

    def _condition(self, lookup: str, other: Any) -> Any:
        if isinstance(other, Field) or getattr(self, "model", None) is None:
            return NotImplemented
        from ._lookups import field_condition

        return field_condition(self, lookup, other)

    def __eq__(self, other: object) -> Any:
        return self._condition("exact", other)

    def __ne__(self, other: object) -> Any:
        from ._lookups import Not

        cond = self._condition("exact", other)
        return cond if cond is NotImplemented else Not(cond)

    def __lt__(self, other: Any) -> Any:
        return self._condition("lt", other)

    def __le__(self, other: Any) -> Any:
        return self._condition("lte", other)

    def __gt__(self, other: Any) -> Any:
        return self._condition("gt", other)

    def __ge__(self, other: Any) -> Any:
        return self._condition("gte", other)

    #: The operators an update expression may apply to this field's values.
    operators: tuple[str, ...] = ()

    def _where(self) -> str:
        owner = getattr(self, "model", None)
        return f"{owner.__name__}.{self.name}" if owner is not None else self.name or "field"

    def _check_operand(self, symbol: str, operand: Any) -> None:
        """Refuse, before any I/O, an expression that could not apply to a stored value."""
        kind = type(self).__name__
        if symbol not in self.operators:
            raise TypeError(
                f"{self._where()} {symbol} {_short_repr(operand)}: a {kind} does not support "
                f"{symbol!r} in an update"
            )
        try:
            self._check_operand_value(operand)
        except (TypeError, ValueError, ValidationError) as exc:
            raise TypeError(
                f"{self._where()} {symbol} {_short_repr(operand)}: {self._operand_problem(exc)}"
            ) from None

    #: The operand types those operators take.
    operand_types: tuple[type, ...] = ()

    def _check_operand_value(self, operand: Any) -> None:
        types = self.operand_types
        if isinstance(operand, bool) or not isinstance(operand, types):
            raise TypeError(f"expected {_type_name(types)}, not {type(operand).__name__}")

    def _operand_problem(self, exc: BaseException) -> str:
        text = str(exc)
        if isinstance(exc, ValidationError) and exc.field is not None:
            text = text.split(": ", 1)[-1]
        return f"{text} ({type(self).__name__})"

    def __repr__(self) -> str:
        owner = getattr(self, "model", None)
        where = f"{owner.__name__}.{self.name}" if owner is not None and self.name else self.name
        return f"<{type(self).__name__}: {where}>" if where else f"<{type(self).__name__}>"


class Expression:
    """A change computed from the stored value inside an atomic update.

    Example::

        await User.update(id=1, visits=User.visits + 1)
    """

    def __init__(
        self, field: Field[Any], op: Callable[[Any, Any], Any], operand: Any, symbol: str
    ) -> None:
        self.field = field
        self.op = op
        self.operand = operand
        self.symbol = symbol

    def apply(self, current: Any) -> Any:
        """The new value computed from the stored ``current`` value.

        Example::

            assert (User.visits + 1).apply(41) == 42
        """
        if current is None:
            raise ValidationError(f"cannot apply {self!r} to None", field=self.field.name)
        return self.op(current, self.operand)

    def __repr__(self) -> str:
        return f"({self.field.name} {self.symbol} {self.operand!r})"


def _short_repr(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except RecursionError:  # a value nested too deeply to print is refused for just that
        text = f"<a deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _not_loaded(instance: Any, name: str) -> AttributeError:
    cls = type(instance).__name__
    state = state_of(instance) if isinstance(instance, ModelBase) else State.LOADED
    if state is not State.LOADED:
        detail = "was not found in its backend" if state is State.MISSING else "is not loaded"
        return AttributeError(
            f"{cls}.{name}: this {cls} {detail} (sparse, only its primary key is known); "
            f"`await instance.load()` it or use select_related()"
        )
    return AttributeError(f"{cls}.{name} has no value")


def _type_name(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return " or ".join(x.__name__ for x in t)
    return t.__name__


def _expect(value: Any, t: type | tuple[type, ...]) -> None:
    if not isinstance(value, t):
        raise TypeError(f"expected {_type_name(t)}, not {type(value).__name__}")


# -- scalar fields ----------------------------------------------------------------------------


class IntegerField(Field[int]):
    """An ``int`` (``bool`` is refused), optionally bounded.

    Example::

        age = co.IntegerField(min_value=0, max_value=150)
    """

    operators = ("+", "-")
    operand_types = (int,)

    identity = True
    python_type = int

    def __init__(
        self,
        *,
        min_value: int | None = None,
        max_value: int | None = None,
        **options: Unpack[FieldOptions],
    ) -> None:
        super().__init__(**options)
        self.min_value = min_value
        self.max_value = max_value
        if min_value is None and max_value is None:
            self.fast_type = int

    def validate(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected int, not {type(value).__name__}")
        if self.min_value is not None and value < self.min_value:
            raise ValueError(f"must be >= {self.min_value}")
        if self.max_value is not None and value > self.max_value:
            raise ValueError(f"must be <= {self.max_value}")
        return int(value)

    def from_primitive(self, primitive: Any, binary: bool) -> int:
        if isinstance(primitive, bool) or not isinstance(primitive, int):
            raise TypeError(f"expected int, not {type(primitive).__name__}")
        return primitive


class FloatField(Field[float]):
    """A ``float`` (an ``int`` is converted), optionally bounded.

    Example::

        height = co.FloatField(min_value=0)
    """

    operators = ("+", "-")
    operand_types = (int, float)

    identity = True
    python_type = float

    def __init__(
        self,
        *,
        min_value: float | None = None,
        max_value: float | None = None,
        **options: Unpack[FieldOptions],
    ) -> None:
        super().__init__(**options)
        self.min_value = min_value
        self.max_value = max_value

    def validate(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"expected float, not {type(value).__name__}")
        result = float(value)
        if self.min_value is not None and not result >= self.min_value:
            raise ValueError(f"must be >= {self.min_value}")
        if self.max_value is not None and not result <= self.max_value:
            raise ValueError(f"must be <= {self.max_value}")
        return result

    def from_primitive(self, primitive: Any, binary: bool) -> float:
        if isinstance(primitive, bool) or not isinstance(primitive, int | float):
            raise TypeError(f"expected float, not {type(primitive).__name__}")
        return float(primitive)

    def key_part(self, value: float) -> str:
        return repr(value)


class _CheckedOptions:
    """A field whose own options are checked when it is defined.

    ``__init__`` cannot name the field (its name is known only once the model class is
    built), so it records what is wrong in ``_option_error``; building the model raises it as
    a `ConfigurationError` naming ``Model.field``. A field that never becomes part of a model
    (the item field of a ListField, a field used on its own) raises it on first use instead.
    """

    _option_error: str | None = None
    name: str

    def contribute_to_class(self, cls: type[Model]) -> None:
        if self._option_error is not None:
            raise ConfigurationError(f"{cls.__name__}.{self.name}: {self._option_error}")

    def _check_options(self) -> None:
        if self._option_error is not None:
            where = f"{type(self).__name__} {self.name}" if self.name else type(self).__name__
            raise ConfigurationError(f"{where}: {self._option_error}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: The rounding modes of the decimal module, by value ("ROUND_HALF_EVEN", ...).
_ROUNDINGS = frozenset(getattr(decimal, name) for name in dir(decimal) if name.startswith("ROUND_"))


class DecimalField(_CheckedOptions, Field[decimal.Decimal]):
    """A ``Decimal``, stored as a string so every digit survives.

    A value with more than ``decimal_places`` places is refused, or, with
    ``auto_round=True``, rounded to ``decimal_places`` with the ``decimal`` module's
    ``rounding`` mode (default ``ROUND_HALF_EVEN``). Bad options are a `ConfigurationError`
    when the model is defined.

    Example::

        price = co.DecimalField(max_digits=10, decimal_places=2)
        rate = co.DecimalField(decimal_places=2, auto_round=True, rounding=decimal.ROUND_UP)
    """

    operators = ("+", "-")
    operand_types = (int, decimal.Decimal)

    python_type = decimal.Decimal

    def __init__(
        self,
        *,
        max_digits: int | None = None,
        decimal_places: int | None = None,
        auto_round: bool = False,
        rounding: str | None = None,
        **options: Unpack[FieldOptions],
    ) -> None:
        super().__init__(**options)
        self.max_digits = max_digits
        self.decimal_places = decimal_places
        self.auto_round = auto_round
        self.rounding = decimal.ROUND_HALF_EVEN if rounding is None else rounding
        self._option_error = _decimal_option_error(max_digits, decimal_places, auto_round, rounding)

    def validate(self, value: Any) -> decimal.Decimal:
        if self._option_error is not None:
            self._check_options()
        if isinstance(value, bool):
            raise TypeError("expected Decimal, not bool")
        if isinstance(value, float):
            value = decimal.Decimal(repr(value))
        elif isinstance(value, int | str):
            try:
                value = decimal.Decimal(value)
            except decimal.InvalidOperation:
                raise ValueError("not a decimal number") from None
        _expect(value, decimal.Decimal)
        if value.is_finite():
            _sign, digits, exponent = value.as_tuple()
            assert isinstance(exponent, int)
            places = max(0, -exponent)
            whole = max(0, len(digits) + exponent)
            if self.decimal_places is not None and places > self.decimal_places:
                if not self.auto_round:
                    raise ValueError(f"more than {self.decimal_places} decimal places")
                value = self._round(value, whole)
                _sign, digits, exponent = value.as_tuple()
                assert isinstance(exponent, int)
                places = max(0, -exponent)
                whole = max(0, len(digits) + exponent)
            if self.max_digits is not None and whole + places > self.max_digits:
                raise ValueError(f"more than {self.max_digits} digits")
            if (
                self.max_digits is not None
                and self.decimal_places is not None
                and whole > self.max_digits - self.decimal_places
            ):
                raise ValueError(
                    f"more than {self.max_digits - self.decimal_places} digits "
                    "before the decimal point"
                )
        return value  # type: ignore[no-any-return]

    def _round(self, value: decimal.Decimal, whole: int) -> decimal.Decimal:
        """``value`` rounded to ``decimal_places`` (exactly: the context holds every digit)."""
        assert self.decimal_places is not None
        context = decimal.Context(
            prec=whole + self.decimal_places + 2, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN
        )
        step = decimal.Decimal(1).scaleb(-self.decimal_places)
        return value.quantize(step, rounding=self.rounding, context=context)

    def to_primitive(self, value: decimal.Decimal, binary: bool) -> str:
        return str(value)

    def from_primitive(self, primitive: Any, binary: bool) -> decimal.Decimal:
        _expect(primitive, str)
        try:
            return decimal.Decimal(primitive)
        except decimal.InvalidOperation:
            raise ValueError(f"not a decimal: {primitive!r}") from None


def _decimal_option_error(
    max_digits: Any, decimal_places: Any, auto_round: Any, rounding: Any
) -> str | None:
    """What is wrong with DecimalField options, or None."""
    if max_digits is not None and not (_is_int(max_digits) and max_digits > 0):
        return f"max_digits must be a positive int, not {max_digits!r}"
    if decimal_places is not None and not (_is_int(decimal_places) and decimal_places >= 0):
        return f"decimal_places must be an int >= 0, not {decimal_places!r}"
    if max_digits is not None and decimal_places is not None and decimal_places > max_digits:
        return f"decimal_places={decimal_places} is more than max_digits={max_digits}"
    if not isinstance(auto_round, bool):
        return f"auto_round must be a bool, not {auto_round!r}"
    if auto_round and decimal_places is None:
        return "auto_round=True needs decimal_places (the places to round to)"
    if rounding is not None:
        if not isinstance(rounding, str) or rounding not in _ROUNDINGS:
            return (
                f"rounding must be a rounding mode of the decimal module "
                f"({', '.join(sorted(_ROUNDINGS))}), not {rounding!r}"
            )
        if not auto_round:
            return "rounding is used only with auto_round=True"
    return None


class BooleanField(Field[bool]):
    """A ``bool`` (only ``True``/``False``).

    Example::

        married = co.BooleanField(default=False)
    """

    identity = True
    python_type = bool

    def validate(self, value: Any) -> bool:
        _expect(value, bool)
        return bool(value)

    def from_primitive(self, primitive: Any, binary: bool) -> bool:
        _expect(primitive, bool)
        return bool(primitive)


class StringField(Field[str]):
    """A ``str``, optionally with ``max_length``/``min_length``.

    Example::

        name = co.StringField(max_length=64)
    """

    operators = ("+",)
    operand_types = (str,)

    identity = True
    python_type = str

    def __init__(
        self,
        *,
        max_length: int | None = None,
        min_length: int | None = None,
        **options: Unpack[FieldOptions],
    ) -> None:
        super().__init__(**options)
        self.max_length = max_length
        self.min_length = min_length
        if max_length is None and min_length is None:
            self.fast_type = str

    def validate(self, value: Any) -> str:
        _expect(value, str)
        if not value.isascii():
            _check_text(value)
        if self.max_length is not None and len(value) > self.max_length:
            raise ValueError(f"longer than max_length={self.max_length}")
        if self.min_length is not None and len(value) < self.min_length:
            raise ValueError(f"shorter than min_length={self.min_length}")
        return str(value)

    def from_primitive(self, primitive: Any, binary: bool) -> str:
        _expect(primitive, str)
        return str(primitive)

    def key_part(self, value: str) -> str:
        return escape_key_part(value)


class BinaryField(Field[bytes]):
    """``bytes``; stays bytes on every serializer (base64 only inside JSON).

    Example::

        avatar = co.BinaryField(null=True, max_length=65536)
    """

    operators = ("+",)
    operand_types = (bytes,)

    python_type = bytes

    def __init__(
        self,
        *,
        max_length: int | None = None,
        **options: Unpack[FieldOptions],
    ) -> None:
        super().__init__(**options)
        self.max_length = max_length

    def validate(self, value: Any) -> bytes:
        if isinstance(value, bytearray | memoryview):
            value = bytes(value)
        _expect(value, bytes)
        if self.max_length is not None and len(value) > self.max_length:
            raise ValueError(f"longer than max_length={self.max_length}")
        return value  # type: ignore[no-any-return]

    def to_primitive(self, value: bytes, binary: bool) -> bytes | str:
        return value if binary else base64.b64encode(value).decode("ascii")

    def from_primitive(self, primitive: Any, binary: bool) -> bytes:
        if binary:
            _expect(primitive, bytes)
            return bytes(primitive)
        _expect(primitive, str)
        try:
            return base64.b64decode(primitive, validate=True)
        except binascii.Error:
            raise ValueError("not base64") from None

    def key_part(self, value: bytes) -> str:
        return value.hex()


class UUIDField(Field[uuid.UUID]):
    """A ``uuid.UUID`` (a UUID string is accepted); stored as its canonical text.

    Example::

        token = co.UUIDField(default=uuid.uuid4)
    """

    python_type = uuid.UUID

    def validate(self, value: Any) -> uuid.UUID:
        if isinstance(value, str):
            return uuid.UUID(value)
        _expect(value, uuid.UUID)
        return value  # type: ignore[no-any-return]

    def to_primitive(self, value: uuid.UUID, binary: bool) -> str:
        return str(value)

    def from_primitive(self, primitive: Any, binary: bool) -> uuid.UUID:
        _expect(primitive, str)
        return uuid.UUID(primitive)


_B57 = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B57_INDEX = {c: i for i, c in enumerate(_B57)}


def _short_encode(u: uuid.UUID) -> str:
    n = u.int
    out = []
    for _ in range(22):
        n, r = divmod(n, 57)
        out.append(_B57[r])
    return "".join(reversed(out))


def _short_decode(text: str) -> uuid.UUID:
    if len(text) != 22:
        raise ValueError("a short UUID has 22 characters")
    n = 0
    for c in text:
        try:
            n = n * 57 + _B57_INDEX[c]
        except KeyError:
            raise ValueError(f"{c!r} is not a short-UUID character") from None
    if n >= 1 << 128:
        raise ValueError("out of the UUID range")
    return uuid.UUID(int=n)


class ShortUUIDField(UUIDField):
    """A ``uuid.UUID`` stored as 22 base57 characters (the shortuuid alphabet).

    Example::

        slug = co.ShortUUIDField(default=uuid.uuid4)
    """

    def validate(self, value: Any) -> uuid.UUID:
        if isinstance(value, str) and len(value) == 22:
            return _short_decode(value)
        return super().validate(value)

    def to_primitive(self, value: uuid.UUID, binary: bool) -> str:
        return _short_encode(value)

    def from_primitive(self, primitive: Any, binary: bool) -> uuid.UUID:
        _expect(primitive, str)
        return _short_decode(primitive)

    def key_part(self, value: uuid.UUID) -> str:
        return _short_encode(value)


class EnumField(Field[E]):
    """A member of ``enum_cls``, stored by value (a member's value is accepted too). In a
    primary key, the members' values must differ as text (``1`` and ``"1"`` would share a
    key): such an Enum is a `ConfigurationError` when the model is defined.

    Example::

        gender = co.EnumField(Gender, default=Gender.UNKNOWN)
    """

    def __init__(
        self,
        enum_cls: type[E],
        **options: Unpack[FieldOptions],
    ) -> None:
        if not (isinstance(enum_cls, type) and issubclass(enum_cls, enum.Enum)):
            raise TypeError(f"EnumField needs an Enum class, not {enum_cls!r}")
        super().__init__(**options)
        self.enum_cls = enum_cls
        self.python_type = enum_cls
        self._by_value = {m.value: (m, type(m.value)) for m in enum_cls.__members__.values()}

    def validate(self, value: Any) -> E:
        if isinstance(value, self.enum_cls):
            return value
        try:
            return self.enum_cls(value)
        except ValueError:
            raise ValueError(f"not a {self.enum_cls.__name__}") from None

    def to_primitive(self, value: E, binary: bool) -> Any:
        return value.value

    def from_primitive(self, primitive: Any, binary: bool) -> E:
        try:
            member, value_type = self._by_value[primitive]
        except (KeyError, TypeError):
            member = self.enum_cls(primitive)
            value_type = type(member.value)
        # 1.0 and True find the member whose value is 1: only a value of its own type is it
        if value_type is not type(primitive) and not (
            isinstance(primitive, int)
            and not isinstance(primitive, bool)
            and issubclass(value_type, int)
            and not issubclass(value_type, bool)
        ):
            raise TypeError(
                f"stored {type(primitive).__name__} {primitive!r} for a "
                f"{value_type.__name__} value of {self.enum_cls.__name__}"
            )
        return member

    def key_part(self, value: E) -> str:
        v = value.value
        return escape_key_part(v) if isinstance(v, str) else str(v)


def _formats_option_error(formats: Any) -> str | None:
    """What is wrong with a ``formats=`` option, or None."""
    if formats is None:
        return None
    if isinstance(formats, str | bytes) or not isinstance(formats, list | tuple):
        return f"formats takes a list of strptime format strings, not {formats!r}"
    for fmt in formats:
        if not isinstance(fmt, str) or not fmt:
            return f"formats: {fmt!r} is not a strptime format string"
        try:
            datetime.datetime.strptime("", fmt)
        except ValueError as exc:
            if not str(exc).startswith("time data"):  # a bad directive, a stray %
                return f"formats: {exc}"
    return None


def _parse_text(
    text: str,
    formats: tuple[str, ...],
    iso: Callable[[str], T],
    from_parsed: Callable[[datetime.datetime], T],
) -> T:
    """``text`` read as ISO 8601, else with the first of ``formats`` that fits."""
    try:
        return iso(text)
    except ValueError:
        pass
    for fmt in formats:
        try:
            parsed = datetime.datetime.strptime(text, fmt)
        except ValueError:
            continue
        return from_parsed(parsed)
    if formats:
        raise ValueError(f"fits neither ISO 8601 nor the formats {list(formats)}")
    raise ValueError("not ISO 8601 text")


class _FormattedField(_CheckedOptions):
    """The ``formats=`` option of the date and time fields (input only)."""

    def _set_formats(self, formats: Any) -> None:
        self._option_error = _formats_option_error(formats)
        self.formats: tuple[str, ...] | None = (
            None if formats is None or self._option_error is not None else tuple(formats)
        )


class DateTimeField(_FormattedField, Field[datetime.datetime]):
    """A ``datetime`` (naive or aware), stored as ISO 8601 text; it reads back equal.

    With ``formats=[...]`` (``strptime`` formats) a ``str`` is accepted too: read as ISO 8601
    if it is, else with the first format that fits; stored values stay ISO 8601 either way.

    Example::

        seen_at = co.DateTimeField(null=True)
        logged_at = co.DateTimeField(formats=["%m/%d/%Y %I:%M %p", "%Y-%m-%d %H:%M:%S"])
    """

    operators = ("+", "-")
    operand_types = (datetime.timedelta,)

    python_type = datetime.datetime

    def __init__(
        self,
        *,
        formats: list[str] | tuple[str, ...] | None = None,
        auto_now: bool = False,
        auto_now_add: bool = False,
        **options: Unpack[FieldOptions],
    ) -> None:
        super().__init__(**options)
        self._set_formats(formats)
        _auto_options(self, auto_now, auto_now_add)

    def _parse(self, value: Any) -> Any:
        """``value``, or the datetime a ``str`` reads as (with ``formats``); no other check."""
        if self._option_error is not None:
            self._check_options()
        if self.formats is not None and isinstance(value, str):
            return _parse_text(value, self.formats, datetime.datetime.fromisoformat, _same)
        return value

    def now(self) -> datetime.datetime:
        """The current time, for ``auto_now``/``auto_now_add`` (aware, in UTC)."""
        return datetime.datetime.now(_UTC)

    def validate(self, value: Any) -> datetime.datetime:
        value = self._parse(value)
        _expect(value, datetime.datetime)
        return value  # type: ignore[no-any-return]

    def to_primitive(self, value: datetime.datetime, binary: bool) -> str:
        return value.isoformat()

    def from_primitive(self, primitive: Any, binary: bool) -> datetime.datetime:
        _expect(primitive, str)
        return datetime.datetime.fromisoformat(primitive)

    def key_part(self, value: datetime.datetime) -> str:
        return escape_key_part(value.isoformat())


def _same(value: datetime.datetime) -> datetime.datetime:
    return value


class DateTimeTZField(DateTimeField):
    """An aware ``datetime``; stored in UTC and read back as the same instant (in UTC).

    ``formats=[...]`` as for `DateTimeField`; the text must carry an offset (ISO 8601 or a
    format with ``%z``).

    Example::

        created_at = co.DateTimeTZField(default=lambda: datetime.datetime.now(datetime.UTC))
    """

    def validate(self, value: Any) -> datetime.datetime:
        value = self._parse(value)
        _expect(value, datetime.datetime)
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("needs an aware datetime (with tzinfo)")
        try:
            value.astimezone(_UTC)  # stored in UTC: 9999-12-31T23:00-05:00 has no UTC year
        except OverflowError:
            raise ValueError("out of the datetime range once converted to UTC") from None
        return value  # type: ignore[no-any-return]

    def to_primitive(self, value: datetime.datetime, binary: bool) -> str:
        return value.astimezone(_UTC).isoformat()

    def from_primitive(self, primitive: Any, binary: bool) -> datetime.datetime:
        value = super().from_primitive(primitive, binary)
        if value.tzinfo is _UTC:
            return value
        if value.tzinfo is None:
            raise ValueError("stored datetime has no timezone")
        return value.astimezone(_UTC)

    def key_part(self, value: datetime.datetime) -> str:
        return escape_key_part(value.astimezone(_UTC).isoformat())


class DateField(_FormattedField, Field[datetime.date]):
    """A ``date`` (not a datetime), stored as ISO text.

    With ``formats=[...]`` a ``str`` is accepted too (ISO 8601, else the first format that
    fits; the date part of what it reads).

    Example::

        birthday = co.DateField(null=True)
        issued = co.DateField(formats=["%d.%m.%Y"])
    """

    operators = ("+", "-")
    operand_types = (datetime.timedelta,)

    python_type = datetime.date

    def __init__(
        self,
        *,
        formats: list[str] | tuple[str, ...] | None = None,
        auto_now: bool = False,
        auto_now_add: bool = False,
        **options: Unpack[FieldOptions],
    ) -> None:
        super().__init__(**options)
        self._set_formats(formats)
        _auto_options(self, auto_now, auto_now_add)

    def now(self) -> datetime.date:
        """Today's date, for ``auto_now``/``auto_now_add``."""
        return datetime.date.today()

    def validate(self, value: Any) -> datetime.date:
        if self._option_error is not None:
            self._check_options()
        if self.formats is not None and isinstance(value, str):
            value = _parse_text(value, self.formats, datetime.date.fromisoformat, _date_part)
        if isinstance(value, datetime.datetime):
            raise TypeError("expected date, not datetime")
        _expect(value, datetime.date)
        return value  # type: ignore[no-any-return]

    def to_primitive(self, value: datetime.date, binary: bool) -> str:
        return value.isoformat()

    def from_primitive(self, primitive: Any, binary: bool) -> datetime.date:
        _expect(primitive, str)
        return datetime.date.fromisoformat(primitive)


def _date_part(value: datetime.datetime) -> datetime.date:
    return value.date()


def _time_part(value: datetime.datetime) -> datetime.time:
    return value.timetz()


def _auto_options(field: DateTimeField | DateField, auto_now: bool, auto_now_add: bool) -> None:
    """``auto_now`` (set on every save and update) and ``auto_now_add`` (set when the row
    is first built for an insert); either gives the field a default of the current time."""
    for name, flag in (("auto_now", auto_now), ("auto_now_add", auto_now_add)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, not {flag!r}")
    if auto_now and auto_now_add:
        raise TypeError("auto_now and auto_now_add are exclusive (auto_now implies both)")
    if (auto_now or auto_now_add) and field.default is not NOTHING:
        raise TypeError("auto_now/auto_now_add set the value: they take no default")
    field.auto_now = auto_now
    field.auto_now_add = auto_now_add
    if auto_now or auto_now_add:
        field.default = field.now


class TimeField(_FormattedField, Field[datetime.time]):
    """A ``time`` (naive or with a fixed offset), stored as ISO text.

    With ``formats=[...]`` a ``str`` is accepted too (ISO 8601, else the first format that
    fits; the time part of what it reads, with its offset if the format has ``%z``).

    Example::

        opens_at = co.TimeField(default=datetime.time(9, 0))
        closes_at = co.TimeField(formats=["%I:%M %p"])
    """

    python_type = datetime.time

    def __init__(
        self,
        *,
        formats: list[str] | tuple[str, ...] | None = None,
        **options: Unpack[FieldOptions],
    ) -> None:
        super().__init__(**options)
        self._set_formats(formats)

    def validate(self, value: Any) -> datetime.time:
        if self._option_error is not None:
            self._check_options()
        if self.formats is not None and isinstance(value, str):
            value = _parse_text(value, self.formats, datetime.time.fromisoformat, _time_part)
        _expect(value, datetime.time)
        return value  # type: ignore[no-any-return]

    def to_primitive(self, value: datetime.time, binary: bool) -> str:
        return value.isoformat()

    def from_primitive(self, primitive: Any, binary: bool) -> datetime.time:
        _expect(primitive, str)
        return datetime.time.fromisoformat(primitive)


#: TimestampField resolutions: stored steps per second (seconds ... microseconds).
_RESOLUTIONS: tuple[int, ...] = tuple(10**i for i in range(7))


def _resolution(value: Any) -> int | str:
    """A TimestampField ``resolution``, or what is wrong with it.

    A power of ten up to 10**6; cacheorm's shorthand 0 (seconds) and 2..6 (10**n) too.
    """
    if _is_int(value):
        number = int(value)
        if number in _RESOLUTIONS:
            return number
        if 0 <= number <= 6:
            return _RESOLUTIONS[number]
    return (
        "resolution must be 1 (seconds), 10**3 (milliseconds), 10**6 (microseconds) or "
        f"another power of ten up to 10**6 (or the exponent 0-6), not {value!r}"
    )


class TimestampField(_CheckedOptions, Field[datetime.datetime]):
    """An aware UTC ``datetime`` stored as an integer count of steps since the epoch.

    ``resolution`` is the number of steps per second: ``10**6`` (the default, microseconds),
    ``10**3`` (milliseconds), ``1`` (seconds), or another power of ten in between (the
    exponent works too: ``resolution=3`` is ``10**3``). A value is rounded (half to even) to
    the resolution when it is set, so it reads back equal.

    Accepts an aware datetime, or int/float seconds since the epoch. A naive datetime is
    refused (its instant would be a guess) unless ``utc=True``, which takes it as UTC.
    Values are read back as aware UTC datetimes.

    Example::

        expires_at = co.TimestampField()
        seen_at = co.TimestampField(resolution=10**3, utc=True)   # milliseconds
    """

    operators = ("+", "-")
    operand_types = (datetime.timedelta,)

    python_type = datetime.datetime

    def __init__(
        self,
        *,
        resolution: int = 10**6,
        utc: bool = False,
        **options: Unpack[FieldOptions],
    ) -> None:
        super().__init__(**options)
        checked = _resolution(resolution)
        if isinstance(checked, str):
            self._option_error = checked
            checked = 10**6
        elif not isinstance(utc, bool):
            self._option_error = f"utc must be a bool, not {utc!r}"
        self.resolution = checked
        self.utc = utc is True
        #: microseconds per stored step
        self._unit = 10**6 // checked
        self._digits = len(str(self._unit)) - 1
        #: what the schema fingerprint adds for this field: the stored integer's scale
        self.fingerprint_extra = "" if checked == 10**6 else f"(resolution={checked})"

    def validate(self, value: Any) -> datetime.datetime:
        if self._option_error is not None:
            self._check_options()
        unit = self._unit
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError("not a finite timestamp")
            steps = round(value * self.resolution)  # an int stays exact
            return _EPOCH + datetime.timedelta(microseconds=steps * unit)
        _expect(value, datetime.datetime)
        if value.tzinfo is None or value.utcoffset() is None:
            if not self.utc:
                raise ValueError(
                    "needs an aware datetime (or seconds since the epoch); "
                    "utc=True takes a naive datetime as UTC"
                )
            value = value.replace(tzinfo=_UTC)
        else:
            value = value.astimezone(_UTC)
        if unit == 1:
            return value  # type: ignore[no-any-return]
        return _EPOCH + datetime.timedelta(microseconds=self.to_primitive(value, True) * unit)

    def to_primitive(self, value: datetime.datetime, binary: bool) -> int:
        delta = value - _EPOCH
        micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
        if self._unit == 1:
            return micros
        return round(micros, -self._digits) // self._unit  # half to even, exactly

    def from_primitive(self, primitive: Any, binary: bool) -> datetime.datetime:
        if isinstance(primitive, bool) or not isinstance(primitive, int):
            raise TypeError(f"expected int timestamp, not {type(primitive).__name__}")
        if self._option_error is not None:
            self._check_options()
        return _EPOCH + datetime.timedelta(microseconds=primitive * self._unit)

    def to_json(self, value: datetime.datetime) -> str:
        return value.isoformat()

    def from_json(self, data: Any) -> datetime.datetime:
        _expect(data, str)
        return self.validate(datetime.datetime.fromisoformat(data))


_JSON_SCALARS = (str, int, float, bool, type(None))

#: How deep a `JSONField` value (or a `StructField`'s primitive) may nest: lists and dicts
#: inside each other. Deeper values are refused when set, and when read back.
MAX_JSON_DEPTH = 256


def _check_text(text: str) -> None:
    """Refuse a lone surrogate (``"\\ud800"``): no serializer can encode it as UTF-8. (Callers
    skip ASCII text, ``str.isascii()`` being O(1).)"""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"a lone surrogate {text[exc.start]!r} at index {exc.start} is not text "
            "that can be stored (not valid UTF-8)"
        ) from None


def _check_json(value: Any, path: str = "", depth: int = 0) -> Any:
    if isinstance(value, _JSON_SCALARS):
        if isinstance(value, str) and not value.isascii():
            _check_text(value)
        return value
    if depth >= MAX_JSON_DEPTH:
        where = path if len(path) <= 60 else path[:57] + "..."
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels (at {where or 'top'})")
    if isinstance(value, list | tuple):
        return [_check_json(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"JSON object keys are str, not {type(k).__name__} at {path}")
            if not k.isascii():
                _check_text(k)
            out[k] = _check_json(v, f"{path}.{k}", depth + 1)
        return out
    raise TypeError(f"{type(value).__name__} is not JSON data (at {path or 'top'})")


class JSONField(Field[Any]):
    """Any JSON value (dict, list, str, int, float, bool, None), stored as a value, not
    as JSON text inside the payload. Tuples become lists.

    Example::

        settings = co.JSONField(default=dict)
    """

    def validate(self, value: Any) -> Any:
        return _check_json(value)

    def to_primitive(self, value: Any, binary: bool) -> Any:
        return value

    def from_primitive(self, primitive: Any, binary: bool) -> Any:
        return _check_json(primitive)


class ListField(Field[list[T]]):
    """A list whose items are values of ``field``; nests (a ListField of ListFields).

    Example::

        phones = co.ListField(co.StringField(), default=list)
    """

    operators = ("+",)
    operand_types = (list, tuple)

    python_type = list

    def __init__(
        self,
        field: Field[T],
        *,
        max_items: int | None = None,
        **options: Unpack[FieldOptions],
    ) -> None:
        if not isinstance(field, Field):
            raise TypeError(f"ListField needs a field instance, not {field!r}")
        if field.primary_key:
            raise TypeError("the item field of a ListField cannot be a primary key")
        super().__init__(**options)
        self.field = field
        self.max_items = max_items
        self.identity = field.identity

    def _check_operand_value(self, operand: Any) -> None:
        super()._check_operand_value(operand)
        for i, v in enumerate(operand):
            try:
                self.field.clean(v)
            except ValidationError as exc:
                raise ValueError(f"item {i}: {str(exc).split(': ', 1)[-1]}") from None

    def __set_name__(self, owner: type, name: str) -> None:
        super().__set_name__(owner, name)
        self.field.name = f"{name}[]"

    def validate(self, value: Any) -> list[T]:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected list, not {type(value).__name__}")
        if self.max_items is not None and len(value) > self.max_items:
            raise ValueError(f"more than max_items={self.max_items} items")
        item = self.field
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item.clean(v))
            except ValidationError as exc:
                raise ValueError(f"item {i}: {exc}") from None
        return out

    def to_primitive(self, value: list[T], binary: bool) -> list[Any]:
        item = self.field
        if item.identity:
            return list(value)
        return [None if v is None else item.to_primitive(v, binary) for v in value]

    def from_primitive(self, primitive: Any, binary: bool) -> list[T]:
        _expect(primitive, list)
        item = self.field
        if item.identity:
            return [item.clean(v) for v in primitive]
        if not item.null and None in primitive:
            raise TypeError("an item may not be None")
        return [None if v is None else item.from_primitive(v, binary) for v in primitive]  # type: ignore[misc]

    def to_json(self, value: list[T]) -> list[Any]:
        item = self.field
        return [None if v is None else item.to_json(v) for v in value]

    def from_json(self, data: Any) -> list[T]:
        _expect(data, list)
        item = self.field
        return [None if v is None else item.from_json(v) for v in data]  # type: ignore[misc]


class StructField(Field[T]):
    """A value of your own type, converted by ``serializer`` to a primitive (dict, list,
    str, ...) and back by ``deserializer``.

    Example::

        point = co.StructField(lambda p: [p.x, p.y], lambda v: Point(*v))
    """

    def __init__(
        self,
        serializer: Callable[[T], Any],
        deserializer: Callable[[Any], T],
        **options: Unpack[FieldOptions],
    ) -> None:
        if not callable(serializer) or not callable(deserializer):
            raise TypeError("StructField needs a serializer and a deserializer callable")
        super().__init__(**options)
        self.serializer = serializer
        self.deserializer = deserializer

    def validate(self, value: Any) -> T:
        try:
            primitive = self.serializer(value)
        except Exception as exc:  # the user's function: whatever it raises means "does not fit"
            raise TypeError(f"serializer cannot convert it: {type(exc).__name__}: {exc}") from None
        try:
            _check_json_or_bytes(primitive)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"serializer cannot convert it: {exc}") from None
        return value  # type: ignore[no-any-return]

    def to_primitive(self, value: T, binary: bool) -> Any:
        return self.serializer(value)

    def from_primitive(self, primitive: Any, binary: bool) -> T:
        return self.deserializer(primitive)


def _check_json_or_bytes(value: Any, depth: int = 0) -> None:
    if isinstance(value, bytes):
        return
    if isinstance(value, str):
        if not value.isascii():
            _check_text(value)
        return
    if isinstance(value, list | tuple | dict) and depth >= MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, list | tuple):
        for v in value:
            _check_json_or_bytes(v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError("dict keys must be str")
            if not k.isascii():
                _check_text(k)
            _check_json_or_bytes(v, depth + 1)
        return
    if not isinstance(value, _JSON_SCALARS):
        raise TypeError(f"{type(value).__name__} is not a primitive")
