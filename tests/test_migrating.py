"""What docs/migrating.md says about porting cacheorm code, checked: cacheorm's own field
tests that needed the field options, ported; ``incr(ttl=)`` on an existing key on every
backend; primary key errors; ``pk``; ``abstract``; options that are gone; long memcached
keys."""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

import pytest

import acacheorm as co
from acacheorm.backends.base import Backend
from tests.backends.test_conformance import gone
from tests.conftest import BACKENDS

UTC = datetime.UTC


def base_model(store: Backend) -> Any:
    class BaseModel(co.Model):
        id = co.ShortUUIDField(primary_key=True, default=uuid.uuid4)

        class Meta:
            abstract = True
            backend = store
            serializer = "json"
            ttl = 60

    return BaseModel


# -- cacheorm's tests of the field options, ported ------------------------------------------


@pytest.mark.parametrize("backend_name", [b for b in ("memory", "redis") if b in BACKENDS])
async def test_cacheorm_decimal_field(backend: Backend) -> None:
    class DecimalModel(base_model(backend)):  # type: ignore[misc]
        value = co.DecimalField(decimal_places=2, auto_round=True)
        value_up = co.DecimalField(
            decimal_places=2, auto_round=True, rounding=decimal.ROUND_UP, null=True
        )

    d1 = await DecimalModel.create(value=decimal.Decimal("3"))
    d2 = await DecimalModel.create(value=-3.14)
    d3 = await DecimalModel.create(value=0)
    values = [(r.value, r.value_up) for r in await DecimalModel.query_many(d1.id, d2.id, d3.id)]
    assert values == [
        (decimal.Decimal("3"), None),
        (decimal.Decimal("-3.14"), None),
        (decimal.Decimal("0"), None),
    ]
    d1 = await DecimalModel.create(
        value=decimal.Decimal("1.2345"), value_up=decimal.Decimal("1.2345")
    )
    d2 = await DecimalModel.create(value=6.789)
    values = [(r.value, r.value_up) for r in await DecimalModel.query_many(d1.id, d2.id)]
    assert values == [
        (decimal.Decimal("1.23"), decimal.Decimal("1.24")),
        (decimal.Decimal("6.79"), None),
    ]


@pytest.mark.parametrize("backend_name", [b for b in ("memory", "redis") if b in BACKENDS])
async def test_cacheorm_date_time_custom_format(backend: Backend) -> None:
    class CustomDateTimeModel(base_model(backend)):  # type: ignore[misc]
        dt = co.DateTimeField(formats=["%m/%d/%Y %I:%M %p", "%Y-%m-%d %H:%M:%S"])

    m = await CustomDateTimeModel.create(dt="01/01/2020 10:11 AM")
    m_cache = await CustomDateTimeModel.get_by_id(m.id)
    assert m_cache.dt == datetime.datetime(2020, 1, 1, 10, 11, 0)
    with pytest.raises(ValueError, match="formats"):
        await CustomDateTimeModel.create(dt="2020 01 01")


@pytest.mark.parametrize("backend_name", [b for b in ("memory", "redis") if b in BACKENDS])
async def test_cacheorm_timestamp_field(backend: Backend) -> None:
    """As in docs/migrating.md: aware datetimes in and out, naive ones with utc=True."""

    class TSModel(base_model(backend)):  # type: ignore[misc]
        s = co.TimestampField(resolution=1)
        ms = co.TimestampField(resolution=3)
        us = co.TimestampField(resolution=10**6)
        utc = co.TimestampField(null=True, utc=True)

    dt = datetime.datetime(2020, 1, 1, 10, 11, 12).replace(microsecond=12345)
    aware = dt.replace(tzinfo=UTC)
    ts = await TSModel.create(s=aware, ms=aware, us=aware, utc=dt)
    got = await TSModel.get_by_id(ts.id)
    assert got.s == got.utc.replace(microsecond=0) == aware.replace(microsecond=0)
    assert got.ms == aware.replace(microsecond=12000)
    assert got.us == aware
    with pytest.raises(co.ValidationError, match="utc=True"):
        await TSModel.create(s=dt, ms=aware, us=aware)  # a naive datetime: which instant?


# -- incr and the TTL -----------------------------------------------------------------------


async def test_incr_ttl_applies_only_when_it_creates_the_key(backend: Backend) -> None:
    await backend.set("kept", b"1", ttl=None)
    await backend.set("short", b"1", ttl=1)
    assert await backend.incr("kept", 1, ttl=1) == 2  # existing, no TTL: still none
    assert await backend.incr("short", 1, ttl=None) == 2  # existing, 1 s: still 1 s
    assert await backend.decr("short", 5, ttl=None) == -3  # (memcached: the CAS path)
    assert await backend.incr("new", 5, ttl=1) == 5  # created: the TTL applies
    await gone(backend, "short")
    await gone(backend, "new")  # expires no earlier than "kept" would have, had incr reset it
    assert await backend.get("kept") == b"2"


# -- primary keys, pk, abstract, options that are gone --------------------------------------


def collection_model() -> Any:
    class Collection(co.Model):
        given = co.StringField()
        family = co.StringField()
        data = co.StringField()

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"
            primary_key = co.CompositeKey("given", "family", key_format="test.%s.%s")

    return Collection


async def test_wrong_primary_keys_are_type_errors() -> None:
    Collection = collection_model()
    await Collection.create(given="a", family="b", data="c")
    for call in (
        lambda: Collection.get(given="a", family="b", extra=1),
        lambda: Collection.get_by_id(("a",)),
        lambda: Collection.get_by_id(("a", "b", "c")),
        lambda: Collection.get_by_id({}),
        lambda: Collection.get_by_id("a"),
        lambda: Collection.delete_by_id(("a",)),
    ):
        with pytest.raises(TypeError):
            await call()
    # A part of the key alone is a query by field (cacheorm refused it as a wrong key).
    assert (await Collection.get(given="a")).data == "c"
    with pytest.raises(co.ValidationError):
        await Collection.get_by_id(("a", 1))  # a value of the wrong type: ValidationError


async def test_pk_replaces_get_id_and_is_read_only() -> None:
    Collection = collection_model()
    c = await Collection.create(given="a", family="b", data="c")
    assert c.pk == ("a", "b")
    with pytest.raises(AttributeError):
        c.pk = ("e", "f")  # type: ignore[misc]
    c.given, c.family = "e", "f"
    await c.save(force_insert=True)
    assert (await Collection.get_by_id(("e", "f"))).data == "c"
    assert (await Collection.get_by_id(("a", "b"))).data == "c"


def test_abstract_base_and_unknown_meta_options() -> None:
    store = co.SimpleBackend()

    class SharedBase(co.Model):
        created = co.IntegerField(default=0)

        class Meta:
            abstract = True
            backend = store
            serializer = "json"

    with pytest.raises(co.ConfigurationError, match="SharedBase is abstract"):
        SharedBase._schema  # noqa: B018
    with pytest.raises(LookupError):
        co.ForeignKeyField("SharedBase").rel_model  # noqa: B018

    class Tag(SharedBase):
        id = co.IntegerField(primary_key=True)

    assert list(Tag._schema.fields) == ["created", "id"] and Tag._schema.backend is store

    with pytest.raises(co.ConfigurationError, match="unknown option 'colour'"):

        class Bad(co.Model):
            class Meta:
                backend = store
                serializer = "json"
                colour = "red"


def test_gone_options_are_type_errors() -> None:
    with pytest.raises(TypeError):
        co.BinaryField(ensure_str=False)  # type: ignore[call-arg]

    class User(co.Model):
        id = co.IntegerField(primary_key=True)
        sub_user = co.ForeignKeyField("self", null=True)

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    with pytest.raises(TypeError):
        co.ForeignKeyField(User, object_id_name="sub")  # type: ignore[call-arg]
    assert User(id=1, sub_user_id=2).sub_user_id == 2


# -- memcached keys -------------------------------------------------------------------------


@pytest.mark.parametrize("backend_name", [b for b in ("memcached",) if b in BACKENDS])
async def test_long_memcached_keys_are_stored(backend: Backend) -> None:
    store = backend

    class Page(co.Model):
        url = co.StringField(primary_key=True)
        body = co.StringField()

        class Meta:
            backend = store
            serializer = "json"

    url = "https://example.com/" + "x" * 400
    await Page.create(url=url, body="hello")
    assert (await Page.get(url=url)).body == "hello"
    assert (await Page.query_many(url, "short"))[0] is not None
