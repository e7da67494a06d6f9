"""The walk-through behind ``python -m acacheorm demo``."""

from __future__ import annotations

import datetime
import enum
import functools
from typing import Any

import acacheorm as co


class Gender(enum.IntEnum):
    UNKNOWN = 0
    MALE = 1
    FEMALE = 2


def _say(text: str) -> None:
    print(f"\n» {text}")


DEMO_NAMESPACE = "acacheorm-demo"


async def run_demo(
    backend: co.Backend | str = "memory://",
    serializer: str = "msgpack",
    *,
    keep: bool = False,
    url: str | None = None,
) -> int:
    """The demo on ``backend`` (or a URL, in namespace ``acacheorm-demo``); ``keep`` leaves
    its rows in the store."""
    if isinstance(backend, str):
        url = url or backend
        backend = co.backend_from_url(backend, namespace=DEMO_NAMESPACE)

    User, Article, Collection = define_models(backend, serializer)
    # Fail before the walk-through starts: a serializer that cannot write (pickle without
    # a key) or a store that does not answer.
    User._schema.encode(User(id=0, name="probe", height=1.0))

    async with backend:
        await backend.has("probe")
        print(f"acacheorm {co.__version__} demo on {backend!r} with {serializer}")
        _say("create two users")
        sam = await User.create(
            id=1, name="Sam", height=1.78, email="sam@example.com", phones=["+1 555 0100"]
        )
        kim = await User.create(id=2, name="Kim", height=1.64, gender=Gender.FEMALE)
        print(sam)
        print(kim)

        _say("query by primary key, and several at once (one round trip)")
        print(await User.query(id=1))
        print(await User.query_many(1, 2, 3))
        print("compiled:", User.query_many(1, 2, 3).compile())

        _say("update one field atomically (the other fields and the TTL stay)")
        print(await User.update(id=1, height=1.80, married=True))

        _say("bad input is refused before anything is written")
        try:
            await User.create(id=3, name="X" * 100, height=1.7)
        except co.ValidationError as exc:
            print("ValidationError:", exc)

        _say("articles with a lazy foreign key")
        await Article.insert_many(
            {"id": 10, "author": sam, "title": "Caching without tears"},
            {"id": 11, "author": 2, "title": "Keys and values"},
        )
        article = await Article.get(id=11)
        print(article, "author:", article.author)
        try:
            print(article.author.name)
        except AttributeError as exc:
            print("AttributeError:", exc)
        await article.author.load()
        print("after load():", article.author)

        _say("select_related: every author of every article in one batch")
        for a in await Article.query_many(10, 11).select_related("author"):
            assert a is not None
            print(f"{a.title!r} by {a.author.name}")

        _say("a composite primary key made of two foreign keys")
        col = await Collection.create(collector=kim, article=10, mark="read later")
        print(col, "pk:", col.pk)
        print(await Collection.get(collector=2, article=10).select_related("article__author"))

        _say("delete")
        print("deleted:", await User.delete(id=2))
        print("Kim now:", await User.query(id=2))
        try:
            await User.get(id=2)
        except User.DoesNotExist as exc:
            print("User.DoesNotExist:", exc)
        if not keep:
            await backend.clear()
    if keep:
        _say("the rows are kept")
        if isinstance(backend, co.SimpleBackend):
            print("(memory:// lives in this process only: use --url file:///tmp/demo or redis://…)")
        else:
            from .._urls import redact

            where = redact(url) if url else "URL"
            sep = "&" if "?" in where else "?"
            print(
                f"look at them with:\n  python -m acacheorm inspect '{where}{sep}namespace="
                f"{backend.namespace}' user:1\n  python -m acacheorm stats "
                f"'{where}{sep}namespace={backend.namespace}'"
            )
    print("\ndone.")
    return 0


def define_models(store: co.Backend, fmt: str) -> tuple[Any, Any, Any]:
    """The models of API.md, bound to the chosen backend and serializer."""

    class Base(co.Model):
        class Meta:
            abstract = True
            backend = store
            serializer = fmt

    class User(Base):
        id = co.IntegerField(primary_key=True)
        name = co.StringField(max_length=64)
        height = co.FloatField()
        married = co.BooleanField(default=False)
        gender = co.EnumField(Gender, default=Gender.UNKNOWN)
        email = co.StringField(null=True)
        phones = co.ListField(co.StringField(), default=list)
        created_at = co.DateTimeTZField(
            default=functools.partial(datetime.datetime.now, tz=datetime.UTC)
        )

        class Meta:
            ttl = 3600

    class Article(Base):
        id = co.IntegerField(primary_key=True)
        author = co.ForeignKeyField(User)
        title = co.StringField()
        content = co.StringField(default="")

    class Collection(Base):
        collector = co.ForeignKeyField(User)
        article = co.ForeignKeyField(Article)
        mark = co.StringField(default="")

        class Meta:
            primary_key = co.CompositeKey("collector", "article")

    return User, Article, Collection
