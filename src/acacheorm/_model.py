"""Model: instances and the query entry points (the declaring machinery is in _declare)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Never, Self

from ._auto import auto_field
from ._base import ModelBase, State, state_of
from ._declare import (
    ModelMeta,
    _AbstractSchema,
    _check_conditions,
    _expand_pk,
    _positional_error,
)
from ._display import instances_html
from ._exceptions import DoesNotExist, ValidationError
from ._fields import Expression
from ._filter import FilterQuery, FilterResult, UpdateOrCreateQuery, _conditions
from ._pydantic import pydantic_model
from ._query import (
    DeleteQuery,
    GetOrCreateQuery,
    InsertQuery,
    LoadQuery,
    Query,
    RemainingTTLQuery,
    SelectQuery,
    TouchQuery,
    UpdateQuery,
)
from ._schema import Schema
from ._types import NOTHING, collector_paused

if TYPE_CHECKING:
    from ._lookups import Condition


class _TouchMethod:
    """``touch``: ``Model.touch(ttl=, **pk)`` on the class, ``obj.touch(ttl=)`` on an
    instance (the instance's primary key)."""

    def __get__(
        self, instance: Model | None, owner: type[Model]
    ) -> Callable[..., TouchQuery[bool]]:
        def touch(*args: Any, ttl: Any = NOTHING, **pk: Any) -> TouchQuery[bool]:
            """Set the row's remaining lifetime (``ttl=None``: never expires; default: the
            model's ``Meta.ttl``) in one round trip; awaits to whether the row exists.

            Example::

                assert await Session.touch(id=sid, ttl=1800)   # sliding expiry
                await session.touch(ttl=1800)
            """
            if args:
                raise _positional_error(owner, "touch", args)
            if instance is not None:
                if pk:
                    raise TypeError(
                        f"{owner.__name__}.touch() on an instance takes only ttl=, "
                        f"not {', '.join(sorted(pk))}"
                    )
                return TouchQuery(owner, owner._schema.pk_values(instance), ttl=ttl)
            return TouchQuery(owner, owner._pk_from_kwargs("touch", pk), ttl=ttl)

        touch.__qualname__ = f"{owner.__name__}.touch"
        return touch


class Model(ModelBase, metaclass=ModelMeta):
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
    _settable: ClassVar[frozenset[str]] = frozenset()
    DoesNotExist: ClassVar[type[DoesNotExist]]

    def __init__(self, **kwargs: Any) -> None:
        schema = self._schema
        if "pk" in kwargs:
            kwargs = _expand_pk(schema, kwargs, f"{type(self).__name__}()")
        fields = schema.fields
        attnames = schema.attnames
        unknown = [k for k in kwargs if k not in fields and k not in schema.attnames_set]
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s): "
                f"{', '.join(repr(k) for k in unknown)} (fields: {', '.join(fields)})"
            )
        d = self.__dict__
        for name, field in fields.items():
            attname = attnames[name]
            if name in kwargs:
                field.__set__(self, kwargs[name])
            elif attname in kwargs:
                field.__set__(self, kwargs[attname])
            elif field.has_default():
                d[attname] = field.clean(field.get_default())
            else:
                raise ValidationError("a value is required", model=type(self).__name__, field=name)

    if not TYPE_CHECKING:  # a type checker keeps reporting unknown attributes itself

        def __setattr__(self, name: str, value: Any) -> None:
            if name in type(self)._settable:
                object.__setattr__(self, name, value)
                return
            if name[:1] == "_" or hasattr(type(self), name):
                object.__setattr__(self, name, value)  # private state, a property, ...
                return
            raise AttributeError(
                f"{type(self).__name__} has no field {name!r} (fields: "
                f"{', '.join(self._schema.fields)}); nothing else is stored"
            )

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
        return state_of(self) is not State.LOADED

    def to_dict(self, mode: str = "python") -> dict[str, Any]:
        """The field values by field name (a foreign key gives the related primary key).

        ``mode="python"`` (the default) gives the Python values; ``mode="json"`` gives what
        `json.dumps` accepts: UUIDs, datetimes, dates, times and decimals as text (ISO 8601
        for times), bytes as base64, enums by value, lists item by item. `from_dict` takes
        either form back.

        Example::

            body = json.dumps(user.to_dict(mode="json"))
            assert User.from_dict(json.loads(body)) == user
        """
        schema = self._schema
        d = self.__dict__
        names = schema.pk_names if self.is_sparse else tuple(schema.attnames)
        if mode == "python":
            return {n: d[schema.attnames[n]] for n in names}
        if mode != "json":
            raise ValueError(
                f"{type(self).__name__}.to_dict(): mode is 'python' or 'json', not {mode!r}"
            )
        fields = schema.fields
        out: dict[str, Any] = {}
        for n in names:
            value = d[schema.attnames[n]]
            out[n] = None if value is None else fields[n].to_json(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build an (unsaved) instance from a dict of field values; validated.

        Takes the Python values, or the JSON form of `to_dict` (``mode="json"``: ISO text
        for datetimes, base64 for bytes, ...), field by field.

        Example::

            user = User.from_dict({"id": 1, "name": "Sam", "height": 1.8})
            same = User.from_dict(json.loads(json.dumps(user.to_dict(mode="json"))))
        """
        if not isinstance(data, Mapping):
            raise TypeError(
                f"{cls.__name__}.from_dict() takes a mapping, not {type(data).__name__}"
            )
        schema = cls._schema
        by_attname = {a: n for n, a in schema.attnames.items()}
        values: dict[str, Any] = {}
        for key, value in data.items():
            name = key if key in schema.fields else by_attname.get(key)
            if name is None or value is None:
                values[key] = value  # unknown keys are refused by the constructor
                continue
            field = schema.fields[name]
            try:
                field.clean(value)  # the Python form
            except Exception as exc:
                try:
                    value = field.from_json(value)
                except Exception:
                    raise exc from None
            values[key] = value
        return cls(**values)

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
        return pydantic_model(cls, name=name, exclude=tuple(exclude), partial=partial)

    def __repr__(self) -> str:
        schema = self._schema
        d = self.__dict__
        pk = ", ".join(f"{n}={d.get(schema.attnames[n])!r}" for n in schema.pk_names)
        state = state_of(self)
        if state is not State.LOADED:
            return f"<{type(self).__name__} {pk} [{state.value}]>"
        rest = ", ".join(
            f"{n}={d.get(a)!r}" for n, a in schema.attnames.items() if n not in schema.pk_names
        )
        return f"<{type(self).__name__} {pk}{': ' + rest if rest else ''}>"

    def _repr_html_(self) -> str:
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
        if "pk" in kwargs:
            if len(kwargs) == 1:
                return schema.normalize_pk(kwargs["pk"])
            kwargs = _expand_pk(schema, kwargs, f"{cls.__name__}.{method}()")
        allowed = set(schema.pk_names) | {schema.attnames[n] for n in schema.pk_names}
        extra = set(kwargs) - allowed
        if extra:
            raise TypeError(
                f"{cls.__name__}.{method}() takes only the primary key "
                f"({', '.join(schema.pk_names)}, or pk=); {', '.join(sorted(extra))} are not "
                "filters"
            )
        return schema.normalize_pk(kwargs)

    @classmethod
    def create(cls, *, ttl: Any = NOTHING, **fields: Any) -> InsertQuery[Self]:
        """Build and store an instance (overwrites an existing row); awaits to the instance.

        Example::

            user = await User.create(id=1, name="Sam", height=1.78)
        """
        return InsertQuery(cls, [cls(**fields)], ttl=ttl, single=True)

    @classmethod
    def insert(cls, *, ttl: Any = NOTHING, **fields: Any) -> InsertQuery[Self]:
        """A query that stores one row (overwrites); awaits to the instance.

        Example::

            user = await User.insert(id=2, name="Kim", height=1.6)
        """
        return InsertQuery(cls, [cls(**fields)], ttl=ttl, single=True)

    @classmethod
    def insert_many(
        cls, *rows: Mapping[str, Any] | Model, ttl: Any = NOTHING, atomic: bool = False
    ) -> InsertQuery[list[Self]]:
        """A query that stores many rows (dicts or instances) in one batch.

        Example::

            users = await User.insert_many({"id": 1, "name": "a", "height": 1.0}, user2)
        """
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
        _check_conditions(cls, "get", conditions)
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
        schema = cls._schema
        if type(pk) is int and schema._pk_fast_type is int and not schema.composite:
            return SelectQuery(cls, [(pk,)], "get")  # `normalize_pk`'s first case, inline
        return SelectQuery(cls, [schema.normalize_pk(pk)], "get")  # no keyword: no dict

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
        _check_conditions(cls, "get_or_none", conditions)
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
    def query(cls, *args: Never, **pk: Any) -> SelectQuery[Self | None]:
        """A query for the row with this primary key; awaits to it or ``None``.

        Example::

            user = await User.query(id=1)
        """
        if args:
            raise _positional_error(cls, "query", args)
        return SelectQuery(cls, [cls._pk_from_kwargs("query", pk)], mode="one")

    @classmethod
    def query_many(cls, *pks: Any) -> SelectQuery[list[Self | None]]:
        """Rows in argument order (``None`` for a miss), in one multi-get.

        Example::

            users = await User.query_many(1, 2, 3)
        """
        # (pauses the collector for a large one: each key is a tuple, see collector_paused)
        return SelectQuery(cls, collector_paused(len(pks), cls._schema.normalize_pks, pks), "many")

    @classmethod
    def get_or_create(
        cls,
        defaults: Mapping[str, Any] | None = None,
        *args: Never,
        ttl: Any = NOTHING,
        **pk: Any,
    ) -> GetOrCreateQuery[tuple[Self, bool]]:
        """``(instance, created)``; an add-if-absent write, so two racers agree.

        Example::

            user, created = await User.get_or_create(id=1, defaults={"name": "Sam",
                                                                     "height": 1.7})
        """
        if args or (defaults is not None and not isinstance(defaults, Mapping)):
            given = args if defaults is None or isinstance(defaults, Mapping) else (defaults, *args)
            raise _positional_error(cls, "get_or_create", given)
        pk_values = cls._pk_from_kwargs("get_or_create", pk)
        values = dict(zip(cls._schema.pk_names, pk_values, strict=True))
        for key in defaults or {}:
            if key in values:
                raise TypeError(f"{cls.__name__}.get_or_create(): {key!r} is given twice")
        values.update(defaults or {})
        return GetOrCreateQuery(cls, cls(**values), ttl=ttl)

    @classmethod
    def update(cls, *args: Never, ttl: Any = NOTHING, **fields: Any) -> UpdateQuery[Self | None]:
        """Change only the given fields of a stored row, atomically; keeps its TTL unless
        ``ttl=`` is given. Awaits to the updated instance, or ``None`` if there is no row.

        Example::

            user = await User.update(id=1, height=1.8)
            await User.update(id=1, visits=User.visits + 1)  # applied atomically
        """
        if args:
            raise _positional_error(cls, "update", args)
        return UpdateQuery(cls, [cls._split_update(fields)], ttl=ttl, mode="one")

    @classmethod
    def update_many(
        cls, *rows: Mapping[str, Any] | Model, ttl: Any = NOTHING
    ) -> UpdateQuery[list[Self | None]]:
        """`update` for many rows (dicts with the pk, or instances: all their fields).

        Example::

            users = await User.update_many({"id": 1, "height": 1.8}, {"id": 2, "name": "K"})
        """
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
        pk_values = cls._schema.normalize_pk(pk)
        changes = cls._check_changes(dict(values))
        return UpdateQuery(cls, [(pk_values, changes)], ttl=ttl, mode="get")

    @classmethod
    def _split_update(cls, fields: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        schema = cls._schema
        if "pk" in fields:
            fields = _expand_pk(schema, fields, f"{cls.__name__}.update()")
        fast = schema._pk_fast_type
        if fast is not None:  # one pk field given by its name, of its plain type
            name = schema.pk_names[0]
            value = fields.get(name)
            attname = schema.attnames[name]
            if (
                type(value) is fast
                and (attname == name or attname not in fields)
                and (not isinstance(value, str) or value.isascii())
            ):
                del fields[name]
                return (value,), cls._check_changes(fields)
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
        schema = cls._schema
        fields = schema.fields
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            if key in fields:
                name: str | None = key
            else:
                name = next((n for n, a in schema.attnames.items() if a == key), None)
            if name is None:
                raise TypeError(f"{cls.__name__} has no field {key!r}")
            if name in schema.pk_names:
                raise TypeError(
                    f"{cls.__name__}.{name} is part of the primary key; it cannot "
                    "be updated (write a new row and delete the old one)"
                )
            if isinstance(value, Expression):
                if value.field is not schema.fields[name]:
                    other = value.field
                    where = getattr(other, "model", None)
                    on = f"{where.__name__}.{other.name}" if where is not None else repr(other)
                    raise TypeError(
                        f"{cls.__name__}.update({key}={value!r}): the expression is on {on}, "
                        f"not on {cls.__name__}.{name}"
                    )
                clean[name] = value
            else:
                probe = cls.__new__(cls)
                setattr(probe, key, value)
                clean[name] = value
        return clean

    @classmethod
    def delete(cls, *args: Never, **pk: Any) -> DeleteQuery[bool]:
        """A query that deletes a row; awaits to ``True`` if it was there.

        Example::

            deleted = await User.delete(id=1)
        """
        if args:
            raise _positional_error(cls, "delete", args)
        return DeleteQuery(cls, [cls._pk_from_kwargs("delete", pk)], mode="one")

    @classmethod
    def delete_by_id(cls, pk: Any) -> DeleteQuery[bool]:
        """Delete by primary key value; ``True``, or raises ``DoesNotExist``.

        Example::

            await User.delete_by_id(1)
        """
        return DeleteQuery(cls, [cls._schema.normalize_pk(pk)], mode="get")

    @classmethod
    def delete_many(cls, *pks: Any) -> DeleteQuery[int]:
        """Delete many rows in one batch; awaits to the number deleted.

        Example::

            n = await User.delete_many(1, 2, 3)
        """
        schema = cls._schema
        return DeleteQuery(cls, [schema.normalize_pk(pk) for pk in pks], mode="many")

    touch = _TouchMethod()
    """``Model.touch(ttl=, **pk)`` / ``obj.touch(ttl=)``: set the row's remaining lifetime
    (``ttl=None``: never expires; without ``ttl=``: the model's ``Meta.ttl``) in one round
    trip, without reading or rewriting the row. Awaits to whether the row exists (a missing
    row is not created).

    Example::

        assert await Session.touch(id=sid, ttl=1800)   # sliding expiry
        await session.touch(ttl=1800)
    """

    @classmethod
    def remaining_ttl(cls, *args: Never, **pk: Any) -> RemainingTTLQuery[float | None]:
        """Seconds left before the row expires (a float), ``None`` for a row that never
        expires; raises ``Model.DoesNotExist`` for a missing row. One round trip.

        Example::

            left = await Session.remaining_ttl(id=sid)
        """
        if args:
            raise _positional_error(cls, "remaining_ttl", args)
        return RemainingTTLQuery(cls, cls._pk_from_kwargs("remaining_ttl", pk))

    # -- instance queries -------------------------------------------------------------------

    def save(self, force_insert: bool = False, *, ttl: Any = NOTHING) -> Query[Self]:
        """Write this instance. Without ``force_insert`` the row must exist (else
        ``DoesNotExist``); with it, the row is written whether or not it exists.

        Example::

            user.height = 1.9
            await user.save()
        """
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
        cls = type(self)
        return DeleteQuery(cls, [cls._schema.pk_values(self)], mode="one", instances=[self])

    def refresh(self) -> Query[Self]:
        """Reload every field from the backend, in place; ``DoesNotExist`` if it is gone.

        Example::

            await user.refresh()
        """
        return LoadQuery(self)

    def load(self) -> Query[Self]:
        """Fill a sparse instance (an unloaded foreign key) in place; awaits to itself.

        Example::

            author = await article.author.load()
        """
        return LoadQuery(self)

    # -- queries by field ---------------------------------------------------------------

    @classmethod
    def filter(cls, *conditions: Condition, **lookups: Any) -> FilterQuery[Self]:
        """A query for the rows matching every lookup (``age__gte=18``, ``name="Sam"``,
        ``team__name="red"``, ``User.age > 3``); awaits to a list.

        Example::

            adults = await User.filter(age__gte=18).order_by("name")
        """
        return FilterQuery(cls, _conditions(cls, conditions, lookups))

    @classmethod
    def exclude(cls, *conditions: Condition, **lookups: Any) -> FilterQuery[Self]:
        """A query for the rows that do not match all of these lookups.

        Example::

            humans = await User.exclude(name__endswith="bot")
        """
        return FilterQuery(cls).exclude(*conditions, **lookups)

    @classmethod
    def all(cls) -> FilterQuery[Self]:
        """A query for every live row.

        Example::

            users = await User.all()
        """
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
        if self.is_sparse:
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
        obj._state_ = State(state)
        return obj


setattr(Model, "_schema", _AbstractSchema())  # noqa: B010 - the base class is abstract


def _as_instance(cls: type[Model], row: Mapping[str, Any] | Model) -> Model:
    if isinstance(row, Model):
        if type(row)._schema is not cls._schema:
            raise TypeError(f"expected {cls.__name__} rows, not {type(row).__name__}")
        row._check_not_sparse("insert")
        return row
    if isinstance(row, Mapping):
        return cls(**row)
    raise TypeError(f"a row is a dict or a {cls.__name__}, not {type(row).__name__}")
