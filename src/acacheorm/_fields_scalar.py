"""Scalar fields: numbers, booleans, text, bytes, UUIDs and enums."""

from __future__ import annotations

import base64
import binascii
import decimal
import enum
import uuid
from typing import Annotated, Any, Unpack

from ._base import Model
from ._exceptions import ConfigurationError
from ._fields import (
    E,
    Field,
    FieldOptions,
    _check_text,
    _constrained,
    _expect,
    _validator,
)
from ._keys import escape_key_part

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

    def pydantic_type(self, pyd: Any) -> Any:
        return _constrained(pyd, int, ge=self.min_value, le=self.max_value)


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

    def pydantic_type(self, pyd: Any) -> Any:
        return _constrained(pyd, float, ge=self.min_value, le=self.max_value)


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

    def pydantic_type(self, pyd: Any) -> Any:
        if self.auto_round:
            # Rounded first, then checked for max_digits: the field's own validation.
            return Annotated[
                decimal.Decimal,
                pyd.AfterValidator(_validator(self)),
                pyd.Field(
                    json_schema_extra={
                        "x-decimal-places": self.decimal_places,
                        "x-rounding": self.rounding,
                    }
                ),
            ]
        return _constrained(
            pyd, decimal.Decimal, max_digits=self.max_digits, decimal_places=self.decimal_places
        )


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

    def pydantic_type(self, pyd: Any) -> Any:
        return bool


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

    def pydantic_type(self, pyd: Any) -> Any:
        return _constrained(pyd, str, max_length=self.max_length, min_length=self.min_length)


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

    def pydantic_type(self, pyd: Any) -> Any:
        return _constrained(pyd, bytes, max_length=self.max_length)


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

    def pydantic_type(self, pyd: Any) -> Any:
        return uuid.UUID


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

    def pydantic_type(self, pyd: Any) -> Any:
        # The model also takes the 22-character short form; so does the schema.
        return Annotated[uuid.UUID, pyd.BeforeValidator(_short_uuid)]


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

    def pydantic_type(self, pyd: Any) -> Any:
        return self.enum_cls


def _short_uuid(value: Any) -> Any:
    """A short UUID text as a UUID, for a pydantic validator (anything else as it is)."""
    if isinstance(value, str) and len(value) == 22:
        try:
            return _short_decode(value)
        except ValueError:
            return value  # let the UUID validator report it
    return value
