"""Queries by field: `FilterQuery` and its plan.

A filter plan asks a *candidate source* for pages of keys that may hold matching rows, reads
each page with one multi-get, decodes the rows and keeps those the condition matches. Today
the source is a scan of every key of the model (`ScanSource`) or, when the filter names
primary keys, those keys (`KeySource`); an index is another source that hands out fewer
keys. Rows are re-checked against the condition after they are read, so whatever a source
returns, the result is exactly the rows alive and matching when they are read: an expired row
reads as absent on every backend and is never returned or counted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, Generic, Self, TypeVar

from . import _executor
from ._auto import assign_ids
from ._base import Model
from ._commands import KEEP_TTL, NOT_READ, Batch, Get
from ._display import InstanceList
from ._exceptions import MultipleObjectsReturned
from ._executor import Emit, Plan
from ._index import IndexedField, IndexSpec, spec_of
from ._indexplan import IndexSource, count_plan, ordered_field, ordered_plan
from ._lookups import (
    And,
    Condition,
    Lookup,
    Not,
    Related,
    check_ordering,
    parse_lookup,
    sort_key,
)
from ._plans import (
    PAGE_SIZE,
    ScanSource,
    candidate_source,
    check_listable,
    exact_index_read,
    pk_keys,
    prefetch_plan,
)
from ._query import MAX_UPDATE_ATTEMPTS, DeleteQuery, Query, UpdateQuery
from ._relations import parse_related
from ._schema import resolve_ttl
from ._signals import post_save, pre_save
from ._types import NOTHING
from ._writes import checked, write_row

M = TypeVar("M", bound="Model")
R = TypeVar("R")

PagePlan = Generator[Any, Any, bool]


def _ordered_index(query: FilterQuery[Any]) -> tuple[IndexSpec, IndexedField, bool] | None:
    """The ordered index an ``order_by`` + ``limit`` can walk instead of reading every
    candidate: the ordering's first field, indexed, with no None to place (not null, or a
    range on it in the filter)."""
    schema = query.model._schema
    spec = spec_of(schema)
    if spec is None or query._limit is None or not query.ordering:
        return None
    if _related_parts(query.where) or pk_keys(schema, query.where) is not None:
        return None
    name, desc = query.ordering[0]
    f = ordered_field(spec, name)
    if f is None:
        return None
    if f.field.null and not any(
        isinstance(p, Lookup)
        and spec.field_for(p.name) is f
        and p.lookup in ("lt", "lte", "gt", "gte", "range", "startswith", "exact")
        for p in query.where.parts
    ):
        return None
    return spec, f, desc


# -- the query -------------------------------------------------------------------------------


class _TopRows:
    """The first ``keep`` rows in ``key`` order seen so far (all of them if ``keep`` is
    None); memory stays about twice ``keep``."""

    def __init__(self, key: Callable[[Any], Any], keep: int | None) -> None:
        self.key = key
        self.keep = keep
        self.rows: list[Any] = []

    def add(self, rows: list[Any]) -> None:
        self.rows.extend(rows)
        if self.keep is not None and len(self.rows) > 2 * self.keep + PAGE_SIZE:
            self.rows.sort(key=self.key)
            del self.rows[self.keep :]

    def result(self) -> list[Any]:
        self.rows.sort(key=self.key)
        if self.keep is not None:
            del self.rows[self.keep :]
        return self.rows


def _conditions(model: type[Model], conditions: tuple[Any, ...], lookups: dict[str, Any]) -> And:
    parts: list[Condition] = []
    for cond in conditions:
        if not isinstance(cond, Condition):
            raise TypeError(
                f"{model.__name__}.filter() takes conditions such as {model.__name__}.field "
                f"== value and keyword lookups, not {cond!r}"
            )
        _check_condition_model(model, cond)
        parts.append(cond)
    parts.extend(parse_lookup(model, k, v) for k, v in lookups.items())
    return And(tuple(parts))


def _check_condition_model(model: type[Model], cond: Condition) -> None:
    if isinstance(cond, Lookup | Related) and cond.model._schema is not model._schema:
        raise TypeError(
            f"a condition on {cond.model.__name__} cannot filter {model.__name__} "
            f"({cond.describe()})"
        )
    if isinstance(cond, And):
        for part in cond.parts:
            _check_condition_model(model, part)
    elif isinstance(cond, Not):
        _check_condition_model(model, cond.inner)


class FilterQuery(Query[list[M]], Generic[M]):
    """Rows of a model selected by field: an immutable query value.

    Builder methods (``filter``, ``exclude``, ``order_by``, ``limit``, ``offset``,
    ``select_related``) return a new query; awaiting it reads the rows (a list of
    instances, in ``order_by`` order, by primary key without one). ``count()``,
    ``exists()``, ``first()``, ``get()``, ``update()`` and ``delete()`` return queries too.
    ``async for`` streams the rows a page at a time. Without an index, every row of the
    model is read (``explain()`` says so); the result is exactly the live rows that match.

    Example::

        top = await Product.filter(rating__gte=4, in_stock=True).order_by("-rating").limit(20)
        n = await Product.exclude(name__icontains="sale").count()
        async for product in Product.filter(rating=5):
            ...
    """

    def __init__(
        self,
        model: type[M],
        where: And | None = None,
        ordering: tuple[tuple[str, bool], ...] = (),
        limit: int | None = None,
        offset: int = 0,
        related: tuple[str, ...] = (),
    ) -> None:
        self.model = model
        self.where = where if where is not None else And(())
        self.ordering = ordering
        self._limit = limit
        self._offset = offset
        self.related = related
        self._tree = parse_related(model, related) if related else {}

    # -- builders ---------------------------------------------------------------------------

    def filter(self, *conditions: Condition, **lookups: Any) -> Self:
        """Also require these lookups (AND).

        Example::

            q = User.filter(age__gte=18).filter(name__startswith="S")
        """
        more = _conditions(self.model, conditions, lookups)
        return self._copy(where=And(self.where.parts + more.parts))

    def exclude(self, *conditions: Condition, **lookups: Any) -> Self:
        """Leave out the rows matching all of these lookups (NOT (a AND b)).

        Example::

            q = User.exclude(name__icontains="bot")
        """
        more = _conditions(self.model, conditions, lookups)
        if not more.parts:
            return self
        return self._copy(where=And((*self.where.parts, Not(more))))

    def all(self) -> Self:
        """The query itself (for ``Model.filter(...).all()`` habits).

        Example::

            users = await User.all()
        """
        return self

    def order_by(self, *names: str) -> Self:
        """Order by these fields (``"-name"`` descending); replaces any previous ordering.

        ``None`` sorts before every value (first ascending, last descending); ties are
        broken by primary key.

        Example::

            q = User.filter().order_by("-age", "name")
        """
        return self._copy(ordering=check_ordering(self.model, names))

    def limit(self, n: int) -> Self:
        """At most ``n`` rows.

        Example::

            q = User.all().order_by("name").limit(10)
        """
        return self._copy(_limit=_count_arg(self.model, "limit", n))

    def offset(self, n: int) -> Self:
        """Skip the first ``n`` rows (of the ordering).

        Example::

            page2 = User.all().order_by("name").offset(10).limit(10)
        """
        return self._copy(_offset=_count_arg(self.model, "offset", n))

    def select_related(self, *paths: str) -> Self:
        """Load these foreign keys with the rows, one batch per level.

        Example::

            articles = await Article.filter(title__contains="cache").select_related("author")
        """
        related = self.related + tuple(p for p in paths if p not in self.related)
        return self._copy(related=related, _tree=parse_related(self.model, related))

    # -- terminals --------------------------------------------------------------------------

    def count(self) -> FilterResult[int]:
        """A query for the number of matching rows (within ``offset``/``limit``).

        Example::

            n = await User.filter(age__gte=18).count()
        """
        return FilterResult(self, "count")

    def exists(self) -> FilterResult[bool]:
        """A query for whether any row matches; stops at the first one.

        Example::

            taken = await User.filter(email="a@b.c").exists()
        """
        return FilterResult(self, "exists")

    def first(self) -> FilterResult[M | None]:
        """A query for the first matching row (by ``order_by``, else by primary key) or
        ``None``.

        Example::

            oldest = await User.all().order_by("-age").first()
        """
        return FilterResult(self, "first")

    def get(self) -> FilterResult[M]:
        """A query for the one matching row: ``Model.DoesNotExist`` if none,
        ``co.MultipleObjectsReturned`` if several.

        Example::

            user = await User.filter(email="a@b.c").get()
        """
        return FilterResult(self, "get")

    def update(self, *, ttl: Any = NOTHING, **fields: Any) -> FilterResult[int]:
        """A query that changes these fields on every matching row; awaits to the number of
        rows changed. Each row is updated atomically (compare-and-swap, as `Model.update`):
        a row that no longer matches when it is written is left alone. Expressions such as
        ``Model.n + 1`` are applied to each row's stored value.

        Example::

            n = await Product.filter(in_stock=False).update(rating=1)
        """
        changes = self.model._check_changes(dict(fields))
        if not changes:
            raise TypeError(f"{self.model.__name__}.filter().update() needs fields to change")
        ttl_value = KEEP_TTL if ttl is NOTHING else resolve_ttl(None, ttl)
        return FilterResult(self, "update", changes=changes, ttl=ttl_value)

    def delete(self) -> FilterResult[int]:
        """A query that deletes every matching row; awaits to the number deleted. Rows are
        deleted as they were read (there is no compare-and-delete): a row changed between
        its read and its delete is deleted all the same.

        Example::

            n = await Product.filter(rating__lt=2).delete()
        """
        return FilterResult(self, "delete")

    def explain(self) -> str:
        """How the query will run: its candidate source and cost, its condition, ordering.

        Example::

            print(User.filter(age__gte=18).explain())
            # full scan: reads every row of User (...); keeps rows where age >= 18; ...
        """
        return self._explain("list")

    # -- running ----------------------------------------------------------------------------

    def _plan(self) -> Plan:
        return self._run("list", {})

    def compile(self) -> list[tuple[Any, Batch]]:
        """The batches of the first round trip: none for a scan (its first round trip lists
        keys), the multi-get for a key lookup; no I/O."""
        return super().compile()

    def __aiter__(self) -> AsyncIterator[M]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[M]:
        if self.ordering or self._limit is not None or self._offset:
            for obj in await self:
                yield obj
            return
        buffer: list[M] = []

        def on_page(rows: list[Any]) -> PagePlan:
            if self._tree:
                yield from prefetch_plan(rows, self._tree)
            buffer.extend(rows)
            return False

        plan = self._with_rows(on_page)
        driver = _executor.Driver()
        send: Any = None
        try:
            while True:
                try:
                    step = plan.send(send)
                except StopIteration:
                    break
                while buffer:
                    rows = buffer[:]
                    buffer.clear()
                    for obj in rows:
                        yield obj
                send = await _executor.perform(step, driver)
            while buffer:
                rows = buffer[:]
                buffer.clear()
                for obj in rows:
                    yield obj
        finally:
            plan.close()
            await driver.close()

    def _resolve(self, cond: Condition) -> Plan:
        """``cond`` with every related condition replaced by an ``in`` on the foreign key
        (the related query runs here, first)."""
        if isinstance(cond, Related):
            rel = cond.field.rel_model
            sub: FilterQuery[Any] = FilterQuery(rel, And((cond.inner,)))
            rel_schema = rel._schema
            found: set[Any] = set()

            def gather(rows: list[Any]) -> PagePlan:
                for r in rows:
                    pk = rel_schema.pk_values(r)
                    found.add(pk if rel_schema.composite else pk[0])
                return False
                yield  # pragma: no cover

            yield from sub._with_rows(gather)
            pks = frozenset(found)
            field = cond.field
            attname = field.attname
            return Lookup(
                cond.model,
                field.name,
                "in",
                pks,
                lambda obj: obj.__dict__[attname],
                lambda v: v,
            )
        if isinstance(cond, And):
            parts = []
            for part in cond.parts:
                parts.append((yield from self._resolve(part)))
            return And(tuple(parts))
        if isinstance(cond, Not):
            return Not((yield from self._resolve(cond.inner)))
        return cond

    def _with_rows(self, on_page: Callable[[list[Any]], PagePlan]) -> Plan:
        """Read the candidates page by page; ``on_page`` gets each page's matching rows (a
        sub-plan returning True to stop early)."""
        schema = self.model._schema
        check_listable(schema)
        where = yield from self._resolve(self.where)
        assert isinstance(where, And)
        source = candidate_source(schema, where)
        listing = source.listing()
        backend = schema.backend
        # one condition: its own test, without And's generator per row
        test = where.parts[0].matches if len(where.parts) == 1 else where.matches
        while True:
            keys = yield from source.next_keys(listing)
            if not keys:
                return
            if isinstance(source, IndexSource):
                payloads = source.prefetched(keys)
                missing = [i for i, p in enumerate(payloads) if p is NOT_READ]
                if missing:
                    batch = Batch(tuple(Get(keys[i]) for i in missing))
                    for i, got in zip(missing, (yield [(backend, batch)])[0], strict=True):
                        payloads[i] = got
            else:
                payloads = (yield [(backend, Batch(tuple(Get(k) for k in keys)))])[0]
            # decode_many refuses a row whose primary key is not the one of the key it was
            # read from (SerializationError); None: deleted or expired since it was listed.
            rows = schema.decode_many(keys, payloads)
            matched = [obj for obj in rows if obj is not None and test(obj)]
            if matched and (yield from on_page(matched)):
                return

    def _matches(self, wanted: int) -> Plan:
        """Up to ``wanted`` matching rows (in no particular order)."""
        hits: list[Any] = []

        def stop_early(rows: list[Any]) -> PagePlan:
            hits.extend(rows)
            return len(hits) >= wanted
            yield  # pragma: no cover

        yield from self._with_rows(stop_early)
        return hits

    def _run(self, mode: str, extra: dict[str, Any]) -> Plan:
        model = self.model
        schema = model._schema
        ordering = self.ordering
        offset, limit = self._offset, self._limit
        if mode in ("list", "first", "count"):
            if mode == "first":
                offset, limit = offset, 1 if limit is None or limit > 0 else 0
            keep = None if limit is None else offset + limit
            if mode == "count" and limit is None:  # the ordering does not change a count
                exact = exact_index_read(schema, self.where)
                if exact is not None:
                    total = yield from count_plan(schema, exact[0], exact[1])
                    return max(0, total - offset)
                total = 0

                def count_page(rows: list[Any]) -> PagePlan:
                    nonlocal total
                    total += len(rows)
                    return False
                    yield  # pragma: no cover

                yield from self._with_rows(count_page)
                return max(0, total - offset)
            ordered = _ordered_index(self) if keep is not None and mode != "count" else None
            if ordered is not None and keep is not None:
                spec, field, desc = ordered
                rows = yield from ordered_plan(
                    schema, spec, field, desc, self.where, keep, sort_key(model, ordering)
                )
                rows = rows[offset:]
                if self._tree and rows:
                    yield from prefetch_plan(rows, self._tree)
                if mode == "first":
                    return rows[0] if rows else None
                return InstanceList(rows)
            top = _TopRows(sort_key(model, ordering), keep)

            def collect(rows: list[Any]) -> PagePlan:
                top.add(rows)
                return False
                yield  # pragma: no cover

            yield from self._with_rows(collect)
            rows = top.result()[offset:]
            if mode == "count":
                return len(rows)
            if self._tree and rows:
                yield from prefetch_plan(rows, self._tree)
            if mode == "first":
                return rows[0] if rows else None
            return InstanceList(rows)
        if mode in ("exists", "get", "get_or_none"):
            if offset or limit is not None:  # within a slice of the ordering
                hits = yield from self._run("list", {})
                hits = hits[:2]
            elif mode == "exists" and (exact := exact_index_read(schema, self.where)):
                n = yield from count_plan(schema, exact[0], exact[1], limit=1)
                return n > 0
            else:
                hits = yield from self._matches(1 if mode == "exists" else 2)
            if mode == "exists":
                return bool(hits)
            if not hits and mode == "get_or_none":
                return None
            if not hits:
                raise model.DoesNotExist(f"no {schema.model_name} matches {self.where.describe()}")
            if len(hits) > 1:
                raise MultipleObjectsReturned(
                    f"more than one {schema.model_name} matches {self.where.describe()}"
                )
            if self._tree:
                yield from prefetch_plan(hits, self._tree)
            return hits[0]
        if mode == "update":
            changes, ttl = extra["changes"], extra["ttl"]
            changed = 0
            resolved: list[Condition] = []

            def update_page(rows: list[Any]) -> PagePlan:
                nonlocal changed
                pks = [schema.pk_values(r) for r in rows]
                update: UpdateQuery[list[Any]] = UpdateQuery(
                    model, [(pk, changes) for pk in pks], ttl=NOTHING, mode="many"
                )
                update.ttl = ttl
                update.where = resolved[0].matches if resolved else None
                results = yield from update._steps()
                changed += sum(1 for r in results if r is not None)
                return False

            # The update re-checks the condition on the row it is about to write.
            where = yield from self._resolve(self.where)
            resolved.append(where)
            query = self._copy(where=where)
            yield from query._with_rows(update_page)
            return changed
        if mode == "delete":
            deleted = 0

            def delete_page(rows: list[Any]) -> PagePlan:
                nonlocal deleted
                pks = [schema.pk_values(r) for r in rows]
                query: DeleteQuery[int] = DeleteQuery(model, pks, mode="many", instances=rows)
                deleted += yield from query._steps()
                return False

            yield from self._with_rows(delete_page)
            return deleted
        raise AssertionError(mode)  # pragma: no cover

    def _explain(self, mode: str) -> str:
        schema = self.model._schema
        check_listable(schema)
        lines = []
        related = _related_parts(self.where)
        for cond in related:
            sub: FilterQuery[Any] = FilterQuery(cond.field.rel_model, And((cond.inner,)))
            lines.append(
                f"first, for {self.model.__name__}.{cond.field.name}: "
                f"{sub._explain('related')}; then an 'in' on {cond.field.attname}"
            )
        source = ScanSource(schema) if related else candidate_source(schema, self.where)
        if mode in ("count", "exists") and self._limit is None and not self._offset:
            exact = exact_index_read(schema, self.where)
            if exact is not None:
                return (
                    f"index count: {source.describe().split(' (')[0]} counted in the index "
                    "(one round trip per node, no row read)"
                )
        ordered = _ordered_index(self) if mode in ("list", "first") else None
        if ordered is not None:
            lines.append(
                f"ordered index walk on {ordered[1].name}: reads the index in "
                f"{'descending' if ordered[2] else 'ascending'} order and only the rows that "
                f"can be among the first {self._offset + (self._limit or 0)} (ties included)"
            )
        else:
            lines.append(source.describe())
        lines.append(f"keeps rows where {self.where.describe()}")
        if mode in ("list", "first", "count"):
            order = ", ".join(("-" if d else "") + n for n, d in self.ordering)
            if mode != "count" or self._limit is not None:
                lines.append(f"orders by {order or 'pk'} in the process")
            if self._offset:
                lines.append(f"skips {self._offset}")
            if self._limit is not None:
                lines.append(f"keeps {self._limit}")
        if mode in ("exists", "get", "get_or_none"):
            lines.append(f"stops after {1 if mode == 'exists' else 2} match(es)")
        if mode == "update":
            lines.append("updates each match with a compare-and-swap (re-checked per row)")
        if mode == "delete":
            lines.append("deletes each page of matches in one round trip")
        if self._tree:
            lines.append(f"loads {', '.join(self.related)} in one batch per level")
        return "; ".join(lines)

    def __repr__(self) -> str:
        parts = [self.where.describe()]
        if self.ordering:
            parts.append("order_by " + ", ".join(("-" if d else "") + n for n, d in self.ordering))
        if self._offset:
            parts.append(f"offset {self._offset}")
        if self._limit is not None:
            parts.append(f"limit {self._limit}")
        return f"<FilterQuery {self.model.__name__}: {'; '.join(parts)}>"


def _related_parts(cond: Condition) -> list[Related]:
    if isinstance(cond, Related):
        return [cond]
    if isinstance(cond, And):
        return [r for p in cond.parts for r in _related_parts(p)]
    if isinstance(cond, Not):
        return _related_parts(cond.inner)
    return []


def _count_arg(model: type[Model], what: str, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise TypeError(f"{model.__name__}.{what}() takes an int >= 0, not {n!r}")
    return n


class FilterResult(Query[R]):
    """``count()``/``exists()``/``first()``/``get()``/``update()``/``delete()`` of a
    `FilterQuery`: an awaitable query value.

    Example::

        n = await User.filter(age__gte=18).count()
    """

    def __init__(self, query: FilterQuery[Any], mode: str, **extra: Any) -> None:
        self.query = query
        self.mode = mode
        self.extra = extra

    def select_related(self, *paths: str) -> Self:
        """Load these foreign keys with the row(s).

        Example::

            article = await Article.get(title="x").select_related("author")
        """
        return self._copy(query=self.query.select_related(*paths))

    def _plan(self) -> Plan:
        return self.query._run(self.mode, self.extra)

    def compile(self) -> list[tuple[Any, Batch]]:
        """The batches of the first round trip (none for a scan); no I/O."""
        return self.query.compile()

    def explain(self) -> str:
        """How the query will run, in words.

        Example::

            print(User.filter(age__gte=18).count().explain())
        """
        return self.query._explain(self.mode)

    def __repr__(self) -> str:
        return f"<FilterResult {self.mode} of {self.query!r}>"


# -- update_or_create ------------------------------------------------------------------------


class UpdateOrCreateQuery(Query[R]):
    """``update_or_create``: update the one matching row with ``defaults``, or create it.

    The update is atomic per row (compare-and-swap, re-checking the lookups); a create is an
    add-if-absent of the new row's key, so two racers creating the same primary key agree.
    Two racers whose lookups do not name the primary key can both create, unless a
    ``unique=True`` field refuses the second (`IntegrityError`).
    """

    def __init__(
        self,
        model: type[Model],
        query: FilterQuery[Any],
        defaults: dict[str, Any],
        create_values: dict[str, Any],
        ttl: Any,
    ) -> None:
        self.model = model
        self.query = query
        self.defaults = defaults
        self.create_values = create_values
        self.ttl = ttl

    def _plan(self) -> Plan:
        model = self.model
        schema = model._schema
        backend = schema.backend
        where = yield from self.query._resolve(self.query.where)
        query = self.query._copy(where=where)
        for _ in range(MAX_UPDATE_ATTEMPTS):
            found = yield from query._matches(2)
            if len(found) > 1:
                raise MultipleObjectsReturned(
                    f"more than one {schema.model_name} matches {self.query.where.describe()}"
                )
            if found:
                if not self.defaults:
                    return found[0], False
                update: UpdateQuery[list[Any]] = UpdateQuery(
                    model,
                    [(schema.pk_values(found[0]), self.defaults)],
                    ttl=NOTHING if self.ttl is NOTHING else self.ttl,
                    mode="many",
                )
                update.where = where.matches
                [result] = yield from update._steps()
                if result is not None:
                    return result, False
                continue  # deleted or changed meanwhile: look again
            instance = model(**self.create_values)
            yield from assign_ids(schema, [instance])
            if pre_save.receivers_for(model):
                yield Emit(pre_save, model, [instance], {})
            key = schema.key_of(instance)
            ttl = resolve_ttl(schema.ttl, self.ttl)
            command = write_row(schema, "add", key, instance, ttl)
            added = checked(schema, command, (yield [(backend, Batch((command,)))])[0][0])
            if added:
                if post_save.receivers_for(model):
                    yield Emit(post_save, model, [instance], {"created": True})
                return instance, True
        raise MultipleObjectsReturned(  # pragma: no cover - kept racing for 200 rounds
            f"{schema.model_name}: update_or_create kept racing"
        )


# -- reverse relations -----------------------------------------------------------------------


class ReverseRelation:
    """``user.articles``: the query of the rows whose foreign key points at this instance
    (declared with ``ForeignKeyField(User, related_name="articles")``).

    Example::

        articles = await user.articles
        n = await user.articles.filter(title__contains="cache").count()
    """

    def __init__(self, model: type[Model], field_name: str) -> None:
        self.model = model
        self.field_name = field_name

    def __get__(self, instance: Any, owner: Any) -> Any:
        if instance is None:
            return self
        return self.model.filter(**{self.field_name: instance})

    def __set__(self, instance: Any, value: Any) -> None:
        raise AttributeError(
            f"{type(instance).__name__}: a reverse relation is read-only; set "
            f"{self.model.__name__}.{self.field_name} on the related rows instead"
        )

    def __repr__(self) -> str:
        return f"<ReverseRelation {self.model.__name__}.{self.field_name}>"
