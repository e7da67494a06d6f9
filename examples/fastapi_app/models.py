"""The models of the service: users, their articles, and the articles a user collects.

They are ordinary module-level classes: their backend is the one configured under the name
``"blog"`` at start-up (``co.lifespan(blog=url)`` in the app, ``co.backends.override`` in
tests), so this module imports before anything is configured, type checkers see each
model's fields, and the command line takes them (``python -m acacheorm migrate URL
examples.fastapi_app.models:User``).
"""

from __future__ import annotations

import datetime
import enum

import acacheorm as co

#: The name the models' backend is configured under.
BACKEND = "blog"


class Gender(enum.IntEnum):
    UNKNOWN = 0
    MALE = 1
    FEMALE = 2


class Base(co.Model):
    class Meta:
        abstract = True
        backend = BACKEND
        serializer = "json"


class User(Base):
    id: int = co.IntegerField(primary_key=True, min_value=1)
    name: str = co.StringField(max_length=64, min_length=1)
    height: float = co.FloatField(min_value=0)
    married: bool = co.BooleanField(default=False)
    gender: Gender = co.EnumField(Gender, default=Gender.UNKNOWN)
    email: str | None = co.StringField(null=True, max_length=254, default=None)
    phones: list[str] = co.ListField(co.StringField(max_length=32), default=list, max_items=8)
    created_at: datetime.datetime = co.DateTimeTZField(auto_now_add=True)

    class Meta:
        ttl = 24 * 3600


class Article(Base):
    id: int = co.IntegerField(primary_key=True, min_value=1)
    author: User = co.ForeignKeyField(User)
    title: str = co.StringField(max_length=200)
    content: str = co.StringField(default="")


class Collection(Base):
    collector: User = co.ForeignKeyField(User)
    article: Article = co.ForeignKeyField(Article)
    mark: str = co.StringField(default="", max_length=64)

    class Meta:
        primary_key = co.CompositeKey("collector", "article")
