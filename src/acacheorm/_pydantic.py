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
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._base import Model
from ._exceptions import ConfigurationError
from ._fields import _IMMUTABLE_DEFAULTS, Field
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
        annotation = field.pydantic_type(pyd)
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
