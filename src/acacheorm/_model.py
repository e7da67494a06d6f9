"""ModelMeta and Model: declaring models, instances, and the query entry points."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

from ._exceptions import ConfigurationError, DoesNotExist, ValidationError
from ._fields import Field, UUIDField
from ._index import setup_indexes
from ._relations import install_pending_reverse
from ._schema import Schema
from ._types import NOTHING
from .backends.base import Backend, normalize_ttl
from .serializers import Serializer, registry

if TYPE_CHECKING:
    from ._filter import FilterQuery, FilterResult, UpdateOrCreateQuery
    from ._lookups import Condition
    from ._query import (
        DeleteQuery,
        GetOrCreateQuery,
        InsertQuery,
        Query,
        SelectQuery,
        UpdateQuery,
    )

META_OPTIONS = frozenset(
    {
        "backend",
        "serializer",
        "ttl",
        "primary_key",
        "name",
        "namespace",
        "key_format",
        "abstract",
    }
)

#: Every concrete model by class name (and by "module.Name"), for ForeignKeyField("Name").
_models_by_name: dict[str, list[type[Model]]] = {}


class CompositeKey:
    """A primary key made of several fields, for ``Meta.primary_key``.

    ``key_format`` (optional) is a ``%``-format string or a callable taking the pk values.

    Example::

        class Collection(co.Model):
            collector = co.ForeignKeyField(User)
            article = co.ForeignKeyField(Article)

            class Meta:
                primary_key = co.CompositeKey("collector", "article")
    """

    def __init__(self, *names: str, key_format: str | Callable[..., str] | None = None) -> None:
        if len(names) < 2:
            raise TypeError("CompositeKey needs at least two field names")
        if len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"CompositeKey field names must be distinct strings: {names!r}")
        self.names = names
        self.key_format = key_format

    def __repr__(self) -> str:
        return f"CompositeKey{self.names!r}"


_RESERVED = frozenset(
    {
        "pk",
        "save",
        "delete_instance",
        "refresh",
        "load",
        "to_dict",
        "from_dict",
        "create",
        "insert",
        "insert_many",
        "get",
        "get_by_id",
        "get_or_none",
        "get_or_create",
        "query",
        "query_many",
        "update",
        "update_many",
        "set_by_id",
        "delete",
        "delete_by_id",
        "delete_many",
        "DoesNotExist",
        "Meta",
        "is_sparse",
        "pydantic_model",
        # queries by field
        "filter",
        "exclude",
        "all",
        "count",
        "first",
        "order_by",
        "limit",
        "offset",
        "update_or_create",
        "objects",
    }
)


def _meta_options(cls_name: str, bases: tuple[type, ...], meta: Any) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for base in reversed(bases):
        inherited = getattr(base, "_meta_options", None)
        if inherited:
            options.update(inherited)
    options.pop("abstract", None)
    # A subclass is another model: it gets its own key name unless it sets one.
    options.pop("name", None)
    if meta is not None:
        for key, value in vars(meta).items():
            if key.startswith("__"):
                continue
            if key not in META_OPTIONS:
                raise ConfigurationError(
                    f"{cls_name}.Meta: unknown option {key!r} "
                    f"(options are {', '.join(sorted(META_OPTIONS))})"
                )
            options[key] = value
    return options


def _resolve_serializer(cls_name: str, value: Any) -> Serializer:
    if isinstance(value, Serializer):
        return value
    if isinstance(value, str):
        try:
            return registry.get_by_name(value)
        except KeyError:
            raise ConfigurationError(
                f"{cls_name}.Meta.serializer: unknown serializer {value!r} "
                f"(registered: {', '.join(sorted(registry.names()))})"
            ) from None
    raise ConfigurationError(
        f"{cls_name}.Meta.serializer must be a registered name or a Serializer, not {value!r}"
    )


class ModelMeta(type):
    """Builds the frozen `Schema` of each model class at definition time."""

    _schema: Schema
    _meta_options: dict[str, Any]

    def __new__(mcs, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kw: Any) -> Any:
        meta = ns.pop("Meta", None)
        if not any(isinstance(b, ModelMeta) for b in bases):
            return super().__new__(mcs, name, bases, ns, **kw)  # the Model base class itself
        options = _meta_options(name, bases, meta)
        abstract = bool(meta is not None and getattr(meta, "abstract", False))

        # Fields: inherited ones first (copied, so each model owns its fields), then own ones.
        fields: dict[str, Field[Any]] = {}
        for base in reversed(bases):
            schema = getattr(base, "_schema", None)
            parent_fields = (
                schema.fields if schema is not None else getattr(base, "_abstract_fields", {})
            )
            for fname, field in parent_fields.items():
                fields[fname] = _copy_field(field)
        own = {k: v for k, v in ns.items() if isinstance(v, Field)}
        for fname in own:
            if fname in _RESERVED or fname.startswith("_"):
                raise ConfigurationError(f"{name}: a field cannot be named {fname!r} (reserved)")
        fields.update(own)  # an overridden field keeps its place
        ns.update(fields)  # inherited field copies become attributes of this class too

        cls: Any = super().__new__(mcs, name, bases, ns, **kw)  # attributes set dynamically
        cls._meta_options = dict(options)
        for fname, field in fields.items():
            field.__set_name__(cls, fname)
            field.model = cls
        parent_dne = tuple(
            dne for b in bases if isinstance(dne := getattr(b, "DoesNotExist", None), type)
        ) or (DoesNotExist,)
        cls.DoesNotExist = type(
            "DoesNotExist",
            parent_dne,
            {
                "__module__": cls.__module__,
                "__qualname__": f"{cls.__qualname__}.DoesNotExist",
            },
        )
        if abstract:
            cls._abstract_fields = fields
            return cls

        # Primary key: explicit field(s), a CompositeKey, or an implicit UUID ``id``.
        pk_fields = [n for n, f in fields.items() if f.primary_key]
        composite = options.get("primary_key")
        if composite is not None:
            if not isinstance(composite, CompositeKey):
                raise ConfigurationError(f"{name}.Meta.primary_key must be a CompositeKey")
            if pk_fields and set(pk_fields) - set(composite.names):
                raise ConfigurationError(
                    f"{name}: two primary keys (field {pk_fields[0]!r} and Meta.primary_key)"
                )
            for part in composite.names:
                if part not in fields:
                    raise ConfigurationError(f"{name}.Meta.primary_key: no field named {part!r}")
                if fields[part].null:
                    raise ConfigurationError(f"{name}.{part}: a primary key part cannot be null")
            pk_names = composite.names
        elif len(pk_fields) > 1:
            raise ConfigurationError(
                f"{name}: two primary keys ({', '.join(pk_fields)}); use Meta.primary_key = "
                "co.CompositeKey(...) for a composite key"
            )
        elif pk_fields:
            pk_names = (pk_fields[0],)
        else:
            if "id" in fields:
                raise ConfigurationError(
                    f"{name}: field 'id' is not a primary key, and no other field is"
                )
            field = UUIDField(primary_key=True, default=uuid.uuid4)
            field.__set_name__(cls, "id")
            field.model = cls
            cls.id = field
            fields = {"id": field, **fields}
            pk_names = ("id",)

        backend = options.get("backend")
        if backend is None:
            raise ConfigurationError(f"{name}.Meta.backend is missing (a co.*Backend instance)")
        if not isinstance(backend, Backend):
            raise ConfigurationError(f"{name}.Meta.backend must be a backend, not {backend!r}")
        if options.get("serializer") is None:
            raise ConfigurationError(f"{name}.Meta.serializer is missing (e.g. 'msgpack')")
        serializer = _resolve_serializer(name, options["serializer"])
        try:
            ttl = normalize_ttl(options.get("ttl"))
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{name}.Meta.ttl: {exc}") from None
        model_name = options.get("name", name.lower())
        namespace = options.get("namespace", "")
        for opt, val in (("name", model_name), ("namespace", namespace)):
            if not isinstance(val, str):
                raise ConfigurationError(f"{name}.Meta.{opt} must be a str, not {val!r}")
        key_format = options.get("key_format")
        if key_format is None and isinstance(composite, CompositeKey):
            key_format = composite.key_format
        if key_format is not None and not (isinstance(key_format, str) or callable(key_format)):
            raise ConfigurationError(f"{name}.Meta.key_format must be a %-string or a callable")
        if isinstance(key_format, str):
            _check_key_format(name, key_format, len(pk_names))

        cls._schema = Schema(
            model=cls,
            name=model_name,
            namespace=namespace,
            fields=fields,
            pk_names=tuple(pk_names),
            composite=len(pk_names) > 1,
            backend=backend,
            serializer=serializer,
            ttl=ttl,
            key_format=key_format,
        )
        for field in fields.values():
            contribute = getattr(field, "contribute_to_class", None)
            if contribute is not None:
                contribute(cls)
        _models_by_name.setdefault(name, []).append(cls)
        _models_by_name.setdefault(f"{cls.__module__}.{name}", []).append(cls)
        install_pending_reverse(cls)
        setup_indexes(cls)
        return cls


def _check_key_format(name: str, key_format: str, arity: int) -> None:
    """A %-format must take exactly the pk values (ints for %d, anything for %s)."""
    errors = []
    for sample in ((0,) * arity, ("x",) * arity):
        try:
            key_format % sample
            return
        except (TypeError, ValueError) as exc:
            errors.append(exc)
    raise ConfigurationError(
        f"{name}.Meta.key_format {key_format!r} does not take the {arity} primary key "
        f"value(s): {errors[-1]}"
    )


def _copy_field(field: Field[Any]) -> Field[Any]:
    new = object.__new__(type(field))
    new.__dict__.update(field.__dict__)
    return new


def lookup_model(name: str) -> type[Model]:
    found = _models_by_name.get(name, [])
    if not found:
        raise LookupError(f"no model named {name!r} is defined")
    if len(found) > 1 and len({id(m) for m in found}) > 1:
        return found[-1]  # the most recent definition (redefinition in a notebook)
    return found[0]


class Model(metaclass=ModelMeta):
    """Base class of every model.

    Example::

        class User(co.Model):
            id = co.IntegerField(primary_key=True)
            name = co.StringField(max_length=64)

            class Meta:
                backend = co.SimpleBackend()
                serializer = "msgpack"

        user = await User.create(id=1, name="Sam")
        assert (await User.get(id=1)).name == "Sam"
    """

    _schema: ClassVar[Schema]
    DoesNotExist: ClassVar[type[DoesNotExist]]

    def __init__(self, **kwargs: Any) -> None:
        schema = self._schema
        fields = schema.fields
        unknown = [k for k in kwargs if k not in fields and k not in schema.attnames.values()]
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s): "
                f"{', '.join(repr(k) for k in unknown)}"
            )
        for name, field in fields.items():
            attname = schema.attnames[name]
            if name in kwargs:
                setattr(self, name, kwargs[name])
            elif attname in kwargs:
                setattr(self, attname, kwargs[attname])
            elif field.has_default():
                self.__dict__[attname] = field.clean(field.get_default())
            else:
                raise ValidationError("a value is required", model=type(self).__name__, field=name)

    # -- instance state ---------------------------------------------------------------------

    @property
    def pk(self) -> Any:
        """The primary key: a value, or a tuple for a composite key."""
        schema = self._schema
        values = schema.pk_values(self)
        return values if schema.composite else values[0]

    @property
    def is_sparse(self) -> bool:
        """True for an instance holding only its primary key (an unloaded foreign key)."""
        return bool(self.__dict__.get("_sparse_"))

    def to_dict(self) -> dict[str, Any]:
        """The field values by field name (a foreign key gives the related primary key)."""
        schema = self._schema
        d = self.__dict__
        if d.get("_sparse_"):
            return {n: d[schema.attnames[n]] for n in schema.pk_names}
        return {n: d[a] for n, a in schema.attnames.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build an (unsaved) instance from a dict of field values; validated.

        Example::

            user = User.from_dict({"id": 1, "name": "Sam", "height": 1.8})
        """
        return cls(**data)

    @classmethod
    def pydantic_model(
        cls, *, name: str | None = None, exclude: Iterable[str] = (), partial: bool = False
    ) -> type[Any]:
        """A pydantic model with this model's fields, for request/response schemas.

        ``partial=True`` makes every field optional (for PATCH bodies); ``exclude`` drops
        fields. Needs pydantic (``pip install 'acacheorm[pydantic]'``).

        Example::

            UserIn = User.pydantic_model(exclude=["created_at"])
            UserPatch = User.pydantic_model(partial=True, exclude=["id"])
        """
        from ._pydantic import pydantic_model

        return pydantic_model(cls, name=name, exclude=tuple(exclude), partial=partial)

    def __repr__(self) -> str:
        schema = self._schema
        d = self.__dict__
        pk = ", ".join(f"{n}={d.get(schema.attnames[n])!r}" for n in schema.pk_names)
        state = d.get("_sparse_")
        if state:
            return f"<{type(self).__name__} {pk} [{'missing' if state == 'missing' else 'sparse'}]>"
        rest = ", ".join(
            f"{n}={d.get(a)!r}" for n, a in schema.attnames.items() if n not in schema.pk_names
        )
        return f"<{type(self).__name__} {pk}{': ' + rest if rest else ''}>"

    def _repr_html_(self) -> str:
        from ._display import instances_html

        return instances_html([self])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Model) or type(other)._schema is not self._schema:
            return NotImplemented
        return self._schema.pk_values(self) == other._schema.pk_values(other)

    def __hash__(self) -> int:
        return hash((type(self), self._schema.pk_values(self)))

    # -- class-level queries ----------------------------------------------------------------

    @classmethod
    def _pk_from_kwargs(cls, method: str, kwargs: dict[str, Any]) -> tuple[Any, ...]:
        schema = cls._schema
        allowed = set(schema.pk_names) | {schema.attnames[n] for n in schema.pk_names}
        extra = set(kwargs) - allowed
        if extra:
            raise TypeError(
                f"{cls.__name__}.{method}() takes only the primary key "
                f"({', '.join(schema.pk_names)}); {', '.join(sorted(extra))} are not filters"
            )
        return schema.normalize_pk(kwargs)

    @classmethod
    def create(cls, *, ttl: Any = NOTHING, **fields: Any) -> InsertQuery[Self]:
        """Build and store an instance (overwrites an existing row); awaits to the instance.

        Example::

            user = await User.create(id=1, name="Sam", height=1.78)
        """
        from ._query import InsertQuery

        return InsertQuery(cls, [cls(**fields)], ttl=ttl, single=True)

    @classmethod
    def insert(cls, *, ttl: Any = NOTHING, **fields: Any) -> InsertQuery[Self]:
        """A query that stores one row (overwrites); awaits to the instance.

        Example::

            user = await User.insert(id=2, name="Kim", height=1.6)
        """
        from ._query import InsertQuery

        return InsertQuery(cls, [cls(**fields)], ttl=ttl, single=True)

    @classmethod
    def insert_many(
        cls, *rows: Mapping[str, Any] | Model, ttl: Any = NOTHING, atomic: bool = False
    ) -> InsertQuery[list[Self]]:
        """A query that stores many rows (dicts or instances) in one batch.

        Example::

            users = await User.insert_many({"id": 1, "name": "a", "height": 1.0}, user2)
        """
        from ._query import InsertQuery

        instances = [_as_instance(cls, row) for row in rows]
        return InsertQuery(cls, instances, ttl=ttl, single=False, atomic=atomic)

    @classmethod
    def get(cls, *conditions: Condition, **pk: Any) -> SelectQuery[Self] | FilterResult[Self]:
        """The row with this primary key, or raises ``Model.DoesNotExist``.

        Other keywords (or conditions) are a filter that exactly one live row must match
        (else ``DoesNotExist`` or ``co.MultipleObjectsReturned``).

        Example::

            user = await User.get(id=1)
            sam = await User.get(email="sam@example.com")
        """
        from ._query import SelectQuery

        key = cls._key_lookup(conditions, pk)
        if key is None:
            return cls.filter(*conditions, **pk).get()
        return SelectQuery(cls, [key], mode="get")

    @classmethod
    def get_by_id(cls, pk: Any) -> SelectQuery[Self]:
        """Like `get`, with the primary key as a value (a tuple or dict when composite).

        Example::

            collection = await Collection.get_by_id((1, 2))
        """
        from ._query import SelectQuery

        return SelectQuery(cls, [cls._schema.normalize_pk(pk)], mode="get")

    @classmethod
    def get_or_none(
        cls, *conditions: Condition, **pk: Any
    ) -> SelectQuery[Self | None] | FilterResult[Self | None]:
        """The row with this primary key, or ``None``.

        Other keywords are a filter: the one matching row, ``None`` if none matches,
        ``co.MultipleObjectsReturned`` if several do.

        Example::

            user = await User.get_or_none(id=404)
        """
        from ._filter import FilterResult
        from ._query import SelectQuery

        key = cls._key_lookup(conditions, pk)
        if key is None:
            return FilterResult(cls.filter(*conditions, **pk), "get_or_none")
        return SelectQuery(cls, [key], mode="one")

    @classmethod
    def _key_lookup(cls, conditions: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The primary key when ``kwargs`` name exactly the primary key (a direct read),
        else None (a filter)."""
        if conditions or not kwargs:
            return None
        schema = cls._schema
        if set(kwargs) == {"pk"}:
            return schema.normalize_pk(kwargs["pk"])
        names = set(schema.pk_names) | {schema.attnames[n] for n in schema.pk_names}
        if not set(kwargs) <= names:
            return None
        try:
            return schema.normalize_pk(kwargs)
        except TypeError:
            return None

    @classmethod
    def query(cls, **pk: Any) -> SelectQuery[Self | None]:
        """A query for the row with this primary key; awaits to it or ``None``.

        Example::

            user = await User.query(id=1)
        """
        from ._query import SelectQuery

        return SelectQuery(cls, [cls._pk_from_kwargs("query", pk)], mode="one")

    @classmethod
    def query_many(cls, *pks: Any) -> SelectQuery[list[Self | None]]:
        """Rows in argument order (``None`` for a miss), in one multi-get.

        Example::

            users = await User.query_many(1, 2, 3)
        """
        from ._query import SelectQuery

        schema = cls._schema
        return SelectQuery(cls, [schema.normalize_pk(pk) for pk in pks], mode="many")

    @classmethod
    def get_or_create(
        cls, defaults: Mapping[str, Any] | None = None, *, ttl: Any = NOTHING, **pk: Any
    ) -> GetOrCreateQuery[tuple[Self, bool]]:
        """``(instance, created)``; an add-if-absent write, so two racers agree.

        Example::

            user, created = await User.get_or_create(id=1, defaults={"name": "Sam",
                                                                     "height": 1.7})
        """
        from ._query import GetOrCreateQuery

        pk_values = cls._pk_from_kwargs("get_or_create", pk)
        values = dict(zip(cls._schema.pk_names, pk_values, strict=True))
        for key in defaults or {}:
            if key in values:
                raise TypeError(f"{cls.__name__}.get_or_create(): {key!r} is given twice")
        values.update(defaults or {})
        return GetOrCreateQuery(cls, cls(**values), ttl=ttl)

    @classmethod
    def update(cls, *, ttl: Any = NOTHING, **fields: Any) -> UpdateQuery[Self | None]:
        """Change only the given fields of a stored row, atomically; keeps its TTL unless
        ``ttl=`` is given. Awaits to the updated instance, or ``None`` if there is no row.

        Example::

            user = await User.update(id=1, height=1.8)
            await User.update(id=1, visits=User.visits + 1)  # applied atomically
        """
        from ._query import UpdateQuery

        return UpdateQuery(cls, [cls._split_update(fields)], ttl=ttl, mode="one")

    @classmethod
    def update_many(
        cls, *rows: Mapping[str, Any] | Model, ttl: Any = NOTHING
    ) -> UpdateQuery[list[Self | None]]:
        """`update` for many rows (dicts with the pk, or instances: all their fields).

        Example::

            users = await User.update_many({"id": 1, "height": 1.8}, {"id": 2, "name": "K"})
        """
        from ._query import UpdateQuery

        changes = []
        for row in rows:
            if isinstance(row, Model):
                if not isinstance(row, cls):
                    raise TypeError(f"expected {cls.__name__} rows, not {type(row).__name__}")
                changes.append(cls._split_update(row.to_dict()))
            else:
                changes.append(cls._split_update(dict(row)))
        return UpdateQuery(cls, changes, ttl=ttl, mode="many")

    @classmethod
    def set_by_id(
        cls, pk: Any, values: Mapping[str, Any], *, ttl: Any = NOTHING
    ) -> UpdateQuery[Self]:
        """`update` by primary key value; raises ``DoesNotExist`` if there is no row.

        Example::

            user = await User.set_by_id(1, {"height": 1.8})
        """
        from ._query import UpdateQuery

        pk_values = cls._schema.normalize_pk(pk)
        changes = cls._check_changes(dict(values))
        return UpdateQuery(cls, [(pk_values, changes)], ttl=ttl, mode="get")

    @classmethod
    def _split_update(cls, fields: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        schema = cls._schema
        pk_part = {}
        for n in schema.pk_names:
            for k in (n, schema.attnames[n]):
                if k in fields:
                    pk_part[n] = fields.pop(k)
        if len(pk_part) != len(schema.pk_names):
            raise TypeError(
                f"{cls.__name__}.update() needs the primary key ({', '.join(schema.pk_names)})"
            )
        return schema.normalize_pk(pk_part), cls._check_changes(fields)

    @classmethod
    def _check_changes(cls, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate the new values of an update now, before anything is sent."""
        from ._fields import Expression

        schema = cls._schema
        by_attname = {a: n for n, a in schema.attnames.items()}
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            name = key if key in schema.fields else by_attname.get(key)
            if name is None:
                raise TypeError(f"{cls.__name__} has no field {key!r}")
            if name in schema.pk_names:
                raise TypeError(
                    f"{cls.__name__}.{name} is part of the primary key; it cannot "
                    "be updated (write a new row and delete the old one)"
                )
            if isinstance(value, Expression):
                if value.field is not schema.fields[name]:
                    raise TypeError(f"{cls.__name__}.{name}: the expression is on {value.field!r}")
                clean[name] = value
            else:
                probe = cls.__new__(cls)
                setattr(probe, key, value)
                clean[name] = value
        return clean

    @classmethod
    def delete(cls, **pk: Any) -> DeleteQuery[bool]:
        """A query that deletes a row; awaits to ``True`` if it was there.

        Example::

            deleted = await User.delete(id=1)
        """
        from ._query import DeleteQuery

        return DeleteQuery(cls, [cls._pk_from_kwargs("delete", pk)], mode="one")

    @classmethod
    def delete_by_id(cls, pk: Any) -> DeleteQuery[bool]:
        """Delete by primary key value; ``True``, or raises ``DoesNotExist``.

        Example::

            await User.delete_by_id(1)
        """
        from ._query import DeleteQuery

        return DeleteQuery(cls, [cls._schema.normalize_pk(pk)], mode="get")

    @classmethod
    def delete_many(cls, *pks: Any) -> DeleteQuery[int]:
        """Delete many rows in one batch; awaits to the number deleted.

        Example::

            n = await User.delete_many(1, 2, 3)
        """
        from ._query import DeleteQuery

        schema = cls._schema
        return DeleteQuery(cls, [schema.normalize_pk(pk) for pk in pks], mode="many")

    # -- instance queries -------------------------------------------------------------------

    def save(self, force_insert: bool = False, *, ttl: Any = NOTHING) -> Query[Self]:
        """Write this instance. Without ``force_insert`` the row must exist (else
        ``DoesNotExist``); with it, the row is written whether or not it exists.

        Example::

            user.height = 1.9
            await user.save()
        """
        from ._auto import auto_field
        from ._query import InsertQuery

        self._check_not_sparse("save")
        auto = auto_field(self._schema)
        if auto is not None and self.__dict__.get(auto.name) is None:
            force_insert = True  # a new row: its id comes from the counter
        return InsertQuery(type(self), [self], ttl=ttl, single=True, replace=not force_insert)

    def delete_instance(self) -> DeleteQuery[bool]:
        """Delete this instance's row; awaits to ``True`` if it was there.

        Example::

            await user.delete_instance()
        """
        from ._query import DeleteQuery

        cls = type(self)
        return DeleteQuery(cls, [cls._schema.pk_values(self)], mode="one", instances=[self])

    def refresh(self) -> Query[Self]:
        """Reload every field from the backend, in place; ``DoesNotExist`` if it is gone.

        Example::

            await user.refresh()
        """
        from ._query import LoadQuery

        return LoadQuery(self)

    def load(self) -> Query[Self]:
        """Fill a sparse instance (an unloaded foreign key) in place; awaits to itself.

        Example::

            author = await article.author.load()
        """
        from ._query import LoadQuery

        return LoadQuery(self)

    # -- queries by field ---------------------------------------------------------------

    @classmethod
    def filter(cls, *conditions: Condition, **lookups: Any) -> FilterQuery[Self]:
        """A query for the rows matching every lookup (``age__gte=18``, ``name="Sam"``,
        ``team__name="red"``, ``User.age > 3``); awaits to a list.

        Example::

            adults = await User.filter(age__gte=18).order_by("name")
        """
        from ._filter import FilterQuery

        return FilterQuery(cls).filter(*conditions, **lookups)

    @classmethod
    def exclude(cls, *conditions: Condition, **lookups: Any) -> FilterQuery[Self]:
        """A query for the rows that do not match all of these lookups.

        Example::

            humans = await User.exclude(name__endswith="bot")
        """
        from ._filter import FilterQuery

        return FilterQuery(cls).exclude(*conditions, **lookups)

    @classmethod
    def all(cls) -> FilterQuery[Self]:
        """A query for every live row.

        Example::

            users = await User.all()
        """
        from ._filter import FilterQuery

        return FilterQuery(cls)

    @classmethod
    def count(cls, *conditions: Condition, **lookups: Any) -> FilterResult[int]:
        """A query for the number of live rows matching these lookups.

        Example::

            n = await User.count(age__gte=18)
        """
        return cls.filter(*conditions, **lookups).count()

    @classmethod
    def first(cls, *conditions: Condition, **lookups: Any) -> FilterResult[Self | None]:
        """A query for the first matching row by primary key, or ``None``.

        Example::

            coat = await Product.first(name="Coat")
        """
        return cls.filter(*conditions, **lookups).first()

    @classmethod
    def order_by(cls, *names: str) -> FilterQuery[Self]:
        """A query for every row, in this order.

        Example::

            tallest = await User.order_by("-height").limit(3)
        """
        return cls.all().order_by(*names)

    @classmethod
    def limit(cls, n: int) -> FilterQuery[Self]:
        """A query for at most ``n`` rows (by primary key).

        Example::

            some = await User.limit(10)
        """
        return cls.all().limit(n)

    @classmethod
    def offset(cls, n: int) -> FilterQuery[Self]:
        """A query for the rows after the first ``n`` (by primary key).

        Example::

            rest = await User.offset(10)
        """
        return cls.all().offset(n)

    @classmethod
    def update_or_create(
        cls, defaults: Mapping[str, Any] | None = None, *, ttl: Any = NOTHING, **lookups: Any
    ) -> UpdateOrCreateQuery[tuple[Self, bool]]:
        """``(instance, created)``: the one row matching ``lookups`` updated with
        ``defaults`` (atomically), or a new row made of the lookups' values and
        ``defaults``.

        Example::

            user, created = await User.update_or_create(
                email="sam@example.com", defaults={"name": "Sam"}
            )
        """
        from ._filter import UpdateOrCreateQuery

        defaults = dict(defaults or {})
        query = cls.filter(**lookups)
        changes = cls._check_changes(dict(defaults)) if defaults else {}
        schema = cls._schema
        by_attname = {a: n for n, a in schema.attnames.items()}
        values: dict[str, Any] = {}
        for key, value in lookups.items():
            if "__" in key and not key.endswith("__exact"):
                continue
            name = key.removesuffix("__exact")
            if name == "pk":
                pk = schema.normalize_pk(value)
                values.update(zip(schema.pk_names, pk, strict=True))
            elif name in schema.fields or name in by_attname:
                values[name] = value
        for key in defaults:
            if key in values:
                raise TypeError(f"{cls.__name__}.update_or_create(): {key!r} is given twice")
        values.update(defaults)
        return UpdateOrCreateQuery(cls, query, changes, values, ttl)

    def _check_not_sparse(self, what: str) -> None:
        if self.__dict__.get("_sparse_"):
            raise TypeError(
                f"cannot {what} a sparse {type(self).__name__} (only its primary key "
                "is known); load() it first"
            )

    @classmethod
    def _sparse(cls, pk: tuple[Any, ...], state: str = "sparse") -> Self:
        schema = cls._schema
        obj = cls.__new__(cls)
        d = obj.__dict__
        for n, v in zip(schema.pk_names, pk, strict=True):
            d[schema.attnames[n]] = v
        d["_sparse_"] = state
        return obj


def _as_instance(cls: type[Model], row: Mapping[str, Any] | Model) -> Model:
    if isinstance(row, Model):
        if type(row)._schema is not cls._schema:
            raise TypeError(f"expected {cls.__name__} rows, not {type(row).__name__}")
        row._check_not_sparse("insert")
        return row
    if isinstance(row, Mapping):
        return cls(**row)
    raise TypeError(f"a row is a dict or a {cls.__name__}, not {type(row).__name__}")
