"""Conditions of queries by field: lookups parsed and checked before any I/O.

``User.filter(age__gte=18, team__name="red")`` becomes an `And` of `Lookup` leaves and
`Related` leaves; a `Related` leaf runs its own query on the related model first and is then
replaced by an ``in`` lookup on the foreign key's raw value. Every value is checked against
its field here, so a bad filter fails when it is built, never half-way through a query.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._base import Model
from ._exceptions import ValidationError
from ._fields import Field
from ._fields_scalar import StringField
from ._fields_struct import JSONField, ListField, StructField
from ._relations import ForeignKeyField

STRING_LOOKUPS = frozenset(
    {"iexact", "contains", "icontains", "startswith", "istartswith", "endswith", "iendswith"}
)
ORDER_LOOKUPS = frozenset({"lt", "lte", "gt", "gte", "range"})
LOOKUPS = frozenset({"exact", "in", "isnull"}) | STRING_LOOKUPS | ORDER_LOOKUPS
#: Fields whose values have no meaningful order (``lt``/``gt``/``range``/``order_by``).
UNORDERED = (JSONField, ListField, StructField)

_SYMBOLS = {"exact": "==", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_BOUNDS = (
    "min_value",
    "max_value",
    "min_length",
    "max_length",
    "max_items",
    "max_digits",
    "decimal_places",
)


class Condition:
    """A condition on the rows of a model, for `Model.filter`/`exclude`.

    Built from keyword lookups (``age__gte=18``) or from comparisons of a model's fields
    (``User.age >= 18``, ``User.name == "Sam"``). A condition is not a bool: use it in a
    filter.

    Example::

        adults = await User.filter(User.age >= 18, User.team != None)
    """

    def matches(self, obj: Model) -> bool:
        """Whether the row ``obj`` satisfies the condition (related conditions resolved)."""
        raise NotImplementedError

    def describe(self) -> str:
        """The condition in words, for ``explain()``."""
        raise NotImplementedError

    def __bool__(self) -> bool:
        raise TypeError(
            f"{self.describe()} is a query condition, not a bool: pass it to filter()/exclude()"
        )

    def __repr__(self) -> str:
        return f"<Condition {self.describe()}>"


class Lookup(Condition):
    """One lookup on one field of a model: ``value_of(row) <lookup> value``."""

    def __init__(
        self,
        model: type[Model],
        name: str,
        lookup: str,
        value: Any,
        getter: Callable[[Model], Any],
        sort_key: Callable[[Any], Any],
        attname: str | None = None,
    ) -> None:
        self.model = model
        self.name = name
        self.lookup = lookup
        self.value = value
        self.getter = getter
        self.sort_key = sort_key
        self._test = self._compile()
        if lookup == "exact" and attname is not None:
            # the row re-check of an equality, in one call per row (a filter's hot loop)
            def matches(obj: Any) -> bool:
                v = obj.__dict__[attname]
                return v is not None and v == value

            self.matches = matches  # type: ignore[method-assign]

    def _compile(self) -> Callable[[Any], bool]:
        lookup, value, key = self.lookup, self.value, self.sort_key
        if lookup == "exact":
            return lambda v: v is not None and v == value
        if lookup == "isnull":
            return (lambda v: v is None) if value else (lambda v: v is not None)
        if lookup == "in":
            if isinstance(value, tuple):  # unhashable values: compared one by one
                return lambda v: v is not None and any(v == x for x in value)

            def member(v: Any) -> bool:
                if v is None:
                    return False
                try:
                    return v in value
                except TypeError:  # an unhashable stored value (a JSON object)
                    return any(v == x for x in value)

            return member
        if lookup in STRING_LOOKUPS:
            folded = value.casefold()
            test: Callable[[str], bool] = {
                "iexact": lambda s: s.casefold() == folded,
                "contains": lambda s: value in s,
                "icontains": lambda s: folded in s.casefold(),
                "startswith": lambda s: s.startswith(value),
                "istartswith": lambda s: s.casefold().startswith(folded),
                "endswith": lambda s: s.endswith(value),
                "iendswith": lambda s: s.casefold().endswith(folded),
            }[lookup]
            return lambda v: v is not None and test(v)
        if lookup == "range":
            lo, hi = key(value[0]), key(value[1])
            return lambda v: v is not None and lo <= key(v) <= hi
        bound = key(value)
        compare: Callable[[Any], bool] = {
            "lt": lambda k: k < bound,
            "lte": lambda k: k <= bound,
            "gt": lambda k: k > bound,
            "gte": lambda k: k >= bound,
        }[lookup]
        return lambda v: v is not None and compare(key(v))

    def matches(self, obj: Model) -> bool:
        return self._test(self.getter(obj))

    def describe(self) -> str:
        symbol = _SYMBOLS.get(self.lookup)
        value = self.value
        if isinstance(value, frozenset | tuple) and self.lookup == "in":
            shown = sorted(map(repr, value))
            value_text = "{" + ", ".join(shown[:5]) + (", ..." if len(shown) > 5 else "") + "}"
        else:
            value_text = repr(value)
        if symbol:
            return f"{self.name} {symbol} {value_text}"
        return f"{self.name} {self.lookup} {value_text}"


class Related(Condition):
    """A condition on the row a foreign key points at: its own query runs first."""

    def __init__(self, model: type[Model], field: ForeignKeyField[Any], inner: Condition) -> None:
        self.model = model
        self.field = field
        self.inner = inner

    def matches(self, obj: Model) -> bool:
        raise RuntimeError("a related condition is resolved before rows are read")

    def describe(self) -> str:
        return f"{self.field.name} -> {self.field.rel_model.__name__}({self.inner.describe()})"


class And(Condition):
    """Every part holds (several keywords of one ``filter``, or chained filters)."""

    def __init__(self, parts: tuple[Condition, ...]) -> None:
        self.parts = parts

    def matches(self, obj: Model) -> bool:
        return all(p.matches(obj) for p in self.parts)

    def describe(self) -> str:
        if not self.parts:
            return "every row"
        if len(self.parts) == 1:
            return self.parts[0].describe()
        return " AND ".join(
            f"({p.describe()})" if isinstance(p, And | Not) else p.describe() for p in self.parts
        )


class Not(Condition):
    """The inner condition does not hold (``exclude``)."""

    def __init__(self, inner: Condition) -> None:
        self.inner = inner

    def matches(self, obj: Model) -> bool:
        return not self.inner.matches(obj)

    def describe(self) -> str:
        return f"NOT ({self.inner.describe()})"


def _value_key(field: Field[Any]) -> Callable[[Any], Any]:
    """How values of ``field`` compare and sort (enum members by their value)."""
    from ._fields_scalar import EnumField

    if isinstance(field, EnumField):
        return lambda v: v.value if isinstance(v, enum.Enum) else v
    return lambda v: v


def _unbounded(field: Field[Any]) -> Field[Any]:
    """The field without its bounds: a lookup value is checked for its type, not against
    ``max_length``/``min_value``/... (``age__gt=200`` is a valid question)."""
    if not any(getattr(field, b, None) is not None for b in _BOUNDS):
        return field
    copy = object.__new__(type(field))
    copy.__dict__.update(field.__dict__)
    for b in _BOUNDS:
        if getattr(copy, b, None) is not None:
            setattr(copy, b, None)
    return copy


def _field_kind(field: Field[Any]) -> str:
    return type(field).__name__


class _Target:
    """What a lookup reads from a row: one field, or a model's (composite) primary key."""

    def __init__(self, model: type[Model], name: str) -> None:
        schema = model._schema
        self.model = model
        self.name = name
        if name == "pk" and schema.composite:
            self.field: Field[Any] | None = None
            self.getter: Callable[[Model], Any] = schema.pk_values
            self.sort_key: Callable[[Any], Any] = lambda v: v
            self.attname: str | None = None
            return
        field = schema.pk_fields[0] if name == "pk" else schema.fields[name]
        attname = schema.attnames[field.name]
        self.field = field
        self.attname = attname
        self.getter = lambda obj: obj.__dict__[attname]
        self.sort_key = _value_key(field)

    def where(self) -> str:
        return f"{self.model.__name__}.{self.name}"

    def clean(self, value: Any, key: str) -> Any:
        schema = self.model._schema
        if self.field is None:
            return schema.normalize_pk(value)
        try:
            return _unbounded(self.field).clean(value)
        except ValidationError as exc:
            text = str(exc)
            prefix = f"{exc.model}.{exc.field}: "
            if text.startswith(prefix):
                text = text[len(prefix) :]
            raise ValidationError(
                f"{text} (in filter {key!r})",
                model=self.model.__name__,
                field=self.name,
                value=value,
            ) from None


def build_lookup(target: _Target, lookup: str, value: Any, key: str) -> Condition:
    """A `Lookup` with its value checked against the field."""
    where = target.where()
    field = target.field
    if lookup not in LOOKUPS:
        raise TypeError(
            f"{where}: unknown lookup {lookup!r} in filter {key!r} "
            f"(lookups: {', '.join(sorted(LOOKUPS))})"
        )
    if field is None and lookup not in ("exact", "in"):
        raise TypeError(
            f"{where}: the composite primary key takes only 'exact' and 'in' "
            f"lookups, not {lookup!r} (filter {key!r})"
        )
    if lookup in STRING_LOOKUPS and not isinstance(field, StringField):
        raise TypeError(
            f"{where}: lookup {lookup!r} works on string fields, not on a "
            f"{_field_kind(field) if field else 'primary key'} (filter {key!r})"
        )
    if lookup in ORDER_LOOKUPS and isinstance(field, UNORDERED):
        raise TypeError(
            f"{where}: lookup {lookup!r} needs ordered values; a {_field_kind(field)} "
            f"has none (filter {key!r})"
        )

    def lk(name: str, v: Any) -> Lookup:
        return Lookup(
            target.model, target.name, name, v, target.getter, target.sort_key, target.attname
        )

    if lookup == "isnull":
        if not isinstance(value, bool):
            raise TypeError(f"{where}: isnull takes True or False, not {value!r} (filter {key!r})")
        return lk("isnull", value)
    if lookup == "in":
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
            raise TypeError(
                f"{where}: 'in' takes an iterable of values (a list, set, tuple), "
                f"not {value!r} (filter {key!r})"
            )
        cleaned = [None if v is None else target.clean(v, key) for v in value]
        try:
            return lk("in", frozenset(cleaned))
        except TypeError:  # unhashable values (lists, dicts): compared one by one
            return lk("in", tuple(cleaned))
    if lookup == "range":
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise TypeError(
                f"{where}: 'range' takes a (low, high) pair, not {value!r} (filter {key!r})"
            )
        if value[0] is None or value[1] is None:
            raise TypeError(f"{where}: 'range' bounds cannot be None (filter {key!r})")
        return lk("range", (target.clean(value[0], key), target.clean(value[1], key)))
    if value is None:
        if lookup == "exact":
            return lk("isnull", True)
        raise TypeError(
            f"{where}: lookup {lookup!r} cannot compare with None; use "
            f"{target.name}__isnull=True (filter {key!r})"
        )
    if lookup in STRING_LOOKUPS:
        if not isinstance(value, str):
            raise TypeError(
                f"{where}: lookup {lookup!r} takes a str, not {type(value).__name__} "
                f"(filter {key!r})"
            )
        return lk(lookup, value)
    return lk(lookup, target.clean(value, key))


def parse_lookup(model: type[Model], key: str, value: Any) -> Condition:
    """The condition for one keyword of ``filter(**kw)``: ``name``, ``name__lookup``,
    ``fk__field...`` (across foreign keys), ``pk``, ``fk_id``."""
    if not isinstance(key, str) or not key:
        raise TypeError(f"{model.__name__}: bad filter keyword {key!r}")
    return _parse(model, key.split("__"), value, key)


def _fields_list(model: type[Model]) -> str:
    return ", ".join(["pk", *model._schema.fields])


def _parse(model: type[Model], parts: list[str], value: Any, key: str) -> Condition:
    schema = model._schema
    name, rest = parts[0], parts[1:]
    raw = False
    if name == "pk":
        target = _Target(model, "pk")
    elif name in schema.fields:
        target = _Target(model, name)
    elif name in (by_attname := {a: n for n, a in schema.attnames.items() if a != n}):
        target = _Target(model, by_attname[name])
        target.name = name
        raw = True
    else:
        raise TypeError(
            f"{model.__name__} has no field {name!r} (in filter {key!r}; fields: "
            f"{_fields_list(model)})"
        )
    field = target.field
    if isinstance(field, ForeignKeyField) and rest and not raw:
        rel = field.rel_model
        rel_schema = rel._schema
        nxt = rest[0]
        rel_attnames = {a for n, a in rel_schema.attnames.items() if a != n}
        if nxt == "pk" or nxt in rel_schema.fields or nxt in rel_attnames:
            # The related primary key is the foreign key's own value: no query needed.
            is_pk = nxt == "pk" or (not rel_schema.composite and nxt == rel_schema.pk_names[0])
            lookup = rest[1] if len(rest) == 2 else "exact"
            if is_pk and len(rest) <= 2 and lookup in ("exact", "in", "isnull"):
                if lookup != "isnull":
                    _parse(rel, rest, value, key)  # checks the value against the pk field
                return build_lookup(target, lookup, value, key)
            return Related(model, field, _parse(rel, rest, value, key))
        if nxt not in LOOKUPS:
            raise TypeError(
                f"{rel.__name__} has no field {nxt!r}, and {nxt!r} is not a lookup (in filter "
                f"{key!r}; fields of {rel.__name__}: {_fields_list(rel)})"
            )
    if len(rest) > 1:
        raise TypeError(
            f"{target.where()} is not a foreign key: {'__'.join(rest)!r} cannot follow it "
            f"(filter {key!r})"
        )
    return build_lookup(target, rest[0] if rest else "exact", value, key)


def field_condition(field: Field[Any], lookup: str, value: Any) -> Condition:
    """``User.age > 3``: the condition for a comparison of a model's field."""
    model = field.model
    return build_lookup(_Target(model, field.name), lookup, value, f"{field.name}__{lookup}")


def check_ordering(model: type[Model], names: tuple[str, ...]) -> tuple[tuple[str, bool], ...]:
    """``("-rating", "id")`` → ``(("rating", True), ("id", False))``, checked."""
    schema = model._schema
    by_attname = {a: n for n, a in schema.attnames.items()}
    out = []
    for spec in names:
        if not isinstance(spec, str) or not spec.lstrip("-"):
            raise TypeError(f"{model.__name__}.order_by() takes field names, not {spec!r}")
        desc = spec.startswith("-")
        name = spec[1:] if desc else spec
        if name != "pk" and name not in schema.fields:
            if name in by_attname:
                name = by_attname[name]
            elif "__" in name and name.split("__")[0] in schema.fields:
                raise TypeError(
                    f"{model.__name__}.order_by({spec!r}): ordering across foreign keys is "
                    "not supported; order by the foreign key or sort the results"
                )
            else:
                raise TypeError(
                    f"{model.__name__} has no field {name!r} to order by "
                    f"(fields: {_fields_list(model)})"
                )
        field = schema.fields.get(name)
        if isinstance(field, UNORDERED):
            raise TypeError(
                f"{model.__name__}.{name}: a {_field_kind(field)} has no order; it cannot be "
                "used in order_by()"
            )
        out.append((name, desc))
    return tuple(out)


class _Reversed:
    """Inverts the order of a sort key (for descending fields in a mixed ordering)."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.key < self.key)

    def __gt__(self, other: _Reversed) -> bool:
        return bool(other.key > self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and bool(self.key == other.key)

    __hash__ = None  # type: ignore[assignment]


def sort_key(
    model: type[Model], ordering: tuple[tuple[str, bool], ...]
) -> Callable[[Model], tuple[Any, ...]]:
    """The sort key of rows for ``ordering``: ``None`` sorts before every value (so first
    when ascending, last when descending), and ties are broken by the primary key."""
    schema = model._schema
    parts: list[tuple[Callable[[Model], Any], Callable[[Any], Any], bool]] = []
    for name, desc in ordering:
        target = _Target(model, name)
        parts.append((target.getter, target.sort_key, desc))
    pk_values = schema.pk_values
    if not parts:  # by primary key alone: the same order without the loop
        single = schema._single_attname
        if single is not None:

            def by_single_pk(obj: Model) -> tuple[Any, ...]:
                return ((obj.__dict__[single],),)

            return by_single_pk

        def by_pk(obj: Model) -> tuple[Any, ...]:
            return (pk_values(obj),)

        return by_pk

    def key(obj: Model) -> tuple[Any, ...]:
        out: list[Any] = []
        for getter, value_key, desc in parts:
            v = getter(obj)
            k = (0,) if v is None else (1, value_key(v))
            out.append(_Reversed(k) if desc else k)
        out.append(pk_values(obj))
        return tuple(out)

    return key
