"""A small typed user module: ``mypy --strict tests/test_typing.py`` checks what a type
checker sees (it runs in the README test command); pytest also imports and runs it."""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import assert_type

import acacheorm as co


class User(co.Model):
    id = co.IntegerField(primary_key=True)
    name = co.StringField(max_length=64)
    height = co.FloatField()
    married = co.BooleanField(default=False)
    price = co.DecimalField(default=decimal.Decimal(0))
    token = co.UUIDField(default=uuid.uuid4)
    seen = co.DateTimeTZField(default=lambda: datetime.datetime.now(datetime.UTC))
    phones = co.ListField(co.StringField(), default=list)

    class Meta:
        backend = co.SimpleBackend()
        serializer = "json"


class Article(co.Model):
    id = co.IntegerField(primary_key=True)
    author = co.ForeignKeyField(User)

    class Meta:
        backend = co.SimpleBackend()
        serializer = "json"


async def typed_usage() -> None:
    user = await User.create(id=1, name="Sam", height=1.8)
    assert_type(user, User)
    assert_type(user.name, str)
    assert_type(user.height, float)
    assert_type(user.married, bool)
    assert_type(user.price, decimal.Decimal)
    assert_type(user.token, uuid.UUID)
    assert_type(user.seen, datetime.datetime)
    assert_type(user.phones, list[str])
    assert_type(User.name, co.StringField)
    assert_type(await User.get(id=1), User)
    assert_type(await User.get_by_id(1), User)
    assert_type(await User.query(id=1), User | None)
    assert_type(await User.get_or_none(id=1), User | None)
    assert_type(await User.query_many(1, 2), list[User | None])
    assert_type(await User.insert_many({"id": 2, "name": "K", "height": 1.0}), list[User])
    assert_type(await User.update(id=1, height=1.9), User | None)
    assert_type(await User.set_by_id(1, {"height": 2.0}), User)
    assert_type(
        await User.get_or_create(id=3, defaults={"name": "x", "height": 1.0}), tuple[User, bool]
    )
    assert_type(await User.delete(id=3), bool)
    article = await Article.create(id=1, author=user)
    assert_type(article.author, User)
    assert_type(await article.author.load(), User)
    assert_type(await user.save(), User)
    assert_type(await user.refresh(), User)
    assert_type(await User.delete_many(1, 2), int)
    await User.create(id=5, name="Sam", height=1.8)
    assert_type(await User.filter(name="Sam").order_by("-height").limit(5), list[User])
    assert_type(await User.filter(User.height > 1.5).count(), int)
    assert_type(await User.exclude(married=True).exists(), bool)
    assert_type(await User.first(name="Sam"), User | None)
    assert_type(await User.get(name="Sam"), User)
    assert_type(await User.filter(name="Sam").update(height=1.7), int)
    assert_type(
        await User.update_or_create(name="Sam", defaults={"height": 1.7}), tuple[User, bool]
    )
    async for found in User.filter(married=False):
        assert_type(found, User)


async def test_typed_usage_runs() -> None:
    await typed_usage()
