"""Queries by field (filter/exclude/order_by/count/...) on every backend that lists keys."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import enum
from types import SimpleNamespace
from typing import Any

import pytest

import acacheorm as co
from acacheorm._commands import Get, Incr
from acacheorm._executor import Scan
from acacheorm._types import NOTHING
from acacheorm.backends.base import Backend
from tests.backends.test_conformance import eventually
from tests.models.conftest import RoundTrips

UTC = datetime.UTC


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def define(backend: Backend) -> SimpleNamespace:
    meta = type("Meta", (), {"backend": backend, "serializer": "msgpack", "namespace": "shop"})

    class Country(co.Model):
        code = co.StringField(primary_key=True)
        name = co.StringField()
        Meta = meta

    class Maker(co.Model):
        id = co.IntegerField(primary_key=True)
        name = co.StringField(max_length=20)
        country = co.ForeignKeyField(Country, null=True, related_name="makers")
        Meta = meta

    class Product(co.Model):
        id = co.IntegerField(primary_key=True)
        name = co.StringField(max_length=30)
        rating = co.IntegerField(null=True, min_value=0, max_value=5)
        price = co.DecimalField(default=decimal.Decimal("0"))
        in_stock = co.BooleanField(default=True)
        colour = co.EnumField(Colour, default=Colour.RED)
        tags = co.ListField(co.StringField(), default=list)
        maker = co.ForeignKeyField(Maker, null=True, related_name="products")
        added = co.DateTimeTZField(null=True)
        Meta = meta

    return SimpleNamespace(Country=Country, Maker=Maker, Product=Product, backend=backend)


@pytest.fixture
def listable(backend: Backend, backend_name: str) -> Backend:
    if backend_name == "memcached":
        pytest.skip("memcached cannot list keys (see test_memcached_refuses_filters)")
    return backend


@pytest.fixture
async def shop(listable: Backend) -> SimpleNamespace:
    s = define(listable)
    await s.Country.insert_many({"code": "fr", "name": "France"}, {"code": "jp", "name": "Japan"})
    await s.Maker.insert_many(
        {"id": 1, "name": "ACME", "country": "fr"},
        {"id": 2, "name": "Globex", "country": "jp"},
        {"id": 3, "name": "Initech", "country": None},
    )
    t0 = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    rows = [
        (1, "Coat", 5, "99.90", True, Colour.RED, ["winter"], 1, 0),
        (2, "Sale hat", 2, "5.00", False, Colour.BLUE, [], 1, 1),
        (3, "Scarf", None, "12.50", True, Colour.BLUE, ["winter", "wool"], 2, 2),
        (4, "boots", 4, "80", True, Colour.RED, [], 2, None),
        (5, "Gloves", 4, "15", False, Colour.RED, ["wool"], None, 4),
        (6, "SALE socks", 1, "3", True, Colour.BLUE, [], 3, 5),
    ]
    await s.Product.insert_many(
        *(
            {
                "id": i,
                "name": name,
                "rating": rating,
                "price": decimal.Decimal(price),
                "in_stock": stock,
                "colour": colour,
                "tags": tags,
                "maker": maker,
                "added": None if day is None else t0 + datetime.timedelta(days=day),
            }
            for i, name, rating, price, stock, colour, tags, maker, day in rows
        )
    )
    return s


def ids(rows: list[Any]) -> list[Any]:
    return [r.pk for r in rows]


async def test_lookups(shop: SimpleNamespace) -> None:
    P = shop.Product
    t0 = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({}, [1, 2, 3, 4, 5, 6]),
        ({"name": "Coat"}, [1]),
        ({"name__exact": "coat"}, []),
        ({"name__iexact": "COAT"}, [1]),
        ({"name__contains": "ale"}, [2]),
        ({"name__icontains": "sale"}, [2, 6]),
        ({"name__startswith": "S"}, [2, 3, 6]),
        ({"name__istartswith": "s"}, [2, 3, 6]),
        ({"name__endswith": "s"}, [4, 5, 6]),
        ({"name__iendswith": "T"}, [1, 2]),
        ({"rating": 4}, [4, 5]),
        ({"rating__lt": 4}, [2, 6]),
        ({"rating__lte": 4}, [2, 4, 5, 6]),
        ({"rating__gt": 4}, [1]),
        ({"rating__gte": 4}, [1, 4, 5]),
        ({"rating__range": (2, 4)}, [2, 4, 5]),
        ({"rating__in": [1, 5, 3]}, [1, 6]),
        ({"rating__isnull": True}, [3]),
        ({"rating__isnull": False}, [1, 2, 4, 5, 6]),
        ({"rating": None}, [3]),
        ({"rating__gt": 200}, []),  # bounds limit what is stored, not what is asked
        ({"price__gte": decimal.Decimal("15")}, [1, 4, 5]),
        ({"price__lt": "10"}, [2, 6]),
        ({"in_stock": False}, [2, 5]),
        ({"colour": Colour.BLUE}, [2, 3, 6]),
        ({"colour": "red"}, [1, 4, 5]),
        ({"colour__in": ["blue"]}, [2, 3, 6]),
        ({"colour__gt": Colour.BLUE}, [1, 4, 5]),  # enums compare by value
        ({"tags": ["wool"]}, [5]),
        ({"tags__in": [[], ["wool"]]}, [2, 4, 5, 6]),
        ({"added__gte": t0 + datetime.timedelta(days=2)}, [3, 5, 6]),
        ({"added__range": (t0, t0 + datetime.timedelta(days=1))}, [1, 2]),
        ({"added__isnull": True}, [4]),
        ({"pk": 3}, [3]),
        ({"pk__in": {1, 2, 404}}, [1, 2]),
        ({"pk__gt": 4}, [5, 6]),
        ({"id__lte": 2}, [1, 2]),
        ({"in_stock": True, "rating__gte": 4}, [1, 4]),
        ({"maker": 1}, [1, 2]),
        ({"maker_id": 2}, [3, 4]),
        ({"maker__in": [1, 3]}, [1, 2, 6]),
        ({"maker__isnull": True}, [5]),
        ({"maker__id": 3}, [6]),
        ({"maker__pk__in": [2]}, [3, 4]),
        ({"maker__name": "Globex"}, [3, 4]),
        ({"maker__name__startswith": "I"}, [6]),
        ({"maker__country__name": "France"}, [1, 2]),
        ({"maker__country__code": "jp"}, [3, 4]),
        ({"maker__country__isnull": True}, [6]),
        ({"maker__country__name__icontains": "an"}, [1, 2, 3, 4]),
    ]
    for lookups, expected in cases:
        assert ids(await P.filter(**lookups)) == expected, lookups
        assert await P.filter(**lookups).count() == len(expected), lookups
        assert await P.count(**lookups) == len(expected), lookups
        assert await P.filter(**lookups).exists() is bool(expected), lookups
    maker = await shop.Maker.get(id=2)
    assert ids(await P.filter(maker=maker)) == [3, 4]


async def test_exclude_chaining_and_expressions(shop: SimpleNamespace) -> None:
    P = shop.Product
    assert ids(await P.exclude(name__icontains="sale")) == [1, 3, 4, 5]
    # exclude(a, b) leaves out rows matching both; None never matches a comparison
    assert ids(await P.exclude(rating__gte=4, in_stock=True)) == [2, 3, 5, 6]
    assert ids(await P.filter(in_stock=True).filter(rating__gte=4)) == [1, 4]
    assert ids(await P.filter(in_stock=True).exclude(maker__name="ACME")) == [3, 4, 6]
    assert ids(await P.exclude(maker__name="ACME")) == [3, 4, 5, 6]
    assert ids(await P.filter(P.rating >= 4, P.in_stock == True)) == [1, 4]  # noqa: E712
    assert ids(await P.filter(P.rating < 2)) == [6]
    assert ids(await P.filter(P.rating <= 2, P.rating > 1)) == [2]
    assert ids(await P.filter(P.rating != 4)) == [1, 2, 3, 6]
    assert ids(await P.filter(P.maker == None)) == [5]  # noqa: E711
    assert ids(await P.exclude(P.colour == Colour.RED)) == [2, 3, 6]
    assert await P.count(P.rating == 4) == 2
    # A condition is not a bool; fields still compare by identity among themselves.
    with pytest.raises(TypeError, match="not a bool"):
        bool(P.rating == 4)
    assert P.rating in [P.name, P.rating]
    assert {P.rating: 1}[P.rating] == 1
    assert P.rating != P.name
    with pytest.raises(TypeError, match="cannot filter"):
        P.filter(shop.Maker.name == "x")


async def test_ordering_limit_offset_first(shop: SimpleNamespace) -> None:
    P = shop.Product
    assert ids(await P.filter()) == [1, 2, 3, 4, 5, 6]  # by primary key without order_by
    # None sorts first ascending, last descending; ties are broken by primary key
    assert ids(await P.order_by("rating")) == [3, 6, 2, 4, 5, 1]
    assert ids(await P.order_by("-rating")) == [1, 4, 5, 2, 6, 3]
    assert ids(await P.order_by("-rating", "-id")) == [1, 5, 4, 2, 6, 3]
    assert ids(await P.order_by("in_stock", "-price")) == [5, 2, 1, 4, 3, 6]
    assert ids(await P.order_by("colour", "name")) == [6, 2, 3, 1, 5, 4]  # by code point
    assert ids(await P.order_by("maker_id")) == [5, 1, 2, 3, 4, 6]
    assert ids(await P.order_by("-rating").limit(2)) == [1, 4]
    assert ids(await P.order_by("-rating").offset(1).limit(3)) == [4, 5, 2]
    assert ids(await P.order_by("-rating").offset(5)) == [3]
    assert ids(await P.order_by("-rating").offset(9)) == []
    assert ids(await P.limit(0)) == []
    assert ids(await P.offset(4)) == [5, 6]
    assert ids(await P.all().limit(2)) == [1, 2]
    assert await P.order_by("-rating").limit(2).count() == 2
    assert await P.all().offset(4).count() == 2
    assert (await P.first()).pk == 1
    assert (await P.first(in_stock=False)).pk == 2
    assert (await P.order_by("-price").first()).pk == 1
    assert (await P.filter(name__startswith="S").order_by("-name").first()).name == "Scarf"
    assert await P.first(name="nothing") is None
    q = P.order_by("name")
    assert q.order_by().ordering == ()  # order_by() clears; the query is unchanged
    assert q.ordering == (("name", False),)


async def test_get_first_exactly_one(shop: SimpleNamespace) -> None:
    P = shop.Product
    assert (await P.get(name="Scarf")).pk == 3
    assert (await P.filter(rating=5).get()).pk == 1
    assert (await P.get(pk=4)).pk == 4
    with pytest.raises(P.DoesNotExist, match="name == 'x'"):
        await P.get(name="x")
    with pytest.raises(co.MultipleObjectsReturned, match="rating == 4"):
        await P.get(rating=4)
    assert isinstance(co.MultipleObjectsReturned("x"), co.CacheORMError)
    assert await P.get_or_none(name="x") is None
    assert (await P.get_or_none(name="Coat")).pk == 1
    with pytest.raises(co.MultipleObjectsReturned):
        await P.get_or_none(in_stock=True)
    assert (await P.get(P.name == "boots")).pk == 4
    hat = await P.get(name="Sale hat").select_related("maker")
    assert hat.maker.name == "ACME"


async def test_select_related_reverse_relation_and_stream(shop: SimpleNamespace) -> None:
    P, Maker, Country = shop.Product, shop.Maker, shop.Country
    rows = await P.filter(maker__isnull=False).select_related("maker__country")
    assert [r.maker.name for r in rows] == ["ACME", "ACME", "Globex", "Globex", "Initech"]
    assert rows[0].maker.country.name == "France"
    acme = await Maker.get(id=1)
    assert ids(await acme.products) == [1, 2]
    assert await acme.products.filter(in_stock=True).count() == 1
    assert ids(await (await Country.get(code="jp")).makers) == [2]
    streamed = [p.pk async for p in P.filter(in_stock=True)]
    assert sorted(streamed) == [1, 3, 4, 6]
    streamed = [p.pk async for p in P.filter(in_stock=True).order_by("-id").limit(2)]
    assert streamed == [6, 4]
    streamed = [p.maker.name async for p in P.filter(maker=2).select_related("maker")]
    assert streamed == ["Globex", "Globex"]
    with pytest.raises(AttributeError, match="read-only"):
        acme.products = []


async def test_update_and_delete_by_filter(shop: SimpleNamespace) -> None:
    P = shop.Product
    assert await P.filter(in_stock=False).update(rating=1) == 2
    assert ids(await P.filter(rating=1)) == [2, 5, 6]
    assert await P.filter(rating=1).update(rating=P.rating + 2) == 3
    assert ids(await P.filter(rating=3)) == [2, 5, 6]
    assert await P.filter(name="none").update(rating=0) == 0
    assert (await P.get(id=5)).name == "Gloves"  # other fields kept
    with pytest.raises(TypeError, match="primary key"):
        P.filter(id=1).update(id=2)
    with pytest.raises(co.ValidationError):
        P.filter(id=1).update(rating=9)
    assert await P.filter(maker__name="Globex").delete() == 2
    assert ids(await P.all()) == [1, 2, 5, 6]
    assert await P.exclude(rating=3).delete() == 1
    assert ids(await P.all()) == [2, 5, 6]
    assert await P.filter(id=404).delete() == 0


async def test_update_keeps_ttl_and_rechecks_condition(listable: Backend) -> None:
    s = define(listable)
    P = s.Product
    await P.create(id=1, name="a", rating=1, ttl=600)
    await P.create(id=2, name="b", rating=1)
    assert await P.filter(rating=1).update(name="z") == 2
    assert await listable.get(P._schema.key((1,))) is not None
    # The condition is checked again on the row about to be written: a row changed since
    # it was listed is left alone.
    from acacheorm._query import UpdateQuery

    update: UpdateQuery[Any] = UpdateQuery(P, [((1,), {"name": "y"})], ttl=NOTHING, mode="many")
    update.where = (P.rating == 2).matches
    assert await update == [None]
    assert (await P.get(id=1)).name == "z"


async def test_update_or_create(shop: SimpleNamespace) -> None:
    Maker = shop.Maker
    maker, created = await Maker.update_or_create(id=9, defaults={"name": "Hooli"})
    assert created and maker.pk == 9 and maker.name == "Hooli"
    maker, created = await Maker.update_or_create(id=9, defaults={"name": "Hooli 2"})
    assert not created and maker.name == "Hooli 2"
    assert (await Maker.get(id=9)).name == "Hooli 2"
    maker, created = await Maker.update_or_create(name="ACME", defaults={"country": "jp"})
    assert not created and maker.pk == 1 and maker.country_id == "jp"
    maker, created = await Maker.update_or_create(name="ACME")
    assert not created and maker.pk == 1
    with pytest.raises(co.MultipleObjectsReturned):
        await Maker.update_or_create(country="jp", defaults={"name": "x"})
    with pytest.raises(TypeError, match="given twice"):
        Maker.update_or_create(name="a", defaults={"name": "b"})


async def test_bad_input_fails_before_io(shop: SimpleNamespace, round_trips: RoundTrips) -> None:
    P = shop.Product
    round_trips.reset()
    with pytest.raises(TypeError, match=r"Product has no field 'colr'"):
        P.filter(colr="red")
    with pytest.raises(TypeError, match=r"Product\.name: unknown lookup 'likes'"):
        P.filter(name__likes="x")
    with pytest.raises(TypeError, match=r"Product\.rating: lookup 'icontains' works on string"):
        P.filter(rating__icontains=1)
    with pytest.raises(co.ValidationError, match=r"Product\.rating: expected int") as info:
        P.filter(rating="x")
    assert info.value.model == "Product" and info.value.field == "rating"
    with pytest.raises(co.ValidationError, match=r"rating__gte"):
        P.filter(rating__gte="x")
    with pytest.raises(co.ValidationError):
        P.exclude(added__lt=datetime.datetime(2024, 1, 1))  # naive for an aware field
    with pytest.raises(TypeError, match="iterable"):
        P.filter(rating__in=3)
    with pytest.raises(TypeError, match="iterable"):
        P.filter(name__in="abc")
    with pytest.raises(TypeError, match="pair"):
        P.filter(rating__range=(1, 2, 3))
    with pytest.raises(TypeError, match="True or False"):
        P.filter(rating__isnull="yes")
    with pytest.raises(TypeError, match="isnull"):
        P.filter(rating__gt=None)
    with pytest.raises(TypeError, match="takes a str"):
        P.filter(name__contains=3)
    with pytest.raises(TypeError, match="ordered values"):
        P.filter(tags__gt=["a"])
    with pytest.raises(TypeError, match="not a foreign key"):
        P.filter(name__foo__bar=1)
    with pytest.raises(TypeError, match="Maker has no field 'nme'"):
        P.filter(maker__nme="x")
    with pytest.raises(co.ValidationError):
        P.filter(maker__country=5)  # a country code is a str
    with pytest.raises(TypeError, match="Product has no field 'colour_name' to order by"):
        P.order_by("colour_name")
    with pytest.raises(TypeError, match="no order"):
        P.order_by("tags")
    with pytest.raises(TypeError, match="across foreign keys"):
        P.order_by("maker__name")
    with pytest.raises(TypeError, match="int >= 0"):
        P.all().limit(-1)
    with pytest.raises(TypeError, match="int >= 0"):
        P.all().offset(True)
    with pytest.raises(TypeError, match="has no field"):
        P.filter(in_stock=False).update(stock=1)
    with pytest.raises(TypeError, match="has no field"):
        P.get(nme="x")
    assert round_trips.count == 0


async def test_explain_and_compile(shop: SimpleNamespace) -> None:
    P = shop.Product
    text = P.filter(rating__gte=4).order_by("-rating").limit(20).explain()
    assert text.startswith("full scan: reads every row of Product")
    assert "rating >= 4" in text and "orders by -rating" in text and "keeps 20" in text
    assert P.filter(pk__in=[1, 2]).explain().startswith("key lookup: reads 2 row(s)")
    text = P.filter(maker__name="ACME").count().explain()
    assert text.startswith("first, for Product.maker: full scan: reads every row of Maker")
    assert "stops after 1" in P.filter(rating=1).exists().explain()
    assert P.filter(rating=4).compile() == []  # the first round trip lists keys
    [(backend, batch)] = P.filter(pk__in=[1, 2]).compile()
    assert backend is shop.backend and len(batch.commands) == 2
    assert ids(await P.filter(pk__in=[2, 1], rating__gte=4)) == [1]


async def test_memcached_refuses_filters(backend: Backend, backend_name: str) -> None:
    if backend_name != "memcached":
        pytest.skip("memcached only")
    s = define(backend)
    P = s.Product
    await P.create(id=1, name="Coat")
    for query in (
        P.filter(name="Coat"),
        P.all(),
        P.count(),
        P.first(),
        P.exclude(name="x").exists(),
        P.get(name="Coat"),
        P.filter(name="Coat").delete(),
    ):
        with pytest.raises(co.ConfigurationError, match="list its keys"):
            await query
    with pytest.raises(co.ConfigurationError, match="MemcachedBackend cannot"):
        P.filter(name="Coat").explain()
    with pytest.raises(co.ConfigurationError):
        [p async for p in P.all()]
    assert (await P.get(id=1)).name == "Coat"  # reads by primary key still work
    assert (await P.get(pk=1)).name == "Coat"


async def test_expired_rows_are_never_returned_or_counted(listable: Backend) -> None:
    s = define(listable)
    P = s.Product
    await P.insert_many(*({"id": i, "name": f"p{i}", "rating": 1} for i in range(1, 6)))
    await P.insert_many(*({"id": i, "name": f"p{i}", "rating": 1} for i in (6, 7)), ttl=0.3)
    # A sentinel written after the short-lived rows expires after them: once it is gone,
    # so are they, although nothing has touched their keys.
    await listable.set("sentinel", b"x", ttl=0.3)
    assert await P.count(rating=1) in (5, 6, 7)

    async def sentinel_gone() -> bool:
        return not await listable.has("sentinel")

    await eventually(sentinel_gone)
    assert ids(await P.filter(rating=1)) == [1, 2, 3, 4, 5]
    assert await P.filter(rating=1).count() == 5
    assert await P.count() == 5
    assert [p.pk async for p in P.filter(rating=1)].__len__() == 5
    assert await P.filter(id=6).exists() is False
    assert await P.filter(rating=1).update(rating=2) == 5
    assert await P.get_or_none(id=6) is None


async def test_stream_in_pages_and_early_stop(listable: Backend, backend_name: str) -> None:
    s = define(listable)
    P = s.Product
    n = 1200
    await P.insert_many(*({"id": i, "name": f"p{i}", "rating": i % 5} for i in range(n)))
    seen = [p.pk async for p in P.all()]
    assert sorted(seen) == list(range(n))
    async for p in P.filter(rating=3):
        assert p.rating == 3
        break  # the listing is closed (no warning, no leak)
    assert await P.count(rating__gte=3) == 2 * n // 5
    assert await P.filter(rating=2).exists()
    assert ids(await P.order_by("-id").limit(3)) == [n - 1, n - 2, n - 3]
    assert await P.filter(rating=4).delete() == n // 5
    assert await P.count() == 4 * n // 5


async def test_scan_skips_keys_of_other_models(listable: Backend) -> None:
    meta = {"backend": listable, "serializer": "json"}

    class Item(co.Model):
        id = co.IntegerField(primary_key=True)
        Meta = type("Meta", (), meta)

    class ItemArchive(co.Model):  # a name that extends "item": keys "item:archive:<id>"
        id = co.IntegerField(primary_key=True)
        Meta = type("Meta", (), {**meta, "name": "item:archive"})

    class Formatted(co.Model):
        id = co.IntegerField(primary_key=True)
        Meta = type("Meta", (), {**meta, "key_format": "item.%d.v1"})

    class Pair(co.Model):
        a = co.IntegerField()
        b = co.StringField()
        Meta = type("Meta", (), {**meta, "primary_key": co.CompositeKey("a", "b")})

    await Item.insert_many({"id": 1}, {"id": 2})
    await ItemArchive.insert_many({"id": 3})
    await Formatted.insert_many({"id": 4}, {"id": 5})
    await listable.set("item.x.v1", b"not a row")
    assert ids(await Item.all()) == [1, 2]
    assert ids(await ItemArchive.all()) == [3]
    assert ids(await Formatted.all()) == [4, 5]
    await Pair.create(a=7, b="x:y")
    assert ids(await Pair.all()) == [(7, "x:y")]
    assert ids(await Pair.filter(pk=(7, "x:y"))) == [(7, "x:y")]
    assert ids(await Item.all()) == [1, 2]
    # A key of this model's shape that does not hold its row is an error, never skipped.
    await listable.set("item:99", b"garbage")
    with pytest.raises(co.SerializationError, match="item:99"):
        await Item.all()


async def test_reserved_names_and_relation_options() -> None:
    backend = co.SimpleBackend()
    for name in ("filter", "exclude", "all", "count", "first", "order_by", "objects"):
        with pytest.raises(co.ConfigurationError, match="cannot be named"):
            type(
                "Bad",
                (co.Model,),
                {
                    name: co.IntegerField(),
                    "Meta": type("Meta", (), {"backend": backend, "serializer": "json"}),
                },
            )
    meta = type("Meta", (), {"backend": backend, "serializer": "json"})

    class Owner(co.Model):
        id = co.IntegerField(primary_key=True)
        name = co.StringField(default="")
        Meta = meta

    with pytest.raises(co.ConfigurationError, match="clashes"):

        class Pet(co.Model):
            owner = co.ForeignKeyField(Owner, related_name="name")
            Meta = meta

    class Node(co.Model):
        id = co.IntegerField(primary_key=True)
        parent = co.ForeignKeyField("self", null=True, related_name="children")
        later = co.ForeignKeyField("LaterModel", null=True, related_name="nodes")
        Meta = meta

    class LaterModel(co.Model):
        id = co.IntegerField(primary_key=True)
        Meta = meta

    await Node.insert_many({"id": 1}, {"id": 2, "parent": 1}, {"id": 3, "parent": 1, "later": 5})
    root = await Node.get(id=1)
    assert ids(await root.children) == [2, 3]
    assert ids(await LaterModel(id=5).nodes) == [3]


async def test_autofield(backend: Backend, round_trips: RoundTrips) -> None:
    class Player(co.Model):
        id = co.AutoField()
        nick = co.StringField()
        Meta = type("Meta", (), {"backend": backend, "serializer": "msgpack"})

    fresh = Player(nick="new")
    assert fresh.id is None
    one = await Player.create(nick="a")
    two = await Player.insert(nick="b")
    assert (one.id, two.id) == (1, 2)
    round_trips.reset()
    many = await Player.insert_many({"nick": "c"}, {"nick": "d"}, Player(nick="e"))
    assert [p.id for p in many] == [3, 4, 5]
    incrs = [c for c in round_trips.commands() if isinstance(c, Incr)]
    assert incrs == [Incr(incrs[0].key, 3)]  # one step reserves the block
    await fresh.save()  # a new instance: inserted, its id from the counter
    assert fresh.id == 6
    assert (await Player.get(id=6)).nick == "new"
    fresh.nick = "renamed"
    await fresh.save()
    assert (await Player.get(id=6)).nick == "renamed"
    explicit = await Player.create(id=100, nick="x")
    assert explicit.id == 100
    assert (await Player.create(nick="after")).id == 7
    both = await co.insert_many(Player(nick="m1"), Player(nick="m2"))
    assert [p.id for p in both] == [8, 9]
    made = await asyncio.gather(*(Player.create(nick=f"c{i}") for i in range(20)))
    assert sorted(p.id for p in made) == list(range(10, 30))
    with pytest.raises(co.ValidationError):
        Player(id="x", nick="y")
    if backend.capabilities.listable:
        assert len(await Player.all()) == 30  # the counter key is not a row
        assert (await Player.first()).id == 1


async def test_autofield_concurrent_backends(backend_factory: Any, backend_name: str) -> None:
    if backend_name == "memory":
        pytest.skip("two in-process backends are two stores")
    async with backend_factory("autons") as b1, backend_factory("autons") as b2:

        def model(b: Backend) -> type[co.Model]:
            class Ticket(co.Model):
                id = co.AutoField()
                Meta = type("Meta", (), {"backend": b, "serializer": "json"})

            return Ticket

        t1, t2 = model(b1), model(b2)
        try:
            made = await asyncio.gather(
                *(t.insert_many({}, {}) for _ in range(10) for t in (t1, t2))
            )
            got = sorted(obj.id for batch in made for obj in batch)
            assert got == list(range(1, 41))
        finally:
            await b1.clear()


async def test_json_and_list_values(listable: Backend) -> None:
    class Doc(co.Model):
        id = co.IntegerField(primary_key=True)
        data = co.JSONField(null=True)
        Meta = type("Meta", (), {"backend": listable, "serializer": "json"})

    await Doc.insert_many({"id": 1, "data": {"a": 1}}, {"id": 2, "data": 2}, {"id": 3})
    assert ids(await Doc.filter(data__in=[2, 3])) == [2]
    assert ids(await Doc.filter(data={"a": 1})) == [1]
    assert ids(await Doc.filter(data__in=[{"a": 1}])) == [1]
    assert ids(await Doc.filter(data__isnull=True)) == [3]


async def test_keys_without_a_fixed_prefix_are_refused(listable: Backend) -> None:
    meta = {"backend": listable, "serializer": "json"}

    class Loose(co.Model):
        id = co.IntegerField(primary_key=True)
        Meta = type("Meta", (), {**meta, "key_format": "%d"})

    class Called(co.Model):
        id = co.IntegerField(primary_key=True)
        Meta = type("Meta", (), {**meta, "key_format": lambda pk: f"c-{pk}"})

    class CalledNs(co.Model):
        id = co.IntegerField(primary_key=True)
        Meta = type("Meta", (), {**meta, "key_format": lambda pk: f"c-{pk}", "namespace": "own"})

    for model in (Loose, Called):
        await model.create(id=1)
        with pytest.raises(co.ConfigurationError, match="no fixed prefix"):
            await model.all()
        assert (await model.get(id=1)).id == 1
    await CalledNs.insert_many({"id": 1}, {"id": 2})
    assert ids(await CalledNs.filter(id__gte=2)) == [2]


async def test_concurrent_filter_updates_lose_nothing(listable: Backend) -> None:
    s = define(listable)
    P = s.Product
    await P.insert_many(*({"id": i, "name": f"p{i}", "rating": 0} for i in range(1, 11)))
    # 5 tasks add 1 to every matching row, concurrently: each row ends at 5 (no lost update),
    # and rows outside the condition are left alone.
    await P.create(id=11, name="other", rating=None)
    counts = await asyncio.gather(
        *(P.filter(rating__isnull=False).update(rating=P.rating + 1) for _ in range(5))
    )
    assert counts == [10] * 5
    assert {p.rating for p in await P.filter(id__lte=10)} == {5}
    assert (await P.get(id=11)).rating is None


def test_filter_plan_is_sans_io() -> None:
    """A filter's plan lists keys, reads a page, and filters: driven here with canned
    results, no store involved."""
    s = define(co.SimpleBackend())
    P = s.Product
    plan = P.filter(rating=4)._plan()
    step = next(plan)
    assert isinstance(step, Scan) and step.listing.prefix == "shop:product:"
    one, two = P._schema.key((1,)), P._schema.key((2,))
    # the id counter and another model's longer name are skipped without being read
    step = plan.send([one, "shop:product:__autoincrement__", "shop:product:x:1", two])
    [(_, batch)] = step
    assert batch.commands == (Get(one), Get(two))
    rows = [P(id=1, name="a", rating=4), P(id=2, name="b", rating=3)]
    step = plan.send([[P._schema.encode(rows[0]), P._schema.encode(rows[1])]])
    assert isinstance(step, Scan)
    with pytest.raises(StopIteration) as stop:
        plan.send([])
    assert ids(stop.value.value) == [1]
