"""Foreign keys: sparse related instances, and the plan that loads a level in one batch."""

from __future__ import annotations

from typing import Any, Generic, Self, TypeVar, Unpack, overload

from ._base import Model
from ._exceptions import ConfigurationError
from ._fields import Field, FieldOptions, _not_loaded
from ._keys import escape_key_part
from ._schema import _models_by_name, lookup_model

M = TypeVar("M", bound="Model")


class ForeignKeyField(Field[M], Generic[M]):
    """A reference to a row of another model (or ``"self"``, or a model's name).

    The row stores only the related primary key. Reading ``article.author`` gives a sparse
    ``User`` holding just its pk until ``await article.author.load()`` or
    ``select_related("author")``; ``article.author_id`` is the raw pk. Assign an instance
    or a pk. ``on_delete`` (``co.CASCADE``, ``co.RESTRICT``, ``co.SET_NULL``, default
    ``co.DO_NOTHING``) says what deleting the related row does to the rows pointing at it;
    the first three need, and imply, an index on the field.

    Example::

        class Article(co.Model):
            id = co.IntegerField(primary_key=True)
            author = co.ForeignKeyField(User)

        article = await Article.get(id=1).select_related("author")
        print(article.author.name)
    """

    def __init__(
        self,
        to: type[M] | str,
        *,
        related_name: str | None = None,
        on_delete: Any = None,
        **options: Unpack[FieldOptions],
    ) -> None:
        from ._index import DO_NOTHING, OnDelete

        if not (isinstance(to, str) or (isinstance(to, type) and issubclass(to, Model))):
            raise TypeError(f"ForeignKeyField needs a model, 'self' or a model name, not {to!r}")
        if related_name is not None and (
            not isinstance(related_name, str) or not related_name.isidentifier()
        ):
            raise TypeError(f"related_name must be an identifier, not {related_name!r}")
        if on_delete is None:
            on_delete = DO_NOTHING
        if not isinstance(on_delete, OnDelete):
            raise TypeError(
                "on_delete must be co.CASCADE, co.RESTRICT, co.SET_NULL or co.DO_NOTHING, "
                f"not {on_delete!r}"
            )
        if on_delete is OnDelete.SET_NULL and not options.get("null"):
            raise TypeError("on_delete=co.SET_NULL needs null=True")
        super().__init__(**options)
        self.on_delete = on_delete
        #: The related model as declared: a class, "self" or a model name.
        self.to = to
        self.attname = ""
        self.related_name = related_name
        #: The module whose class declared the field: a model name resolves there first.
        self.declared_in: str | None = None
        self._rel: type[Model] | None = None
        self._rel_owner: type[Model] | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        super().__set_name__(owner, name)
        self.attname = f"{name}_id"
        if self.declared_in is None:  # an inherited copy keeps its declaring module
            self.declared_in = owner.__module__

    def contribute_to_class(self, cls: type[Model]) -> None:
        if self.attname in cls._schema.fields:
            raise ConfigurationError(
                f"{cls.__name__}.{self.name}: its raw-pk attribute {self.attname!r} clashes "
                "with a field of that name"
            )
        setattr(cls, self.attname, RawPk(self))
        if self.related_name is not None:
            to = self.to
            if to == "self":
                install_reverse(self, cls)
            elif isinstance(to, str):
                try:
                    install_reverse(self, lookup_model(to))
                except LookupError:  # defined later: installed when it is
                    _pending_reverse.setdefault(to, []).append(self)
            else:
                install_reverse(self, to)

    @property
    def rel_model(self) -> type[Model]:
        """The related model class. ``"self"`` is always the model the field is on (a
        subclass's inherited copy points at the subclass); a name is resolved on first use,
        in the declaring module first."""
        rel = self._rel
        if rel is not None and self._rel_owner is getattr(self, "model", None):
            return rel
        to = self.to
        if isinstance(to, str):
            if to == "self":
                rel = self.model
            else:
                try:
                    rel = lookup_model(to, self.declared_in, self._where())
                except ConfigurationError:
                    raise  # an ambiguous name: the message names both models
                except LookupError as exc:
                    raise _UnknownModel(
                        f"{self._where()}: ForeignKeyField({to!r}) names no model: {exc}"
                        f"{_did_you_mean(to)}"
                    ) from None
        else:
            rel = to
        self._rel, self._rel_owner = rel, getattr(self, "model", None)
        return rel

    # -- descriptor -------------------------------------------------------------------------

    @overload
    def __get__(self, instance: None, owner: Any) -> Self: ...

    @overload
    def __get__(self, instance: object, owner: Any) -> M: ...

    def __get__(self, instance: object | None, owner: Any) -> Self | M:
        if instance is None:
            return self
        d = instance.__dict__
        cached = d.get(self.name)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        try:
            raw = d[self.attname]
        except KeyError:
            raise _not_loaded(instance, self.name) from None
        if raw is None:
            return None  # type: ignore[return-value]
        rel = self.rel_model
        obj = rel._sparse(raw if rel._schema.composite else (raw,))
        d[self.name] = obj
        return obj  # type: ignore[return-value]

    def __set__(self, instance: Any, value: Any) -> None:
        d = instance.__dict__

        if isinstance(value, Model) and value is not None:
            d[self.attname] = self.clean(value)
            d[self.name] = value
        else:
            d[self.attname] = self.clean(value)
            d.pop(self.name, None)

    def clean(self, value: Any) -> Any:
        """The raw related pk; an unresolvable related model is a `ConfigurationError`
        (a definition problem), not a bad value."""
        self.rel_model  # noqa: B018 - resolve first
        return super().clean(value)

    def validate(self, value: Any) -> Any:
        """The raw related pk for an instance or a pk value."""

        rel = self.rel_model
        schema = rel._schema
        if isinstance(value, Model):
            if not isinstance(value, rel):
                raise TypeError(f"expected a {rel.__name__}, not a {type(value).__name__}")
            pk = schema.pk_values(value)
        else:
            pk = schema.normalize_pk(value)
        return pk if schema.composite else pk[0]

    # -- conversion of the raw pk -----------------------------------------------------------

    def to_primitive(self, value: Any, binary: bool) -> Any:
        schema = self.rel_model._schema
        if not schema.composite:
            f = schema.pk_fields[0]
            return value if f.identity else f.to_primitive(value, binary)
        return [
            v if f.identity else f.to_primitive(v, binary)
            for f, v in zip(schema.pk_fields, value, strict=True)
        ]

    def from_primitive(self, primitive: Any, binary: bool) -> Any:
        schema = self.rel_model._schema
        if not schema.composite:
            return schema.pk_fields[0].from_primitive(primitive, binary)
        if not isinstance(primitive, list | tuple) or len(primitive) != len(schema.pk_fields):
            raise TypeError(f"expected a list of {len(schema.pk_fields)} key parts")
        return tuple(
            f.from_primitive(v, binary) for f, v in zip(schema.pk_fields, primitive, strict=True)
        )

    def to_json(self, value: Any) -> Any:
        schema = self.rel_model._schema
        if not schema.composite:
            return schema.pk_fields[0].to_json(value)
        return [f.to_json(v) for f, v in zip(schema.pk_fields, value, strict=True)]

    def from_json(self, data: Any) -> Any:
        schema = self.rel_model._schema
        if not schema.composite:
            return schema.pk_fields[0].from_json(data)
        if not isinstance(data, list | tuple) or len(data) != len(schema.pk_fields):
            raise TypeError(f"expected a list of {len(schema.pk_fields)} key parts")
        return tuple(f.from_json(v) for f, v in zip(schema.pk_fields, data, strict=True))

    def pydantic_type(self, pyd: Any) -> Any:
        """The related primary key's annotation (a tuple for a composite key)."""
        rel_schema = self.rel_model._schema
        parts = [f.pydantic_type(pyd) for f in rel_schema.pk_fields]
        if rel_schema.composite:
            return tuple.__class_getitem__(tuple(parts))
        return parts[0]

    def key_part(self, value: Any) -> str:
        schema = self.rel_model._schema
        if not schema.composite:
            return schema.pk_fields[0].key_part(value)
        return escape_key_part(schema.pk_key_part(value))


#: Reverse relations waiting for their model (``ForeignKeyField("Later", related_name=)``).
_pending_reverse: dict[str, list[ForeignKeyField[Any]]] = {}


def install_reverse(field: ForeignKeyField[Any], target: type[Model]) -> None:
    """Give ``target`` the reverse query of ``field`` under its ``related_name``."""
    from ._declare import _RESERVED
    from ._filter import ReverseRelation

    name = field.related_name
    assert name is not None
    existing = target.__dict__.get(name)
    if (
        name in _RESERVED
        or name.startswith("_")
        or name in target._schema.fields
        or (existing is not None and not isinstance(existing, ReverseRelation))
        or (existing is None and hasattr(target, name))
    ):
        raise ConfigurationError(
            f"{field.model.__name__}.{field.name}: related_name {name!r} clashes with an "
            f"attribute of {target.__name__}"
        )
    if isinstance(existing, ReverseRelation) and existing.model.__name__ != field.model.__name__:
        raise ConfigurationError(
            f"{field.model.__name__}.{field.name}: related_name {name!r} is already the "
            f"reverse relation of {existing.model.__name__}.{existing.field_name}"
        )
    setattr(target, name, ReverseRelation(field.model, field.name))


def install_pending_reverse(cls: type[Model]) -> None:
    """Install the reverse relations that were waiting for ``cls`` (by its name)."""
    for key in (cls.__name__, f"{cls.__module__}.{cls.__name__}"):
        for field in _pending_reverse.pop(key, []):
            install_reverse(field, cls)


class _UnknownModel(ConfigurationError, LookupError):
    """A foreign key names no model: a configuration error, and still a LookupError."""


def _did_you_mean(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, [n for n in _models_by_name if "." not in n], n=3)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


class RawPk:
    """``article.author_id``: the raw related primary key of a foreign key field."""

    def __init__(self, field: ForeignKeyField[Any]) -> None:
        self.field = field

    def __get__(self, instance: Any, owner: Any) -> Any:
        if instance is None:
            return self
        try:
            return instance.__dict__[self.field.attname]
        except KeyError:
            raise _not_loaded(instance, self.field.attname) from None

    def __set__(self, instance: Any, value: Any) -> None:
        self.field.__set__(instance, value)


def parse_related(model: type[Model], paths: tuple[str, ...]) -> dict[str, Any]:
    """``("author", "article__author")`` → a tree ``{"author": {}, "article": {"author": {}}}``,
    checked against the models' foreign keys."""
    tree: dict[str, Any] = {}
    for path in paths:
        if not isinstance(path, str) or not path:
            raise ValueError(f"select_related takes field paths like 'author__team', not {path!r}")
        node = tree
        current = model
        for part in path.split("__"):
            field = current._schema.fields.get(part)
            if not isinstance(field, ForeignKeyField):
                fks = [
                    n for n, f in current._schema.fields.items() if isinstance(f, ForeignKeyField)
                ]
                raise ValueError(
                    f"{current.__name__}.{part} is not a foreign key (in {path!r}); foreign keys "
                    f"of {current.__name__}: {fks}"
                )
            node = node.setdefault(part, {})
            current = field.rel_model
    return tree
