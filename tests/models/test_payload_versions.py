"""Stored payloads say which serializer and schema wrote them: a model that changed
serializer or gained/lost fields still reads what is stored."""

from __future__ import annotations

from typing import Any

import pytest

import acacheorm as co
from acacheorm.backends.base import Backend


def profile_model(
    store: Backend, serializer: Any, *, read: Any = None, **extra_fields: co.Field[Any]
) -> Any:
    meta: dict[str, Any] = {"backend": store, "serializer": serializer, "name": "profile"}
    if read is not None:
        meta["read_serializers"] = read
    attrs: dict[str, Any] = {
        "__module__": __name__,
        "id": co.IntegerField(primary_key=True),
        "name": co.StringField(),
        "avatar": co.BinaryField(null=True),
        **extra_fields,
        "Meta": type("Meta", (), meta),
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
        # without the old serializer in read_serializers the old rows are not read
        Strict = profile_model(backend, new)
        with pytest.raises(co.SerializationError, match="read_serializers") as info:
            await Strict.get(id=1)
        assert info.value.key == "profile:1" and f"{old!r}" in info.value.reason
        with pytest.raises(co.SerializationError):
            await Strict.query_many(1)
        New = profile_model(backend, new, read=[old])
        got = await New.get(id=1)
        assert (got.name, got.avatar) == ("Sam", b"\x00\x01")
        await New.update(id=1, name="Kim")  # rewritten with the new serializer
        Back = profile_model(backend, old, read=[new])  # and the way back
        assert (await Back.get(id=1)).name == "Kim"
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


async def test_read_serializers_by_instance_and_inherited(backend: Backend) -> None:
    signed = co.PickleSerializer(secret_key=b"i" * 32, name="pickle-inst")
    Old = profile_model(backend, signed)
    await Old.create(id=1, name="Sam")
    store = backend

    class Base(co.Model):
        class Meta:
            abstract = True
            backend = store
            serializer = "msgpack"
            read_serializers = [signed, "json"]  # an instance and a name

    class Profile(Base):
        id = co.IntegerField(primary_key=True)
        name = co.StringField()
        avatar = co.BinaryField(null=True)

        class Meta:
            name = "profile"

    assert Profile._schema.read_serializers == (signed, co.registry.get_by_name("json"))
    assert (await Profile.get(id=1)).name == "Sam"


def test_read_serializers_mistakes_are_configuration_errors() -> None:
    store = co.SimpleBackend()
    cases: list[tuple[Any, str]] = [
        (["json", "no-such-serializer"], "Profile.Meta.read_serializers: unknown serializer"),
        ("json", "must be a list or tuple"),  # a bare name, not a list of them
        (co.JSONSerializer(), "must be a list or tuple"),
        ([42], "Profile.Meta.read_serializers must be a registered name or a Serializer"),
        # two different serializers with one tag: their payloads cannot be told apart
        ([co.PickleSerializer(secret_key=b"a")], "cannot be told apart"),
    ]
    for value, message in cases:
        with pytest.raises(co.ConfigurationError, match=message):
            profile_model(store, co.PickleSerializer(secret_key=b"b"), read=value)
    # the model's own serializer, listed again, is fine
    Model = profile_model(store, "json", read=["json"])
    assert Model._schema.read_serializers == ()


async def test_a_payload_of_another_registered_serializer_is_refused(backend: Backend) -> None:
    """The tag in a stored payload never picks a serializer the model did not list."""
    Writer = profile_model(backend, "msgpack")
    await Writer.create(id=1, name="Sam")
    for serializer in ("json", co.PickleSerializer(secret_key=b"p" * 32)):
        Reader = profile_model(backend, serializer)
        with pytest.raises(co.SerializationError, match="does not read") as info:
            await Reader.get(id=1)
        assert info.value.model == "Profile" and info.value.key == "profile:1"
        with pytest.raises(co.SerializationError, match="does not read"):
            await Reader.update(id=1, name="Kim")
    assert (await Writer.get(id=1)).name == "Sam"  # nothing was rewritten
