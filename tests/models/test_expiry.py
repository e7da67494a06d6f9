"""Row expiry: touch() and remaining_ttl(), on every backend, in one round trip each."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from acacheorm._commands import MISSING, Batch, Touch, Ttl
from tests.backends.test_conformance import eventually
from tests.models.conftest import RoundTrips


async def test_touch_sets_the_remaining_lifetime_in_one_round_trip(
    models: SimpleNamespace, round_trips: RoundTrips
) -> None:
    User = models.User
    await User.create(id=1, name="Sam", height=1.7, ttl=30)
    round_trips.reset()
    assert await User.touch(id=1, ttl=600) is True
    assert round_trips.count == 1
    assert [type(c) for c in round_trips.commands()] == [Touch]
    round_trips.reset()
    left = await User.remaining_ttl(id=1)
    assert round_trips.count == 1
    assert [type(c) for c in round_trips.commands()] == [Ttl]
    assert isinstance(left, float)
    assert 30 < left <= 600  # longer than the 30 s it was written with


async def test_instance_touch_and_no_expiry(models: SimpleNamespace) -> None:
    User = models.User
    sam = await User.create(id=1, name="Sam", height=1.7)
    # Meta.ttl = 3600 applies to writes
    left = await User.remaining_ttl(id=1)
    assert left is not None and 3000 < left <= 3600
    assert await sam.touch(ttl=None) is True
    assert await User.remaining_ttl(id=1) is None
    assert await sam.touch(ttl=120) is True
    left = await User.remaining_ttl(id=1)
    assert left is not None and 0 < left <= 120
    # without ttl=, the model's Meta.ttl
    assert await sam.touch() is True
    left = await User.remaining_ttl(id=1)
    assert left is not None and 120 < left <= 3600
    assert (await User.get(id=1)).name == "Sam"  # the value is untouched


async def test_touch_of_a_missing_row_creates_nothing(models: SimpleNamespace) -> None:
    User = models.User
    assert await User.touch(id=404, ttl=60) is False
    assert await User.get_or_none(id=404) is None
    with pytest.raises(User.DoesNotExist, match="User with id=404"):
        await User.remaining_ttl(id=404)


async def test_update_keeps_the_touched_lifetime(models: SimpleNamespace) -> None:
    User = models.User
    await User.create(id=1, name="Sam", height=1.7, ttl=None)
    await User.touch(id=1, ttl=200)
    await User.update(id=1, name="Kim")
    left = await User.remaining_ttl(id=1)
    assert left is not None and 0 < left <= 200


async def test_composite_key_rows(models: SimpleNamespace) -> None:
    User, Article, Collection = models.User, models.Article, models.Collection
    await User.create(id=1, name="Sam", height=1.7)
    await Article.create(id=7, author=1, title="t")
    await Collection.create(collector=1, article=7)
    assert await Collection.remaining_ttl(collector=1, article=7) is None
    assert await Collection.touch(collector=1, article=7, ttl=50) is True
    left = await Collection.remaining_ttl(collector=1, article=7)
    assert left is not None and 0 < left <= 50


async def test_raw_ttl_command(models: SimpleNamespace) -> None:
    backend = models.backend
    await backend.set("forever", b"1")
    await backend.set("soon", b"1", ttl=100)
    forever, soon, absent = await backend.execute(
        Batch((Ttl("forever"), Ttl("soon"), Ttl("absent")))
    )
    assert forever is None
    assert isinstance(soon, float) and 0 < soon <= 100
    assert absent is MISSING

    await backend.set("brief", b"1", ttl=1)

    async def expired() -> bool:
        [left] = await backend.execute(Batch((Ttl("brief"),)))
        assert left is MISSING or isinstance(left, float)
        return left is MISSING

    await eventually(expired)  # an expired key is missing, not "0 seconds left"


def test_bad_calls_are_type_errors_naming_the_model(models: SimpleNamespace) -> None:
    User = models.User
    with pytest.raises(TypeError, match=r"User\.touch\(\) takes only the primary key"):
        User.touch(id=1, name="x", ttl=5)
    with pytest.raises(TypeError, match=r"User\.remaining_ttl\(\).*User\.remaining_ttl\(id=1\)"):
        User.remaining_ttl(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        User.touch(id=1, ttl=-1)
    sam = User(id=1, name="Sam", height=1.7)
    with pytest.raises(TypeError, match="on an instance takes only ttl="):
        sam.touch(id=2, ttl=5)
