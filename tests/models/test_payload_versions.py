"""Stored payloads say which serializer and schema wrote them: a model that changed
serializer or gained/lost fields still reads what is stored."""

from __future__ import annotations

from typing import Any

import pytest

import acacheorm as co
from acacheorm.backends.base import Backend


def profile_model(store: Backend, serializer: Any, **extra_fields: co.Field[Any]) -> Any:
    attrs: dict[str, Any] = {
        "__module__": __name__,
        "id": co.IntegerField(primary_key=True),
        "name": co.StringField(),
        "avatar": co.BinaryField(null=True),
        **extra_fields,
        "Meta": type("Meta", (), {"backend": store, "serializer": serializer, "name": "profile"}),
    }
    return type("Profile", (co.Model,), attrs)


@pytest.mark.parametrize(
    ("old", "new"), [("json", "msgpack"), ("msgpack", "json"), ("msgpack", "pickle-signed")]
)
async def test_changing_serializer_reads_old_rows(backend: Backend, old: str, new: str) -> None:
    signed = co.PickleSerializer(secret_key=b"k" * 32, name="pickle-signed")
    co.registry.register("pickle-signed", signed)
    try:
        Old = profile_model(backend, old)
        await Old.create(id=1, name="Sam", avatar=b"\x00\x01")
        New = profile_model(backend, new)
        got = await New.get(id=1)
        assert (got.name, got.avatar) == ("Sam", b"\x00\x01")
        await New.update(id=1, name="Kim")  # rewritten with the new serializer
        assert (await Old.get(id=1)).name == "Kim"
        raw = await backend.get("profile:1")
        assert raw is not None and raw[2:4] == New._schema.serializer.tag.to_bytes(2, "big")
    finally:
        co.registry.unregister("pickle-signed")


async def test_added_and_removed_fields(backend: Backend) -> None:
    V1 = profile_model(backend, "msgpack", legacy=co.StringField(default="x"))
    await V1.create(id=1, name="Sam")
    V2 = profile_model(backend, "msgpack", visits=co.IntegerField(default=0))
    assert V2._schema.fingerprint != V1._schema.fingerprint
    got = await V2.get(id=1)
    assert (got.name, got.visits) == ("Sam", 0)
    assert not hasattr(got, "legacy")
    V3 = profile_model(backend, "msgpack", required=co.IntegerField())
    with pytest.raises(co.SerializationError, match="required"):
        await V3.get(id=1)


async def test_unregistered_serializer_tag_is_an_error(backend: Backend) -> None:
    custom = co.PickleSerializer(secret_key=b"s" * 32, name="pickle-temp")
    co.registry.register("pickle-temp", custom)
    Writer = profile_model(backend, custom)
    await Writer.create(id=1, name="Sam")
    co.registry.unregister("pickle-temp")
    Reader = profile_model(backend, "json")
    with pytest.raises(co.SerializationError, match="unknown serializer") as info:
        await Reader.get(id=1)
    assert info.value.key == "profile:1"
