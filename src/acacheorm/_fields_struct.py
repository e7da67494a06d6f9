"""Structured fields: JSON values, lists of a field, and structs of your own type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Unpack

from ._exceptions import ValidationError
from ._fields import (
    Field,
    FieldOptions,
    T,
    _check_text,
    _constrained,
    _expect,
)

_JSON_SCALARS = (str, int, float, bool, type(None))

#: How deep a `JSONField` value (or a `StructField`'s primitive) may nest: lists and dicts
#: inside each other. Deeper values are refused when set, and when read back.
MAX_JSON_DEPTH = 256


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

    def pydantic_type(self, pyd: Any) -> Any:
        return pyd.JsonValue


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

    def pydantic_type(self, pyd: Any) -> Any:
        item = self.field.pydantic_type(pyd)
        if self.field.null:
            item = item | None
        return _constrained(pyd, list.__class_getitem__(item), max_length=self.max_items)


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

    def pydantic_type(self, pyd: Any) -> Any:
        return Any


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
