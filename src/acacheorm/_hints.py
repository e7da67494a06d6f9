"""Fields from type annotations: ``name: str`` or ``email: str | None = None`` in a model
body becomes a field, and an annotation next to an explicit field is checked against it."""

from __future__ import annotations

import datetime
import decimal
import enum
import sys
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from ._base import ModelBase
from ._exceptions import ConfigurationError
from ._fields import Field
from ._fields_scalar import (
    BinaryField,
    BooleanField,
    DecimalField,
    EnumField,
    FloatField,
    IntegerField,
    StringField,
    UUIDField,
)
from ._fields_struct import JSONField, ListField, StructField
from ._fields_time import DateField, DateTimeField, TimeField
from ._relations import ForeignKeyField

_NOT_A_FIELD: Any = object()
_NO_DEFAULT: Any = object()

_UNRESOLVED = "unresolved"

#: A bare annotation's type → the field it declares.
_FIELD_FOR_TYPE: dict[Any, Callable[..., Field[Any]]] = {
    int: IntegerField,
    float: FloatField,
    str: StringField,
    bool: BooleanField,
    bytes: BinaryField,
    decimal.Decimal: DecimalField,
    uuid.UUID: UUIDField,
    datetime.datetime: DateTimeField,
    datetime.date: DateField,
    datetime.time: TimeField,
}


class _AnnotationResolver:
    """Evaluates a class body's annotations (strings under ``from __future__ import
    annotations``) in the module's globals, the class body and the enclosing function."""

    def __init__(self, cls_name: str, ns: dict[str, Any]) -> None:
        self.cls_name = cls_name
        module = sys.modules.get(ns.get("__module__", ""))
        self.globals = dict(vars(module)) if module is not None else {}
        self.locals: dict[str, Any] = {}
        try:
            frame = sys._getframe(3)  # the frame running the class statement
        except ValueError:  # pragma: no cover - no such frame
            frame = None
        if frame is not None and frame.f_code.co_filename != __file__:
            self.globals = frame.f_globals  # the class statement's own globals
            if frame.f_locals is not frame.f_globals:
                self.locals.update(frame.f_locals)  # a model defined inside a function
        self.locals.update(ns)

    def resolve(self, fname: str, annotation: Any) -> Any:
        if isinstance(annotation, str):
            if annotation.replace("typing.", "").startswith(("ClassVar", "Final")):
                return _NOT_A_FIELD
            try:
                annotation = eval(annotation, self.globals, self.locals)
            except NameError:
                return (_UNRESOLVED, annotation)
            except Exception as exc:
                raise ConfigurationError(
                    f"{self.cls_name}.{fname}: cannot read the annotation {annotation!r}: {exc}"
                ) from None
        origin = typing.get_origin(annotation)
        if annotation is ClassVar or origin is ClassVar:
            return _NOT_A_FIELD
        if annotation is typing.Final or origin is typing.Final:
            return _NOT_A_FIELD
        return annotation


def _split_optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` / ``Optional[X]`` → ``(X, True)``; anything else → ``(hint, False)``."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return _split_optional(typing.get_args(hint)[0])
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != len(typing.get_args(hint)):
            inner = args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
            return inner, True
    return hint, False


def _unresolved_model_name(hint: Any) -> str | None:
    """A forward reference to a model (``"Author"``, ``"Author | None"``): its name."""
    if not (isinstance(hint, tuple) and hint and hint[0] == _UNRESOLVED):
        return None
    text: str = hint[1].strip()
    for suffix in ("| None", "|None"):
        if text.endswith(suffix):
            text = text[: -len(suffix)].strip()
    if text.startswith("Optional[") and text.endswith("]"):
        text = text[len("Optional[") : -1].strip()
    text = text.strip("'\"")
    # A model's name: an identifier (maybe dotted) whose last part is capitalised, as class
    # names are; anything else undefined (a type imported only for type checkers) is an error.
    if text.replace(".", "").isidentifier() and text.rpartition(".")[2][:1].isupper():
        return text
    return None


def _unresolved_is_optional(hint: Any) -> bool:
    text: str = hint[1].replace(" ", "")
    return text.endswith("|None") or text.startswith("Optional[")


def _field_for(cls_name: str, fname: str, hint: Any, default: Any) -> Field[Any]:
    """The field a bare annotation declares (``bio: str | None = None``)."""
    options: dict[str, Any] = {}
    if default is not _NO_DEFAULT:
        options["default"] = default
    model_name = _unresolved_model_name(hint)
    if model_name is not None:
        to = "self" if model_name == cls_name else model_name
        return ForeignKeyField(to, null=_unresolved_is_optional(hint), **options)
    if isinstance(hint, tuple) and hint and hint[0] == _UNRESOLVED:
        raise ConfigurationError(
            f"{cls_name}.{fname}: the annotation {hint[1]!r} names something undefined"
        )
    inner, null = _split_optional(hint)
    try:
        return _make_field(inner, null, options)
    except _Unsupported:
        raise ConfigurationError(
            f"{cls_name}.{fname}: {_hint_name(hint)} is not a type a bare annotation can "
            "declare (int, float, str, bool, bytes, Decimal, UUID, datetime, date, time, an "
            "Enum, list[T], dict[str, Any], a model); assign a field: "
            f"{fname}: ... = co.SomeField(...)"
        ) from None


class _Unsupported(Exception):
    pass


def _make_field(hint: Any, null: bool, options: dict[str, Any]) -> Field[Any]:
    if null:
        options["null"] = True
    factory = _FIELD_FOR_TYPE.get(hint)
    if factory is not None:
        return factory(**options)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return EnumField(hint, **options)
    if isinstance(hint, type) and issubclass(hint, ModelBase) and _is_declared_model(hint):
        return ForeignKeyField(hint, **options)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is list or origin is list:
        if not args:
            raise _Unsupported
        item, item_null = _split_optional(args[0])
        return ListField(_make_field(item, item_null, {}), **options)
    if hint is dict or origin is dict:
        if args and args[0] is not str:
            raise _Unsupported
        return JSONField(**options)
    raise _Unsupported


def _hint_name(hint: Any) -> str:
    if isinstance(hint, tuple) and hint and hint[0] == _UNRESOLVED:
        return repr(hint[1])
    if isinstance(hint, type):
        return hint.__qualname__
    return repr(hint).replace("typing.", "")


def _check_annotation(cls_name: str, fname: str, hint: Any, field: Field[Any]) -> None:
    """An annotation must say what the field holds (``age: str = co.IntegerField()`` is
    an error), ``X | None`` exactly when the field is ``null=True``."""
    if isinstance(hint, tuple) and hint and hint[0] == _UNRESOLVED:
        if isinstance(field, ForeignKeyField) and _unresolved_is_optional(hint) != field.null:
            _mismatch(cls_name, fname, hint, field, nullable=True)
        return  # a forward reference (a model defined later): nothing more to check
    inner, null = _split_optional(hint)
    if inner is Any:
        return
    if null != field.null:
        _mismatch(cls_name, fname, hint, field, nullable=True)
    if not _fits(inner, field):
        _mismatch(cls_name, fname, hint, field)


def _fits(hint: Any, field: Field[Any]) -> bool:
    if hint is Any or isinstance(field, JSONField | StructField):
        return True
    if isinstance(field, ForeignKeyField):
        to = field.to
        if isinstance(to, str):
            return isinstance(hint, type) and issubclass(hint, ModelBase)
        return hint is to
    if isinstance(field, ListField):
        origin = typing.get_origin(hint)
        if hint is list:
            return True
        if origin is not list:
            return False
        item, item_null = _split_optional(typing.get_args(hint)[0])
        return (item_null or not field.field.null) and _fits(item, field.field)
    expected = field.python_type
    if isinstance(expected, tuple):
        return hint in expected
    return hint is expected


def _mismatch(
    cls_name: str, fname: str, hint: Any, field: Field[Any], nullable: bool = False
) -> None:
    if nullable:
        detail = (
            "the field is null=True: annotate it 'X | None'"
            if field.null
            else "the annotation allows None: give the field null=True"
        )
    else:
        detail = f"the field holds {_field_type_name(field)}"
    raise ConfigurationError(
        f"{cls_name}.{fname}: the annotation {_hint_name(hint)} does not match "
        f"{type(field).__name__} ({detail})"
    )


def _field_type_name(field: Field[Any]) -> str:
    if isinstance(field, ForeignKeyField):
        to = field.to
        return f"a {to if isinstance(to, str) else to.__name__}"
    t = field.python_type
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def _is_declared_model(cls: type) -> bool:
    """Whether ``cls`` is a model declared by a user, not the `Model` base class itself."""
    return ModelBase not in cls.__bases__
