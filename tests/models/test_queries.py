"""Every query method's happy path and error path, on every backend."""

from __future__ import annotations

import asyncio
import datetime
from types import SimpleNamespace

import pytest

import acacheorm as co
from acacheorm._commands import Get, Set
from acacheorm.cli._demo import Gender
from tests.backends.test_conformance import eventually
from tests.models.conftest import RoundTrips


def user_row(i: int, **extra: object) -> dict[str, object]:
    return {"id": i, "name": f"user{i}", "height": 1.5 + i / 100, **extra}


async def test_create_get_query(models: SimpleNamespace) -> None:
    User = models.User
    sam = await User.create(id=1, name="Sam", height=1.78, email="s@x", phones=["1", "2"])
    assert isinstance(sam, User)
    got = await User.get(id=1)
    assert got == sam
    assert got.to_dict() == sam.to_dict()
    assert got.phones == ["1", "2"]
    assert got.gender is Gender.UNKNOWN
    assert got.created_at == sam.created_at
    assert got.created_at.tzinfo is not None
    assert await User.query(id=1) == sam
    assert await User.get_or_none(id=1) == sam
    assert await User.get_by_id(1) == sam
    assert await User.query(id=2) is None
    assert await User.get_or_none(id=2) is None


async def test_get_missing_raises_model_does_not_exist(models: SimpleNamespace) -> None:
    User = models.User
    with pytest.raises(User.DoesNotExist) as info:
        await User.get(id=404)
    assert isinstance(info.value, co.DoesNotExist)
    assert "404" in str(info.value)
    with pytest.raises(User.DoesNotExist):
        await User.get_by_id(404)
    assert not issubclass(models.Article.DoesNotExist, User.DoesNotExist)


async def test_non_key_keywords_are_type_errors(models: SimpleNamespace) -> None:
    User = models.User
    # get/get_or_none take filters (tests/models/test_filter.py); these take the key only.
    for method in (User.query, User.delete):
        with pytest.raises(TypeError, match="not filters"):
            method(id=1, name="Sam")


async def test_insert_and_insert_many(models: SimpleNamespace, round_trips: RoundTrips) -> None:
    User = models.User
    one = await User.insert(**user_row(1))
    assert await User.get(id=1) == one
    obj = User(**user_row(3))
    round_trips.reset()
    rows = await User.insert_many(user_row(2), obj, *(user_row(i) for i in range(10, 110)))
    assert round_trips.count == 1
    assert len(rows) == 102 and rows[1] is obj
    got = await User.query_many(*range(10, 110))
    assert [u.name for u in got] == [f"user{i}" for i in range(10, 110)]


async def test_insert_overwrites(models: SimpleNamespace) -> None:
    User = models.User
    await User.create(**user_row(1))
    await User.create(id=1, name="new", height=2.0)
    assert (await User.get(id=1)).name == "new"


async def test_query_many_order_and_misses(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    User = models.User
    await User.insert_many(*(user_row(i) for i in range(5)))
    round_trips.reset()
    got = await User.query_many(4, 99, 0, 0, {"id": 2})
    assert round_trips.count == 1
    assert [u.id if u else None for u in got] == [4, None, 0, 0, 2]
    assert await User.query_many() == []


async def test_update_changes_only_given_fields(models: SimpleNamespace) -> None:
    User = models.User
    await User.create(**user_row(1, email="a@b", phones=["x"]))
    updated = await User.update(id=1, height=2.0, married=True)
    assert updated.height == 2.0 and updated.married is True
    stored = await User.get(id=1)
    assert (stored.name, stored.email, stored.phones, stored.height) == ("user1", "a@b", ["x"], 2.0)


async def test_update_missing_row_returns_none_and_never_creates(
    models: SimpleNamespace,
) -> None:
    User = models.User
    assert await User.update(id=7, height=1.0) is None
    assert await User.query(id=7) is None
    with pytest.raises(User.DoesNotExist):
        await User.set_by_id(7, {"height": 1.0})
    assert await User.query(id=7) is None


async def test_update_validates_before_anything_is_sent(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    User = models.User
    await User.create(**user_row(1))
    round_trips.reset()
    with pytest.raises(co.ValidationError) as info:
        User.update(id=1, height="tall")
    assert "User.height" in str(info.value) and "tall" in str(info.value)
    with pytest.raises(TypeError, match="no field"):
        User.update(id=1, colour="red")
    with pytest.raises(TypeError, match="primary key"):
        User.update(height=1.0)
    with pytest.raises(TypeError, match="primary key"):
        User.set_by_id(1, {"id": 2})
    assert round_trips.count == 0
    assert (await User.get(id=1)).height == user_row(1)["height"]


async def test_update_keeps_remaining_ttl(models: SimpleNamespace) -> None:
    User = models.User
    await User.create(**user_row(1), ttl=1)
    await User.update(id=1, height=3.0)
    assert (await User.get(id=1)).height == 3.0

    async def expired() -> bool:
        return await User.query(id=1) is None

    await eventually(expired)


async def test_update_with_ttl_sets_new_ttl(models: SimpleNamespace) -> None:
    User = models.User
    await User.create(**user_row(1), ttl=1)
    await User.create(**user_row(2), ttl=1)
    await User.update(id=1, height=3.0, ttl=None)

    async def expired() -> bool:
        return await User.query(id=2) is None

    await eventually(expired)
    assert (await User.get(id=1)).height == 3.0


async def test_update_many_and_set_by_id(models: SimpleNamespace) -> None:
    User = models.User
    await User.insert_many(user_row(1), user_row(2))
    got = await User.update_many(
        {"id": 1, "name": "one"}, {"id": 3, "name": "three"}, {"id": 2, "married": True}
    )
    assert got[0].name == "one" and got[1] is None and got[2].married is True
    assert await User.query(id=3) is None
    u = await User.set_by_id(2, {"height": 1.99})
    assert u.height == 1.99 and u.married is True


async def test_update_expression_is_atomic(models: SimpleNamespace) -> None:
    User = models.User
    await User.create(**user_row(1, height=0.0))

    async def bump() -> None:
        for _ in range(5):
            await User.update(id=1, height=User.height + 1)

    await asyncio.gather(*(bump() for _ in range(10)))
    assert (await User.get(id=1)).height == 50.0


async def test_concurrent_updates_of_different_fields_are_all_kept(
    models: SimpleNamespace,
) -> None:
    User = models.User
    await User.create(**user_row(1))

    async def set_name(i: int) -> None:
        await User.update(id=1, name=f"n{i}")

    await asyncio.gather(
        User.update(id=1, email="e@x"),
        User.update(id=1, married=True),
        User.update(id=1, phones=["p"]),
        *(set_name(i) for i in range(5)),
    )
    got = await User.get(id=1)
    assert (got.email, got.married, got.phones) == ("e@x", True, ["p"])


async def test_update_racing_delete_never_resurrects(models: SimpleNamespace) -> None:
    User = models.User
    for round_ in range(5):
        await User.create(**user_row(1))
        await asyncio.gather(
            *(User.update(id=1, height=float(i)) for i in range(5)),
            User.delete(id=1),
            *(User.update(id=1, name="x") for _ in range(5)),
        )
        assert await User.query(id=1) is None, f"resurrected in round {round_}"


async def test_get_or_create(models: SimpleNamespace) -> None:
    User = models.User
    user, created = await User.get_or_create(id=1, defaults={"name": "a", "height": 1.0})
    assert created is True and user.name == "a"
    again, created = await User.get_or_create(id=1, defaults={"name": "b", "height": 2.0})
    assert created is False and again.name == "a"
    with pytest.raises(co.ValidationError):
        User.get_or_create(id=2, defaults={"name": 5, "height": 1.0})
    assert await User.query(id=2) is None


async def test_get_or_create_race_has_one_winner(models: SimpleNamespace) -> None:
    User = models.User
    results = await asyncio.gather(
        *(
            User.get_or_create(id=5, defaults={"name": f"racer{i}", "height": 1.0})
            for i in range(20)
        )
    )
    created = [u for u, c in results if c]
    assert len(created) == 1
    assert {u.name for u, _ in results} == {created[0].name}


async def test_delete_variants(models: SimpleNamespace) -> None:
    User = models.User
    await User.insert_many(*(user_row(i) for i in range(6)))
    assert await User.delete(id=0) is True
    assert await User.delete(id=0) is False
    assert await User.delete_by_id(1) is True
    with pytest.raises(User.DoesNotExist):
        await User.delete_by_id(1)
    assert await User.delete_many(2, 3, 3, 99) == 2
    u = await User.get(id=4)
    assert await u.delete_instance() is True
    assert await u.delete_instance() is False
    assert await User.query_many(0, 1, 2, 3, 4, 5) == [None] * 5 + [await User.get(id=5)]


async def test_save_and_refresh(models: SimpleNamespace) -> None:
    User = models.User
    u = User(**user_row(1))
    with pytest.raises(User.DoesNotExist):
        await u.save()
    assert await User.query(id=1) is None
    await u.save(force_insert=True)
    u.height = 2.5
    await u.save()
    assert (await User.get(id=1)).height == 2.5
    await User.update(id=1, name="changed")
    assert u.name == "user1"
    await u.refresh()
    assert u.name == "changed"
    await User.delete(id=1)
    with pytest.raises(User.DoesNotExist):
        await u.refresh()


async def test_ttl_meta_and_per_call(models: SimpleNamespace) -> None:
    User = models.User
    assert User._schema.ttl == 3600
    await User.create(**user_row(1), ttl=1)
    await User.create(**user_row(2), ttl=datetime.timedelta(hours=1))
    await User.insert_many(user_row(3), ttl=None)

    async def expired() -> bool:
        return await User.query(id=1) is None

    await eventually(expired)
    assert [u is not None for u in await User.query_many(2, 3)] == [True, True]


@pytest.mark.parametrize("ttl", [0, -5, datetime.timedelta(0)])
async def test_bad_ttl_is_value_error(models: SimpleNamespace, ttl: object) -> None:
    User = models.User
    with pytest.raises(ValueError):
        User.create(**user_row(1), ttl=ttl)
    with pytest.raises(ValueError):
        User.insert_many(user_row(1), ttl=ttl)
    with pytest.raises(ValueError):
        User.update(id=1, height=1.0, ttl=ttl)
    assert await User.query(id=1) is None


async def test_queries_are_immutable_values_and_compile_without_io(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    User, Article = models.User, models.Article
    q = Article.query_many(1, 2)
    q2 = q.select_related("author")
    assert q is not q2 and q.related == () and q2.related == ("author",)
    [(backend, batch)] = User.query_many(1, 2, 3).compile()
    assert backend is models.backend
    assert [type(c) for c in batch.commands] == [Get, Get, Get]
    assert [c.key for c in batch.commands] == ["user:1", "user:2", "user:3"]
    [(_, batch)] = User.insert_many(user_row(1), user_row(2), ttl=60).compile()
    assert [type(c) for c in batch.commands] == [Set, Set]
    assert batch.commands[0].ttl == 60.0
    assert round_trips.count == 0
    assert await User.query(id=1) is None
    q3 = User.create(**user_row(9))
    assert await User.query(id=9) is None  # nothing happens before await
    await q3
    assert await User.query(id=9) is not None
    assert await q3.execute() == await User.get(id=9)


async def test_corrupt_payload_names_key_and_model(models: SimpleNamespace) -> None:
    User = models.User
    backend = models.backend
    for junk in (b"garbage", b"\xac\x01", b"\xac\x09\x00\x02\x00\x00{}", b""):
        await backend.set("user:1", junk)
        with pytest.raises(co.SerializationError) as info:
            await User.get(id=1)
        assert info.value.key == "user:1" and info.value.model == "User"
        assert "user:1" in str(info.value)


async def test_payload_of_same_header_but_truncated(models: SimpleNamespace) -> None:
    User = models.User
    await User.create(**user_row(1))
    good = await models.backend.get("user:1")
    assert good is not None
    await models.backend.set("user:1", good[: len(good) // 2])
    with pytest.raises(co.SerializationError):
        await User.get(id=1)
