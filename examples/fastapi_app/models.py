"""The models of the service: users, their articles, and the articles a user collects.

A model names its backend at class definition, and the backend comes from configuration
(``ACACHEORM_URL``), so the classes are made by a function the app factory calls.
"""

from __future__ import annotations

import datetime
import enum
import functools
from typing import Any, NamedTuple

import acacheorm as co


class Gender(enum.IntEnum):
    UNKNOWN = 0
    MALE = 1
    FEMALE = 2


class Models(NamedTuple):
    User: Any
    Article: Any
    Collection: Any


def define_models(backend: co.Backend, serializer: str = "json") -> Models:
    """User, Article and Collection (the models of API.md) stored in ``backend``.

    Example::

        models = define_models(co.backend_from_url("memory://"))
        sam = await models.User.create(id=1, name="Sam", height=1.78)
    """

    # Other names than the Meta options: a class body reads a name it also assigns from the
    # module globals, not from this function.
    store, fmt = backend, serializer

    class Base(co.Model):
        class Meta:
            abstract = True
            backend = store
            serializer = fmt

    class User(Base):
        id = co.IntegerField(primary_key=True, min_value=1)
        name = co.StringField(max_length=64, min_length=1)
        height = co.FloatField(min_value=0)
        married = co.BooleanField(default=False)
        gender = co.EnumField(Gender, default=Gender.UNKNOWN)
        email = co.StringField(null=True, max_length=254)
        phones = co.ListField(co.StringField(max_length=32), default=list, max_items=8)
        created_at = co.DateTimeTZField(
            default=functools.partial(datetime.datetime.now, tz=datetime.UTC)
        )

        class Meta:
            ttl = 24 * 3600

    class Article(Base):
        id = co.IntegerField(primary_key=True, min_value=1)
        author = co.ForeignKeyField(User)
        title = co.StringField(max_length=200)
        content = co.StringField(default="")

    class Collection(Base):
        collector = co.ForeignKeyField(User)
        article = co.ForeignKeyField(Article)
        mark = co.StringField(default="", max_length=64)

        class Meta:
            primary_key = co.CompositeKey("collector", "article")

    return Models(User, Article, Collection)
