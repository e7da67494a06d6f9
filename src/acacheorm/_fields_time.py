"""Date and time fields: datetimes (naive or aware), dates, times and timestamps."""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, Unpack

from ._fields import (
    _EPOCH,
    _UTC,
    Field,
    FieldOptions,
    T,
    _expect,
    _validator,
)
from ._fields_scalar import _CheckedOptions, _is_int
from ._keys import escape_key_part
from ._types import NOTHING


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


_D = TypeVar("_D", datetime.date, datetime.datetime)


class _DatedField(_FormattedField, Field[_D]):
    """``formats=``, ``auto_now`` and ``auto_now_add``, and ``+``/``-`` of a timedelta in
    update expressions: what `DateTimeField` and `DateField` share."""

    operators = ("+", "-")
    operand_types = (datetime.timedelta,)

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

    def now(self) -> _D:
        raise NotImplementedError


class DateTimeField(_DatedField[datetime.datetime]):
    """A ``datetime`` (naive or aware), stored as ISO 8601 text; it reads back equal.

    With ``formats=[...]`` (``strptime`` formats) a ``str`` is accepted too: read as ISO 8601
    if it is, else with the first format that fits; stored values stay ISO 8601 either way.

    Example::

        seen_at = co.DateTimeField(null=True)
        logged_at = co.DateTimeField(formats=["%m/%d/%Y %I:%M %p", "%Y-%m-%d %H:%M:%S"])
    """

    python_type = datetime.datetime

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

    def pydantic_type(self, pyd: Any) -> Any:
        return _formatted(pyd, self, datetime.datetime)


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

    def pydantic_type(self, pyd: Any) -> Any:
        return _formatted(pyd, self, pyd.AwareDatetime)


class DateField(_DatedField[datetime.date]):
    """A ``date`` (not a datetime), stored as ISO text.

    With ``formats=[...]`` a ``str`` is accepted too (ISO 8601, else the first format that
    fits; the date part of what it reads).

    Example::

        birthday = co.DateField(null=True)
        issued = co.DateField(formats=["%d.%m.%Y"])
    """

    python_type = datetime.date

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

    def pydantic_type(self, pyd: Any) -> Any:
        return _formatted(pyd, self, datetime.date)


def _date_part(value: datetime.datetime) -> datetime.date:
    return value.date()


def _time_part(value: datetime.datetime) -> datetime.time:
    return value.timetz()


def _auto_options(field: Any, auto_now: bool, auto_now_add: bool) -> None:
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

    def pydantic_type(self, pyd: Any) -> Any:
        return _formatted(pyd, self, datetime.time)


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

    def pydantic_type(self, pyd: Any) -> Any:
        # It also takes seconds since the epoch; so does AwareDatetime.
        if self.resolution == 10**6 and not self.utc:
            return pyd.AwareDatetime
        # utc=True takes a naive datetime as UTC; the resolution rounds: the field's own
        # validation gives the value that will be stored.
        extra: dict[str, Any] = {"x-resolution": self.resolution}
        if self.utc:
            extra["x-utc"] = True
        return Annotated[
            datetime.datetime if self.utc else pyd.AwareDatetime,
            pyd.AfterValidator(_validator(self)),
            pyd.Field(json_schema_extra=extra),
        ]


def _formatted(pyd: Any, field: DateTimeField | DateField | TimeField, base: Any) -> Any:
    """A date or time annotation; with ``formats``, a ``str`` is read the way the field reads
    it (ISO 8601, else the formats), and the input schema is any string with ``x-formats``."""
    formats = field.formats
    if formats is None:
        return base

    validate = _validator(field)

    def read_text(value: Any) -> Any:
        return validate(value) if isinstance(value, str) else value

    return Annotated[
        base,
        pyd.BeforeValidator(read_text),
        pyd.WithJsonSchema({"type": "string", "x-formats": list(formats)}, mode="validation"),
    ]
