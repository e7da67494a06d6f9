"""Hostile and bad input, on every backend: arbitrary text and bytes in values and keys,
corrupt or foreign payloads."""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import acacheorm as co
from acacheorm.backends.base import Backend

# The backend fixture is reused across examples on purpose: each example writes and reads its
# own keys, so sharing the (expensive) connection between examples is safe.
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

hostile_text = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    [
        "",
        ":",
        "\\",
        "{tag}",
        "a:b\\:c",
        " ",
        "\t\n",
        "\x00",
        "x" * 10_240,
        "{",
        "}",
        "*",
        "?[]",
        "../..",
        "ünï\u200b",
        "\U0001f600" * 30,
    ]
)


@pytest.fixture
def docs(backend: Backend) -> SimpleNamespace:
    store = backend

    class Doc(co.Model):
        key = co.StringField(primary_key=True)
        body = co.StringField()
        blob = co.BinaryField()

        class Meta:
            serializer = "msgpack"
            backend = store

    class Pair(co.Model):
        a = co.StringField()
        b = co.StringField()

        class Meta:
            primary_key = co.CompositeKey("a", "b")
            serializer = "json"
            backend = store

    return SimpleNamespace(Doc=Doc, Pair=Pair, backend=backend)


@SETTINGS
@given(key=hostile_text, body=hostile_text, blob=st.binary(max_size=2048))
async def test_arbitrary_text_and_bytes_round_trip(
    docs: SimpleNamespace, key: str, body: str, blob: bytes
) -> None:
    await docs.Doc.create(key=key, body=body, blob=blob)
    got = await docs.Doc.get(key=key)
    assert (got.key, got.body, got.blob) == (key, body, blob)
    assert await docs.Doc.delete(key=key) is True


@SETTINGS
@given(a1=hostile_text, b1=hostile_text, a2=hostile_text, b2=hostile_text)
async def test_different_pks_never_share_a_key(
    docs: SimpleNamespace, a1: str, b1: str, a2: str, b2: str
) -> None:
    Pair = docs.Pair
    k1, k2 = Pair._schema.key((a1, b1)), Pair._schema.key((a2, b2))
    assert (k1 == k2) == ((a1, b1) == (a2, b2))
    if (a1, b1) == (a2, b2):
        return
    await Pair.insert_many({"a": a1, "b": b1}, {"a": a2, "b": b2})
    p1, p2 = await Pair.query_many((a1, b1), (a2, b2))
    assert p1.pk == (a1, b1) and p2.pk == (a2, b2)
    assert await Pair.delete_many((a1, b1), (a2, b2)) == 2


def corrupt_payloads(model: type[co.Model]) -> list[bytes]:
    schema = model._schema
    good = schema.encode(model(key="k", body="b", blob=b"x"))
    return [
        b"",
        b"\xac",
        good[:5],  # truncated envelope
        good[: len(good) - 3],  # truncated body
        b"\xac\x03" + good[2:],  # a future envelope version
        msgpack.packb({"key": "k", "body": "b", "blob": b"x"}),  # another serializer's bytes
        json.dumps({"key": "k"}).encode(),
        b"\x80\x04\x95" + b"pickle-ish",
        struct.pack(">BBHH", 0xAC, 1, 0x7777, 0) + b"\x80",  # unknown serializer tag
        schema.header + msgpack.packb({"key": "k"}),  # right map header, wrong fields
        schema.header + msgpack.packb([1, 2, 3]),  # right map header, not a map
        schema.header + msgpack.packb({"key": 5, "body": None, "blob": "x"}),  # wrong types
        schema.row_header + msgpack.packb(["k", "b"]),  # right positional prefix, 2 values
        schema.row_header + msgpack.packb(["k", "b", b"x", 4]),  # 4 values
        schema.row_header + msgpack.packb({"key": "k", "body": "b", "blob": b"x"}),  # a map
        schema.row_header + msgpack.packb([5, None, "x"]),  # wrong types
        schema.row_header[:-1] + msgpack.packb(["k", "b", b"x"]),  # no end of the names
        good[:6] + b"\x00\x00k\x1fk\x1e" + msgpack.packb(["k", "b"]),  # a name twice
    ]


async def test_corrupt_or_foreign_payloads_raise_serialization_error(
    docs: SimpleNamespace,
) -> None:
    Doc = docs.Doc
    key = Doc._schema.key(("k",))
    for i, junk in enumerate(corrupt_payloads(Doc)):
        await docs.backend.set(key, junk)
        with pytest.raises(co.SerializationError) as info:
            await Doc.get(key="k")
        assert info.value.key == key and info.value.model == "Doc", i
        with pytest.raises(co.SerializationError):
            await Doc.query_many("k")


@SETTINGS
@given(junk=st.binary(max_size=300))
async def test_random_bytes_never_become_an_instance(docs: SimpleNamespace, junk: bytes) -> None:
    Doc = docs.Doc
    await docs.backend.set(Doc._schema.key(("r",)), junk)
    try:
        got = await Doc.get(key="r")
    except co.SerializationError as exc:
        assert exc.key is not None and exc.model == "Doc"
    else:  # pragma: no cover - would need a valid envelope by chance
        assert isinstance(got.body, str) and isinstance(got.blob, bytes)


async def test_clear_leaves_other_namespaces(backend_factory: Any) -> None:
    one, two = backend_factory(), backend_factory()
    async with one, two:
        await one.set_many({f"k{i}": b"1" for i in range(20)})
        await two.set_many({f"k{i}": b"2" for i in range(20)})
        await one.clear()
        assert await one.get_many("k0", "k19") == [None, None]
        assert await two.get_many("k0", "k19") == [b"2", b"2"]
        await two.clear()
