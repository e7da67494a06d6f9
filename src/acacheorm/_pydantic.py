"""``pydantic_model``: a pydantic schema generated from a model's fields.

The generated class validates like the model does (types, ``null``, lengths, bounds, digits),
so a FastAPI app can use it for request and response bodies::

    UserIn = co.pydantic_model(User, exclude=["created_at"])
    user = await User.create(**UserIn(id=1, name="Sam", height=1.8).model_dump())
    UserOut = co.pydantic_model(User)
    UserOut.model_validate(user)          # an instance, or user.to_dict()

pydantic is imported on first use, so ``import acacheorm`` never needs it.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any

from ._base import Model
from ._exceptions import ConfigurationError
from ._fields import _IMMUTABLE_DEFAULTS, Field
from ._fields_scalar import (
    BinaryField,
    BooleanField,
    DecimalField,
    EnumField,
    FloatField,
    IntegerField,
    ShortUUIDField,
    StringField,
    UUIDField,
    _short_decode,
)
from ._fields_struct import JSONField, ListField, StructField
from ._fields_time import DateField, DateTimeField, DateTimeTZField, TimeField, TimestampField
from ._relations import ForeignKeyField
from ._schema import schema_of
from ._types import NOTHING

if TYPE_CHECKING:
    import pydantic


__all__ = ["pydantic_model"]

#: Where the generated classes of a model are kept: on the model class itself, so they live
#: and die with it (a model redefined in a notebook gets fresh schemas).
_CACHE_ATTR = "_pydantic_models_"


def pydantic_model(
    model_cls: type[Model],
    *,
    name: str | None = None,
    exclude: Iterable[str] = (),
    partial: bool = False,
) -> type[pydantic.BaseModel]:
    """A pydantic model with the fields of ``model_cls``, for request/response schemas.

    Each field maps to the pydantic type that validates the same values: bounds, lengths and
    digits carry over, ``null=True`` gives ``X | None``, a value default stays a default and a
    callable default becomes a ``default_factory``. A foreign key is the related primary key
    (a tuple for a composite key). ``exclude`` drops fields; ``partial=True`` makes every
    field optional with default ``None`` (PATCH bodies: dump with ``exclude_unset=True``).
    ``name`` names the class (default: the model's name, plus ``Partial`` and the excluded
    fields, so two different schemas never share a name in an OpenAPI document).

    The class validates a model instance directly (``UserOut.model_validate(user)``) as well
    as ``user.to_dict()``. Generated classes are cached per model and arguments. Needs
    pydantic (``pip install 'acacheorm[pydantic]'``).

    Example::

        UserIn = co.pydantic_model(User, exclude=["created_at"])
        UserPatch = co.pydantic_model(User, partial=True, exclude=["id", "created_at"])
        body = UserIn.model_validate_json('{"id": 1, "name": "Sam", "height": 1.8}')
        user = await User.create(**body.model_dump())
        patch = UserPatch(height=1.9).model_dump(exclude_unset=True)
        user = await User.set_by_id(1, patch)
    """
    pyd = _import_pydantic()

    if not (isinstance(model_cls, type) and issubclass(model_cls, Model)):
        raise TypeError(f"pydantic_model() needs a model class, not {model_cls!r}")

    schema = schema_of(model_cls)
    if schema is None:
        raise TypeError(f"{model_cls.__name__} is abstract; it has no fields of its own to map")
    if isinstance(exclude, str):
        raise TypeError("exclude takes field names (a list), not a single str")
    if not isinstance(partial, bool):
        raise TypeError(f"partial must be a bool, not {partial!r}")
    excluded = _excluded_names(model_cls, exclude)
    if name is None:
        name = _default_name(model_cls.__name__, excluded, partial)
    elif not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"name must be a Python identifier, not {name!r}")

    cache: dict[tuple[str, frozenset[str], bool], type[pydantic.BaseModel]]
    cache = model_cls.__dict__.get(_CACHE_ATTR) or {}
    if not cache:
        setattr(model_cls, _CACHE_ATTR, cache)
    cache_key = (name, excluded, partial)
    cached = cache.get(cache_key)
    if cached is not None:
        return cached

    definitions: dict[str, Any] = {}
    for fname, field in schema.fields.items():
        if fname in excluded:
            continue
        annotation = _annotation(pyd, field)
        if partial:
            definitions[fname] = (annotation | None, None)
            continue
        if field.null:
            annotation = annotation | None
        definitions[fname] = (annotation, _default(pyd, field))

    generated: type[pydantic.BaseModel] = pyd.create_model(
        name,
        __base__=_base_class(),
        __module__=model_cls.__module__,
        __doc__=(
            f"pydantic schema of the acacheorm model {model_cls.__name__}"
            + (" (every field optional)" if partial else "")
            + (f" without {', '.join(sorted(excluded))}" if excluded else "")
            + "."
        ),
        **definitions,
    )
    generated.__acacheorm_model__ = model_cls  # type: ignore[attr-defined]
    cache[cache_key] = generated
    return generated


def _import_pydantic() -> Any:
    try:
        import pydantic
    except ImportError as exc:
        raise ConfigurationError(
            "pydantic_model() needs pydantic: pip install 'acacheorm[pydantic]'"
        ) from exc
    return pydantic


def _excluded_names(model_cls: type[Model], exclude: Iterable[str]) -> frozenset[str]:
    schema = model_cls._schema
    by_attname = {a: n for n, a in schema.attnames.items()}
    names = set()
    for item in exclude:
        fname = item if item in schema.fields else by_attname.get(item)
        if fname is None:
            raise TypeError(
                f"pydantic_model({model_cls.__name__}): exclude names {item!r}, which is not "
                f"a field (fields: {', '.join(schema.fields)})"
            )
        names.add(fname)
    return frozenset(names)


def _default_name(model_name: str, excluded: frozenset[str], partial: bool) -> str:
    name = model_name + ("Partial" if partial else "")
    if excluded:
        name += "Without" + "".join(
            part.capitalize() for fname in sorted(excluded) for part in fname.split("_")
        )
    return name


# -- the base class of every generated schema ---------------------------------------------------

_BASE: type[pydantic.BaseModel] | None = None


def _base_class() -> type[pydantic.BaseModel]:
    """Built once, on first use, because pydantic is imported lazily."""
    global _BASE
    if _BASE is not None:
        return _BASE
    import pydantic

    config = pydantic.ConfigDict(
        # bytes travel as base64 in JSON both ways (pydantic's default, utf8, cannot carry
        # arbitrary bytes); Python-mode validation still takes raw bytes from to_dict().
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )

    class AcacheormSchema(pydantic.BaseModel):
        """Base of the classes `pydantic_model` generates."""

        model_config = config

        @pydantic.model_validator(mode="before")
        @classmethod
        def _from_instance(cls, data: Any) -> Any:
            # A model instance validates through its to_dict(): its foreign keys as raw pks,
            # so FastAPI can return instances from a route with response_model=UserOut.
            if isinstance(data, Model):
                return data.to_dict()
            return data

    _BASE = AcacheormSchema
    return _BASE


# -- field → annotation ---------------------------------------------------------------------


def _annotation(pyd: Any, field: Field[Any]) -> Any:
    """The pydantic annotation validating what ``field`` accepts (``None`` aside)."""
    F = pyd.Field
    if isinstance(field, ForeignKeyField):
        rel_schema = field.rel_model._schema
        parts = [_annotation(pyd, f) for f in rel_schema.pk_fields]
        if rel_schema.composite:
            return tuple.__class_getitem__(tuple(parts))
        return parts[0]
    if isinstance(field, BooleanField):
        return bool
    if isinstance(field, IntegerField):
        return _constrained(int, F, ge=field.min_value, le=field.max_value)
    if isinstance(field, FloatField):
        return _constrained(float, F, ge=field.min_value, le=field.max_value)
    if isinstance(field, DecimalField):
        if field.auto_round:
            # Rounded first, then checked for max_digits: the field's own validation.
            return Annotated[
                decimal.Decimal,
                pyd.AfterValidator(_validator(field)),
                F(
                    json_schema_extra={
                        "x-decimal-places": field.decimal_places,
                        "x-rounding": field.rounding,
                    }
                ),
            ]
        return _constrained(
            decimal.Decimal, F, max_digits=field.max_digits, decimal_places=field.decimal_places
        )
    if isinstance(field, StringField):
        return _constrained(str, F, max_length=field.max_length, min_length=field.min_length)
    if isinstance(field, BinaryField):
        return _constrained(bytes, F, max_length=field.max_length)
    if isinstance(field, ShortUUIDField):
        # The model also takes the 22-character short form; so does the schema.
        return Annotated[uuid.UUID, pyd.BeforeValidator(_short_uuid)]
    if isinstance(field, UUIDField):
        return uuid.UUID
    if isinstance(field, EnumField):
        return field.enum_cls
    if isinstance(field, TimestampField):
        # It also takes seconds since the epoch; so does AwareDatetime.
        if field.resolution == 10**6 and not field.utc:
            return pyd.AwareDatetime
        # utc=True takes a naive datetime as UTC; the resolution rounds: the field's own
        # validation gives the value that will be stored.
        extra: dict[str, Any] = {"x-resolution": field.resolution}
        if field.utc:
            extra["x-utc"] = True
        return Annotated[
            datetime.datetime if field.utc else pyd.AwareDatetime,
            pyd.AfterValidator(_validator(field)),
            F(json_schema_extra=extra),
        ]
    if isinstance(field, DateTimeTZField):
        return _formatted(pyd, field, pyd.AwareDatetime)
    if isinstance(field, DateTimeField):
        return _formatted(pyd, field, datetime.datetime)
    if isinstance(field, DateField):
        return _formatted(pyd, field, datetime.date)
    if isinstance(field, TimeField):
        return _formatted(pyd, field, datetime.time)
    if isinstance(field, JSONField):
        return pyd.JsonValue
    if isinstance(field, ListField):
        item = _annotation(pyd, field.field)
        if field.field.null:
            item = item | None
        return _constrained(list.__class_getitem__(item), F, max_length=field.max_items)
    if isinstance(field, StructField):
        return Any
    # A field type of your own: its python_type when it names one class, else anything.
    python_type = field.python_type
    if isinstance(python_type, type) and python_type is not object:
        return python_type
    return Any


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


def _validator(field: Field[Any]) -> Any:
    """The field's own validation, for a pydantic validator: every refusal a ValueError
    (pydantic reports those; a TypeError or an OverflowError would escape it)."""

    def validate(value: Any) -> Any:
        try:
            return field.validate(value)
        except (TypeError, ArithmeticError) as exc:
            raise ValueError(str(exc)) from None

    return validate


def _constrained(base: Any, make_field: Any, **constraints: Any) -> Any:
    given = {k: v for k, v in constraints.items() if v is not None}
    return Annotated[base, make_field(**given)] if given else base


def _short_uuid(value: Any) -> Any:
    if isinstance(value, str) and len(value) == 22:
        try:
            return _short_decode(value)
        except ValueError:
            return value  # let the UUID validator report it
    return value


def _default(pyd: Any, field: Field[Any]) -> Any:
    """The pydantic default for ``field``: required, a value, or a default_factory."""
    default = field.default
    if default is NOTHING:
        return None if field.null else ...
    if callable(default):
        return pyd.Field(default_factory=default)
    if isinstance(default, _IMMUTABLE_DEFAULTS):
        return default
    # A mutable value default is never shared between instances (as on the model).
    return pyd.Field(default_factory=lambda: copy.deepcopy(default))
