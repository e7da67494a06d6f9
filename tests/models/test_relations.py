"""Foreign keys, select_related, composite keys of foreign keys, cross-model batches."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import acacheorm as co
from acacheorm._commands import Get
from tests.models.conftest import RoundTrips


async def setup_rows(m: SimpleNamespace) -> None:
    await m.User.insert_many(*({"id": i, "name": f"u{i}", "height": 1.0} for i in range(3)))
    await m.Article.insert_many(
        *({"id": 10 + i, "author": i % 3, "title": f"t{i}"} for i in range(6))
    )


async def test_sparse_foreign_key(models: SimpleNamespace) -> None:
    await setup_rows(models)
    article = await models.Article.get(id=11)
    assert article.author_id == 1
    author = article.author
    assert author.is_sparse and author.pk == 1 and author.id == 1
    assert repr(author) == "<User id=1 [sparse]>"
    with pytest.raises(AttributeError, match=r"load\(\)"):
        _ = author.name
    assert await author.load() is author
    assert author.name == "u1" and not author.is_sparse
    assert article.author is author  # loaded in place, cached


async def test_load_of_missing_row_raises(models: SimpleNamespace) -> None:
    await setup_rows(models)
    article = await models.Article.get(id=11)
    await models.User.delete(id=1)
    with pytest.raises(models.User.DoesNotExist):
        await article.author.load()


async def test_assign_instance_or_pk(models: SimpleNamespace, round_trips: RoundTrips) -> None:
    User, Article = models.User, models.Article
    await setup_rows(models)
    u = await User.get(id=2)
    a = Article(id=99, author=u, title="x")
    round_trips.reset()
    assert a.author is u and a.author.name == "u2" and a.author_id == 2
    assert round_trips.count == 0
    a.author = 0
    assert a.author_id == 0 and a.author.is_sparse
    a.author_id = 1
    assert a.author.pk == 1
    with pytest.raises(co.ValidationError):
        a.author = "not an int"
    with pytest.raises(co.ValidationError):
        a.author = None
    with pytest.raises(co.ValidationError):
        a.author = Article(id=1, author=1, title="wrong model")


async def test_field_named_with_id_suffix(backend: co.Backend) -> None:
    class Team(co.Model):
        id = co.IntegerField(primary_key=True)

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    class Player(co.Model):
        id = co.IntegerField(primary_key=True)
        team_id = co.ForeignKeyField(Team)

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    p = Player(id=1, team_id=5)
    assert p.team_id.pk == 5 and p.team_id_id == 5
    assert p.to_dict() == {"id": 1, "team_id": 5}


async def test_null_foreign_key(backend: co.Backend) -> None:
    class Node(co.Model):
        id = co.IntegerField(primary_key=True)
        parent = co.ForeignKeyField("self", null=True)

        class Meta:
            backend = co.SimpleBackend()
            serializer = "msgpack"

    await Node.create(id=1)
    await Node.create(id=2, parent=1)
    root, child = await Node.query_many(1, 2).select_related("parent")
    assert root.parent is None and root.parent_id is None
    assert child.parent == root and not child.parent.is_sparse


async def test_select_related_one_batch_per_level(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    Article, Collection = models.Article, models.Collection
    await setup_rows(models)
    round_trips.reset()
    articles = await Article.query_many(*range(10, 16), 999).select_related("author")
    assert round_trips.count == 2
    assert articles[-1] is None
    assert [a.author.name for a in articles[:-1]] == [f"u{i % 3}" for i in range(6)]
    gets = [c for c in round_trips.commands() if isinstance(c, Get)]
    assert len(gets) == 7 + 3  # 3 distinct authors, not 6

    await Collection.insert_many(*({"collector": i % 3, "article": 10 + i} for i in range(6)))
    round_trips.reset()
    cols = await Collection.query_many(*((i % 3, 10 + i) for i in range(6))).select_related(
        "collector", "article__author"
    )
    assert round_trips.count == 3
    assert [c.article.author.name for c in cols] == [f"u{i % 3}" for i in range(6)]
    assert [c.collector.name for c in cols] == [f"u{i % 3}" for i in range(6)]


async def test_select_related_missing_row_stays_sparse(models: SimpleNamespace) -> None:
    await setup_rows(models)
    await models.User.delete(id=1)
    article = await models.Article.get(id=11).select_related("author")
    assert article.author.is_sparse and "[missing]" in repr(article.author)
    with pytest.raises(AttributeError, match="not found"):
        _ = article.author.name


async def test_select_related_bad_path(models: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="not a foreign key"):
        models.Article.query_many(1).select_related("title")
    with pytest.raises(ValueError, match="not a foreign key"):
        models.Article.get(id=1).select_related("author__name")


async def test_composite_key_of_foreign_keys(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    Collection = models.Collection
    await setup_rows(models)
    u = await models.User.get(id=2)
    round_trips.reset()
    c = Collection(collector=u, article=12, mark="m")
    assert c.pk == (2, 12) and hash(c) == hash(Collection(collector=2, article=12))
    assert c == Collection(collector=2, article=12)
    assert round_trips.count == 0
    await c.save(force_insert=True)
    got = await Collection.get(collector=2, article=12)
    assert got.mark == "m" and got.article_id == 12
    assert await Collection.get_by_id((2, 12)) == got
    assert await Collection.get_by_id({"collector": 2, "article": 12}) == got
    assert await Collection.query_many((2, 12), (0, 0)) == [got, None]
    assert (await Collection.update(collector=2, article=12, mark="n")).mark == "n"
    assert await Collection.delete(collector=u, article=12) is True


async def test_cross_model_batches(models: SimpleNamespace, round_trips: RoundTrips) -> None:
    User, Article, Collection = models.User, models.Article, models.Collection
    u = User(id=1, name="a", height=1.0)
    a = Article(id=5, author=u, title="t")
    c = Collection(collector=u, article=a)
    round_trips.reset()
    written = await co.insert_many(u, a, c)
    assert written == [u, a, c]
    assert round_trips.count == 1  # all three models share this backend
    round_trips.reset()
    got = await co.query_many((Article, 5), (User, 1), (User, 404), (Collection, (1, 5)))
    assert got == [a, u, None, c]
    assert round_trips.count == 1
    round_trips.reset()
    assert await co.delete_many(a, (User, 1), (User, 404)) == 2
    assert round_trips.count == 1
    assert await co.query_many((Article, 5), (User, 1)) == [None, None]


async def test_prefetch(models: SimpleNamespace, round_trips: RoundTrips) -> None:
    await setup_rows(models)
    articles = await models.Article.query_many(10, 11, 12)
    round_trips.reset()
    await co.prefetch(articles, "author")
    assert round_trips.count == 1
    assert [a.author.name for a in articles] == ["u0", "u1", "u2"]


async def test_issue_figures_round_trips(models: SimpleNamespace, round_trips: RoundTrips) -> None:
    """1,000 articles by 50 authors with select_related("author") = 2 round trips; two
    levels = 3; a mixed-model insert_many across two backends = 2."""
    User, Article, Collection = models.User, models.Article, models.Collection
    await User.insert_many(*({"id": i, "name": f"u{i}", "height": 1.0} for i in range(50)))
    await Article.insert_many(*({"id": i, "author": i % 50, "title": f"t{i}"} for i in range(1000)))
    round_trips.reset()
    articles = await Article.query_many(*range(1000)).select_related("author")
    assert round_trips.count == 2
    assert all(a.author.name == f"u{a.id % 50}" for a in articles)

    await Collection.insert_many(*({"collector": i % 50, "article": i} for i in range(1000)))
    round_trips.reset()
    cols = await Collection.query_many(*((i % 50, i) for i in range(1000))).select_related(
        "article__author"
    )
    assert round_trips.count == 3
    assert all(c.article.author.id == c.article.id % 50 for c in cols)

    class Note(co.Model):
        id = co.IntegerField(primary_key=True)
        user = co.ForeignKeyField(User)

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    round_trips.reset()
    users = [User(id=100 + i, name="n", height=1.0) for i in range(10)]
    notes = [Note(id=i, user=u) for i, u in enumerate(users)]
    arts = [Article(id=5000 + i, author=u, title="x") for i, u in enumerate(users)]
    await co.insert_many(*[x for trio in zip(users, notes, arts, strict=True) for x in trio])
    assert round_trips.count == 2
    assert {e.backend for e in round_trips.events} == {models.backend, Note._schema.backend}
