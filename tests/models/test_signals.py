"""pre/post save/delete signals on every write path."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import acacheorm as co


@pytest.fixture
def calls(models: SimpleNamespace) -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    log: list[tuple[str, Any, dict[str, Any]]] = []
    receivers = []
    for signal in (co.pre_save, co.post_save, co.pre_delete, co.post_delete):

        def receiver(sender: type, instance: Any, _s: co.Signal = signal, **kw: Any) -> None:
            log.append((_s.name, instance.pk, kw))

        signal.connect(receiver, sender=models.User)
        receivers.append((signal, receiver))
    yield log
    for signal, receiver in receivers:
        assert signal.disconnect(receiver, sender=models.User)


def row(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"u{i}", "height": 1.0}


async def test_every_write_path_sends(models: SimpleNamespace, calls: list[Any]) -> None:
    User = models.User
    await User.create(**row(1))
    assert calls == [("pre_save", 1, {}), ("post_save", 1, {"created": True})]
    calls.clear()
    await User.insert(**row(2))
    await User.insert_many(row(3), row(4))
    assert [c[:2] for c in calls] == [
        ("pre_save", 2),
        ("post_save", 2),
        ("pre_save", 3),
        ("pre_save", 4),
        ("post_save", 3),
        ("post_save", 4),
    ]
    calls.clear()
    await User.update(id=1, height=2.0)
    await User.update_many({"id": 2, "height": 2.0})
    await User.set_by_id(3, {"height": 2.0})
    u = await User.get(id=4)
    await u.save()
    assert [c[:2] for c in calls] == [
        ("pre_save", 1),
        ("post_save", 1),
        ("pre_save", 2),
        ("post_save", 2),
        ("pre_save", 3),
        ("post_save", 3),
        ("pre_save", 4),
        ("post_save", 4),
    ]
    assert calls[-1][2] == {"created": False}
    calls.clear()
    await User.delete(id=1)
    await User.delete_by_id(2)
    await User.delete_many(3, 99)
    await u.delete_instance()
    assert [c[:2] for c in calls] == [
        ("pre_delete", 1),
        ("post_delete", 1),
        ("pre_delete", 2),
        ("post_delete", 2),
        ("pre_delete", 3),
        ("pre_delete", 99),
        ("post_delete", 3),
        ("pre_delete", 4),
        ("post_delete", 4),
    ]
    calls.clear()
    await User.get_or_create(id=5, defaults={"name": "x", "height": 1.0})
    await co.insert_many(User(**row(6)))
    await co.delete_many((User, 6))
    assert [c[:2] for c in calls] == [
        ("pre_save", 5),
        ("post_save", 5),
        ("pre_save", 6),
        ("post_save", 6),
        ("pre_delete", 6),
        ("post_delete", 6),
    ]


async def test_pre_save_error_stops_the_write(models: SimpleNamespace) -> None:
    User = models.User

    async def refuse(sender: type, instance: Any, **kw: Any) -> None:
        raise RuntimeError("refused")

    co.pre_save.connect(refuse, sender=User)
    try:
        with pytest.raises(RuntimeError, match="refused"):
            await User.create(**row(1))
        assert await User.query(id=1) is None
    finally:
        co.pre_save.disconnect(refuse, sender=User)
    await User.create(**row(1))
    assert await User.query(id=1) is not None


async def test_post_save_error_after_the_write(models: SimpleNamespace) -> None:
    User = models.User

    @co.post_save.connect(sender=User)
    def fail(sender: type, instance: Any, **kw: Any) -> None:
        raise RuntimeError("after")

    try:
        with pytest.raises(RuntimeError, match="after"):
            await User.create(**row(1))
        assert await User.query(id=1) is not None
    finally:
        co.post_save.disconnect(fail, sender=User)


async def test_sender_filter_and_async_receiver(models: SimpleNamespace) -> None:
    seen: list[Any] = []

    async def on_any(sender: type, instance: Any, **kw: Any) -> None:
        seen.append(sender)

    co.post_save.connect(on_any)
    try:
        await models.User.create(**row(1))
        await models.Article.create(id=1, author=1, title="t")
    finally:
        assert co.post_save.disconnect(on_any)
    assert seen == [models.User, models.Article]
    assert not co.post_save.disconnect(on_any)


async def test_pre_save_receiver_can_change_the_instance(models: SimpleNamespace) -> None:
    User = models.User

    def shout(sender: type, instance: Any, **kw: Any) -> None:
        instance.name = instance.name.upper()

    co.pre_save.connect(shout, sender=User)
    try:
        await User.create(**row(1))
    finally:
        co.pre_save.disconnect(shout, sender=User)
    assert (await User.get(id=1)).name == "U1"
