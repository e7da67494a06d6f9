"""Field descriptors: validation, conversion to primitives and back.

A field converts a Python value to a *primitive* (None, bool, int, float, str, bytes, list,
dict) that every serializer can carry, and back, exactly. ``binary`` says whether the
serializer carries bytes natively; where it does not (JSON), bytes travel as base64 text.
On a model class ``User.name`` is the field; on an instance ``user.name`` is the value.

This module holds the base class `Field`, the options every field shares (`FieldOptions`)
and update expressions; the fields themselves are in ``_fields_scalar`` (numbers, text,
bytes, UUIDs, enums), ``_fields_time`` (dates and times) and ``_fields_struct`` (JSON,
lists, structs).
"""

from __future__ import annotations

import copy
import datetime
import decimal
import enum
import operator
import uuid
from collections.abc import Callable
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Generic,
    Self,
    TypedDict,
    TypeVar,
    Unpack,
    overload,
)

from ._base import Model, ModelBase, State, state_of
from ._exceptions import ValidationError
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

    def pydantic_type(self, pyd: Any) -> Any:
        """The pydantic annotation that validates what this field accepts (``None`` aside),
        for `acacheorm.pydantic_model`; ``pyd`` is the pydantic module. Each field class
        declares its own; a field type of your own maps to its ``python_type`` when that
        names one class, else to anything (override this for more).

        Example::

            class Slug(co.StringField):
                def pydantic_type(self, pyd):
                    return Annotated[str, pyd.StringConstraints(pattern="^[a-z-]+$")]
        """
        python_type = self.python_type
        if isinstance(python_type, type) and python_type is not object:
            return python_type
        return Any

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


# -- helpers of the pydantic mapping (``pydantic_type``) -------------------------------------


def _constrained(pyd: Any, base: Any, **constraints: Any) -> Any:
    """``base`` with the constraints that are set (``Annotated[int, Field(ge=0)]``)."""
    given = {k: v for k, v in constraints.items() if v is not None}
    return Annotated[base, pyd.Field(**given)] if given else base


def _validator(field: Field[Any]) -> Any:
    """The field's own validation, for a pydantic validator: every refusal a ValueError
    (pydantic reports those; a TypeError or an OverflowError would escape it)."""

    def validate(value: Any) -> Any:
        try:
            return field.validate(value)
        except (TypeError, ArithmeticError) as exc:
            raise ValueError(str(exc)) from None

    return validate
