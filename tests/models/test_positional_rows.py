"""Rows stored as the array of their values (envelope version 2): the stored format, rows
written before as maps still read, forged arrays refused, and a schema that changes."""

from __future__ import annotations

import datetime
import enum
import struct
import zlib
from typing import Any

import msgpack
import pytest

import acacheorm as co
from acacheorm import _codec
from acacheorm.backends.base import Backend
from acacheorm.cli import _ops


def note_model(store: Backend, serializer: str = "msgpack", **fields: co.Field[Any]) -> Any:
    attrs: dict[str, Any] = {
        "__module__": __name__,
        "id": co.IntegerField(primary_key=True),
        "title": co.StringField(max_length=10),
        "body": co.StringField(default=""),
        **fields,
        "Meta": type("Meta", (), {"backend": store, "serializer": serializer, "name": "note"}),
    }
    return type("Note", (co.Model,), attrs)


def map_row(model: Any, row: dict[str, Any]) -> bytes:
    """A row as written before rows became arrays: the version 1 header and a map."""
    return model._schema.header + msgpack.packb(row)


def array_row(model: Any, values: list[Any], prefix: bytes | None = None) -> bytes:
    return (model._schema.row_header if prefix is None else prefix) + msgpack.packb(values)


def test_the_stored_bytes() -> None:
    Note = note_model(co.SimpleBackend())
    schema = Note._schema
    payload = schema.encode(Note(id=7, title="t", body="b"))
    tag, fingerprint = schema.serializer.tag, schema.fingerprint
    assert payload[:6] == struct.pack(">BBHH", 0xAC, 2, tag, fingerprint)
    assert payload[6:8] == schema.row_header[6:8]  # the other half of the layout hash
    assert payload[8:].startswith(b"id\x1ftitle\x1fbody\x1e")
    assert msgpack.unpackb(payload[len(schema.row_header) :]) == [7, "t", "b"]
    envelope = _codec.open_envelope(payload)
    assert (envelope.version, envelope.names) == (2, ("id", "title", "body"))
    assert _codec.body_fields(envelope, schema.serializer) == {"id": 7, "title": "t", "body": "b"}
    # JSON stays a map (readable as it is), and so does a signed pickle (its signature
    # covers the field names only inside the body)
    for name in ("json", "pickle-positional-test"):
        if name != "json":
            co.registry.register(name, co.PickleSerializer(secret_key=b"k" * 32, name=name))
        try:
            Other = note_model(co.SimpleBackend(), name)
            stored = Other._schema.encode(Other(id=7, title="t"))
            assert not Other._schema.positional and stored[1] == 1
            assert Other._schema.serializer.loads(stored[6:])["title"] == "t"
        finally:
            if name != "json":
                co.registry.unregister(name)


async def test_rows_written_as_maps_still_read(backend: Backend) -> None:
    Note = note_model(backend)
    rows = [{"id": i, "title": f"t{i}", "body": "b"} for i in range(300)]  # decode_many's gc path
    for row in rows:
        await backend.set(Note._schema.key((row["id"],)), map_row(Note, row))
    assert (await Note.get(id=3)).title == "t3"
    got = await Note.query_many(*range(300))
    assert [n.to_dict() for n in got] == rows
    # a forged map row: a value of a wrong type
    await backend.set("note:1", map_row(Note, {"id": 1, "title": 5, "body": ""}))
    with pytest.raises(co.SerializationError) as info:
        await Note.query_many(0, 1)
    assert (info.value.key, info.value.model) == ("note:1", "Note")
    assert "title" in info.value.reason
    # written again, a row becomes an array
    await Note.update(id=2, body="x")
    raw = await backend.get("note:2")
    assert raw is not None and raw.startswith(Note._schema.row_header)
    assert (await Note.get(id=2)).to_dict() == {"id": 2, "title": "t2", "body": "x"}


async def test_migrate_rewrites_map_rows_as_arrays() -> None:
    async with co.SimpleBackend() as store:
        Note = note_model(store)
        await store.set("note:1", map_row(Note, {"id": 1, "title": "a", "body": ""}))
        await Note.create(id=2, title="b")
        report = await _ops.migrate(store, Note, ["note:1", "note:2"])
        assert (report.migrated, report.current) == (1, 1)
        for key in ("note:1", "note:2"):
            raw = await store.get(key)
            assert raw is not None and raw.startswith(Note._schema.row_header)
        found = await _ops.inspect_key(store, "note:1", Note)
        assert (found.version, found.fields) == (2, {"id": 1, "title": "a", "body": ""})


@pytest.mark.parametrize("position", [0, 1, 2])
async def test_a_value_of_a_wrong_type_in_any_position_is_refused(
    backend: Backend, position: int
) -> None:
    Note = note_model(backend, stamp=co.DateTimeTZField(null=True))
    good: list[Any] = [1, "t", "b", "2026-01-01T00:00:00+00:00"]
    assert (await read_stored(backend, Note, array_row(Note, good))).title == "t"
    wrong: list[Any] = [["1", True, 1.0, None], [5, None, b"t", ["t"]], [None, 5, {"b": 1}]]
    for value in wrong[position]:
        payload = array_row(Note, [*good[:position], value, *good[position + 1 :]])
        await backend.set("note:1", payload)
        for read in (lambda: Note.get(id=1), lambda: Note.query_many(1)):
            with pytest.raises(co.SerializationError) as info:
                await read()
            assert (info.value.key, info.value.model) == ("note:1", "Note"), value
            assert ("id", "title", "body")[position] in info.value.reason, info.value.reason
        assert await backend.get("note:1") == payload  # nothing written back
    for stamp in (5, "not a date", "2026-01-01T00:00:00"):  # the last has no timezone
        await backend.set("note:1", array_row(Note, [*good[:3], stamp]))
        with pytest.raises(co.SerializationError, match="stamp"):
            await Note.query_many(1)


async def test_an_array_of_another_length_is_refused() -> None:
    async with co.SimpleBackend() as store:
        Note = note_model(store)
        for values in ([1, "t"], [1, "t", "b", "extra"], [], [[1, "t", "b"]]):
            await store.set("note:1", array_row(Note, values))
            for read in (lambda: Note.get(id=1), lambda: Note.query_many(1)):
                with pytest.raises(co.SerializationError, match="values for its 3 field") as info:
                    await read()
                assert (info.value.key, info.value.model) == ("note:1", "Note")
        await store.set("note:1", array_row(Note, {"id": 1, "title": "t", "body": "b"}))  # type: ignore[arg-type]
        with pytest.raises(co.SerializationError, match="an array was expected"):
            await Note.query_many(1)


async def test_a_forged_layout_under_the_models_fingerprint_is_refused() -> None:
    """The 16-bit fingerprint is not trusted alone: a positional row claiming it must carry
    the model's own layout check and field names, else it is refused (not read by
    position, nor by the names it brings)."""
    async with co.SimpleBackend() as store:
        Note = note_model(store)
        schema = Note._schema
        head = schema.row_header[:6]
        wrong_check = bytes([schema.row_header[6] ^ 0xFF, schema.row_header[7]])
        forged = {
            "another layout check": head + wrong_check + b"id\x1ftitle\x1fbody\x1e",
            "two names swapped": head + schema.row_header[6:8] + b"id\x1fbody\x1ftitle\x1e",
            "another field": head + schema.row_header[6:8] + b"id\x1ftitle\x1fnote\x1e",
        }
        for what, prefix in forged.items():
            await store.set("note:1", array_row(Note, [1, "t", "b"], prefix))
            for read in (lambda: Note.get(id=1), lambda: Note.query_many(1)):
                with pytest.raises(co.SerializationError, match="not the model's") as info:
                    await read()
                assert (info.value.key, info.value.model) == ("note:1", "Note"), what
        # the same names under another fingerprint: a row of another schema version, read
        # by its names (so the swap changes nothing)
        other = struct.pack(">BBHH", 0xAC, 2, schema.serializer.tag, schema.fingerprint ^ 1)
        await store.set(
            "note:1", array_row(Note, [1, "b", "t"], other + b"\0\0id\x1fbody\x1ftitle\x1e")
        )
        assert (await Note.query_many(1))[0].to_dict() == {"id": 1, "title": "t", "body": "b"}


async def test_malformed_positional_envelopes_are_refused() -> None:
    async with co.SimpleBackend() as store:
        Note = note_model(store)
        head = Note._schema.row_header[:8]
        for prefix, message in (
            (head + b"id\x1ftitle\x1fbody", "no end marker"),
            (head + b"id\x1fid\x1fbody\x1e", "empty or repeated"),
            (head + b"id\x1f\x1fbody\x1e", "empty or repeated"),
            (head + b"id\x1ft\xffitle\x1fbody\x1e", "not UTF-8"),
            (head[:7], "no end marker"),
        ):
            await store.set("note:1", array_row(Note, [1, "t", "b"], prefix))
            with pytest.raises(co.SerializationError, match=message) as info:
                await Note.query_many(1)
            assert (info.value.key, info.value.model) == ("note:1", "Note")


async def test_schema_changes_read_rows_by_their_names(backend: Backend) -> None:
    V1 = note_model(backend, legacy=co.IntegerField(default=5))
    await V1.create(id=1, title="one", body="b", legacy=9)
    await backend.set("note:2", map_row(V1, {"id": 2, "title": "two", "body": "", "legacy": 1}))
    # a field added (with a default), one removed, two swapped in order
    attrs: dict[str, Any] = {
        "__module__": __name__,
        "id": co.IntegerField(primary_key=True),
        "body": co.StringField(default=""),
        "title": co.StringField(),
        "views": co.IntegerField(default=0),
        "Meta": type("Meta", (), {"backend": backend, "serializer": "msgpack", "name": "note"}),
    }
    V2 = type("Note", (co.Model,), attrs)
    assert V2._schema.row_header != V1._schema.row_header
    one, two = await V2.query_many(1, 2)
    assert one.to_dict() == {"id": 1, "body": "b", "title": "one", "views": 0}
    assert two.to_dict() == {"id": 2, "body": "", "title": "two", "views": 0}
    await V2.update(id=1, views=3)  # now a V2 row
    raw = await backend.get("note:1")
    assert raw is not None and raw.startswith(V2._schema.row_header)
    # and back: V1 reads the V2 row by its names (views dropped, legacy defaulted)
    assert (await V1.get(id=1)).to_dict() == {"id": 1, "title": "one", "body": "b", "legacy": 5}
    V3 = note_model(backend, required=co.IntegerField())
    with pytest.raises(co.SerializationError, match="required"):
        await V3.get(id=1)


async def test_serializer_changes_across_body_forms(backend: Backend) -> None:
    Json = note_model(backend, "json")
    await Json.create(id=1, title="j")
    Msgpack = type(
        "Note",
        (co.Model,),
        {
            "__module__": __name__,
            "id": co.IntegerField(primary_key=True),
            "title": co.StringField(max_length=10),
            "body": co.StringField(default=""),
            "Meta": type(
                "Meta",
                (),
                {
                    "backend": backend,
                    "serializer": "msgpack",
                    "read_serializers": ["json"],
                    "name": "note",
                },
            ),
        },
    )
    assert (await Msgpack.get(id=1)).title == "j"
    await Msgpack.update(id=1, title="m")
    raw = await backend.get("note:1")
    assert raw is not None and raw[1] == 2  # now an array
    Back = note_model(backend, "json")
    with pytest.raises(co.SerializationError, match="read_serializers"):
        await Back.get(id=1)


async def test_big_ints_and_bytes_in_arrays() -> None:
    async with co.SimpleBackend() as store:
        Note = note_model(
            store,
            blob=co.BinaryField(null=True),
            counts=co.ListField(co.IntegerField(), default=list),
        )
        big = [2**70, -(2**80), 1]
        made = await Note.create(id=2**65, title="t", blob=b"\x00\xff", counts=big)
        got = await Note.get(id=2**65)
        assert got.to_dict() == made.to_dict() and got.counts == big
        (many,) = await Note.query_many(2**65)
        assert many.to_dict() == made.to_dict()


async def read_stored(store: Backend, model: Any, payload: bytes) -> Any:
    await store.set("note:1", payload)
    one = await model.get(id=1)
    (many,) = await model.query_many(1)
    assert one.to_dict() == many.to_dict()
    return one


class Colour(enum.StrEnum):
    RED = "r"
    BLUE = "b"


class Mixed(enum.Enum):
    ONE = 1
    TWO = "2"


async def test_fields_read_inline_check_their_stored_type() -> None:
    """The fast build reads enums, dates and foreign keys without calling their fields: it
    must refuse what their ``from_primitive`` refuses, and read what it reads."""
    async with co.SimpleBackend() as store:

        class Tag(co.Model):
            slug = co.StringField(primary_key=True)

            class Meta:
                backend = store
                serializer = "msgpack"

        Note = note_model(
            store,
            colour=co.EnumField(Colour),
            mixed=co.EnumField(Mixed),
            at=co.DateTimeField(),
            tz=co.DateTimeTZField(),
            day=co.DateField(),
            author=co.ForeignKeyField(Tag, null=True),
        )
        good: list[Any] = [
            1,
            "t",
            "",
            "b",
            "2",
            "2026-01-02T03:04:05",
            "2026-01-02T03:04:05+00:00",
            "2026-01-02",
            "sam",
        ]
        note = await read_stored(store, Note, array_row(Note, good))
        assert (note.colour, note.mixed, note.author_id) == (Colour.BLUE, Mixed.TWO, "sam")
        assert (note.at, note.day) == (
            datetime.datetime(2026, 1, 2, 3, 4, 5),
            datetime.date(2026, 1, 2),
        )
        assert note.tz == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
        # stored in another offset (another writer): read the careful way, as UTC
        other = [*good[:6], "2026-01-02T05:04:05+02:00", *good[7:]]
        note = await read_stored(store, Note, array_row(Note, other))
        assert note.tz == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
        assert note.tz.tzinfo is datetime.UTC
        none_author = await read_stored(store, Note, array_row(Note, [*good[:8], None]))
        assert none_author.author_id is None
        wrong: dict[int, list[Any]] = {
            3: ["x", 1, None, b"b"],  # colour
            4: [2, "3", None],  # mixed
            5: [5, "not a date", None],  # at
            6: ["2026-01-02T03:04:05", 5, None],  # tz: naive
            7: ["2026-01-02T03:04:05", "x", 20260102, None],  # day
            8: [5, b"sam", ["sam"]],  # author
        }
        names = list(Note._schema.fields)
        for position, values in wrong.items():
            for value in values:
                payload = array_row(Note, [*good[:position], value, *good[position + 1 :]])
                await store.set("note:1", payload)
                for read in (lambda: Note.get(id=1), lambda: Note.query_many(1)):
                    with pytest.raises(co.SerializationError) as info:
                        await read()
                    assert (info.value.key, info.value.model) == ("note:1", "Note")
                    assert names[position] in info.value.reason, (value, info.value.reason)


def test_a_serializer_that_changes_how_rows_are_written_keeps_writing_maps() -> None:
    """A subclass of the msgpack serializer that compresses its rows (it overrides dumps
    and loads, not the positional pair) stores its own way, as before."""

    class Compressed(co.MsgpackSerializer):
        name = "msgpack-zlib-test"

        def dumps(self, data: dict[str, Any]) -> bytes:
            return zlib.compress(super().dumps(data))

        def loads(self, payload: bytes) -> dict[str, Any]:
            return super().loads(zlib.decompress(payload))

    assert co.MsgpackSerializer.positional and not Compressed.positional
    co.registry.register("msgpack-zlib-test", Compressed())
    try:
        Note = note_model(co.SimpleBackend(), "msgpack-zlib-test")
        payload = Note._schema.encode(Note(id=1, title="t"))
        assert payload[1] == 1 and zlib.decompress(payload[6:])
        assert Note._schema.decode("note:1", payload).title == "t"
    finally:
        co.registry.unregister("msgpack-zlib-test")
