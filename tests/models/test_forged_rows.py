"""Well-framed but forged payloads: a stored row whose values do not fit the model's fields,
a row planted under another row's key, values nested beyond what a parser reads, and a
StructField whose own functions fail. Each must be a `SerializationError` naming the key and
the model, on every read path, and nothing may be written back."""

from __future__ import annotations

import datetime
import enum
import json
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import acacheorm as co
from acacheorm import _codec
from acacheorm.backends.base import Backend
from acacheorm.cli import _ops


class Gender(enum.IntEnum):
    UNKNOWN = 0
    FEMALE = 1


def person_model(store: Backend, serializer: str) -> Any:
    attrs: dict[str, Any] = {
        "__module__": __name__,
        "id": co.IntegerField(primary_key=True),
        "name": co.StringField(),
        "height": co.FloatField(),
        "admin": co.BooleanField(default=False),
        "email": co.StringField(null=True),
        "phones": co.ListField(co.StringField(), default=list),
        "scores": co.ListField(co.FloatField(), default=list),
        "grid": co.ListField(co.ListField(co.IntegerField()), default=list),
        "gender": co.EnumField(Gender, default=Gender.UNKNOWN),
        "seen": co.DateTimeTZField(null=True),
        "extra": co.JSONField(null=True),
        "stamps": co.ListField(co.DateTimeTZField(), default=list),
        "Meta": type("Meta", (), {"backend": store, "serializer": serializer, "name": "person"}),
    }
    return type("Person", (co.Model,), attrs)


GOOD: dict[str, Any] = {
    "id": 1,
    "name": "Sam",
    "height": 1.8,
    "admin": False,
    "email": None,
    "phones": ["+1 555 0100"],
    "scores": [1.5],
    "grid": [[1, 2]],
    "gender": 0,
    "seen": None,
    "extra": {"a": [1]},
    "stamps": ["2026-01-01T00:00:00+00:00"],
}

# (field, forged value): each is well framed, of the wrong type or None where not allowed
FORGED: list[tuple[str, Any]] = [
    ("id", "1"),
    ("id", True),
    ("id", 1.0),
    ("id", None),
    ("name", 5),
    ("name", None),
    ("name", ["Sam"]),
    ("name", {"s": 1}),
    ("height", "tall"),
    ("height", True),
    ("height", None),
    ("height", [1.8]),
    ("admin", 1),
    ("admin", "true"),
    ("admin", None),
    ("email", 5),
    ("email", False),
    ("phones", "+1 555 0100"),
    ("phones", ["x", 5]),
    ("phones", [None]),
    ("phones", {"0": "x"}),
    ("phones", None),
    ("scores", [1.5, "x"]),
    ("scores", [True]),
    ("grid", [[1, "x"]]),
    ("grid", [1]),
    ("grid", ["x"]),
    ("grid", [[True]]),
    ("stamps", [None]),
    ("stamps", ["not a date"]),
    ("stamps", [5]),
    ("stamps", "2026-01-01T00:00:00+00:00"),
    ("gender", True),
    ("gender", "0"),
    ("gender", 0.0),
    ("gender", 99),
    ("gender", None),
    ("seen", 5),
    ("seen", "not a date"),
    ("seen", "2026-01-01T00:00:00"),  # naive: a DateTimeTZField stores aware UTC text
]
MSGPACK_ONLY: list[tuple[str, Any]] = [("name", b"Sam"), ("phones", [b"x"]), ("extra", {"k": b"x"})]


# The forms a stored row may have: JSON (a map), msgpack as written now (the array of the
# values, after the field names) and msgpack as written before (a map).
FORMS = ["json", "msgpack", "msgpack-map"]


def _payload_for(model: Any, form: str, row: dict[str, Any]) -> bytes:
    schema = model._schema
    if form == "json":
        return schema.header + json.dumps(row).encode()
    if form == "msgpack-map":
        return schema.header + msgpack.packb(row)
    assert schema.positional
    return schema.row_header + msgpack.packb([row[name] for name in schema.fields])


@pytest.mark.parametrize("form", FORMS)
async def test_forged_values_never_become_an_instance(form: str) -> None:
    serializer = form.split("-")[0]
    async with co.SimpleBackend() as store:
        Person = person_model(store, serializer)
        schema = Person._schema
        key = schema.key((1,))
        # the good row reads, through the fast path
        assert (await _read(store, Person, key, _payload_for(Person, form, GOOD))).name
        forged = FORGED + (MSGPACK_ONLY if serializer == "msgpack" else [])
        for field, value in forged:
            payload = _payload_for(Person, form, {**GOOD, field: value})
            await store.set(key, payload)
            for read in (
                lambda: Person.get(id=1),
                lambda: Person.query_many(1, 1),
                lambda: Person.update(id=1, name="Kim"),
            ):
                with pytest.raises(co.SerializationError) as info:
                    await read()
                exc = info.value
                assert (exc.key, exc.model) == (key, "Person"), (field, value)
                assert field in exc.reason, (field, value, exc.reason)
            with pytest.raises(co.SerializationError):
                schema.decode(key, payload)
            assert await store.get(key) == payload, f"{field}={value!r}: it was written back"
        assert len(forged) >= 40


@pytest.mark.parametrize("form", FORMS)
async def test_values_of_another_type_that_fit_are_read_the_careful_way(form: str) -> None:
    """An int where the model writes a float (another writer's serializer may do that) is
    not forged: it is converted, and the row reads."""
    async with co.SimpleBackend() as store:
        Person = person_model(store, form.split("-")[0])
        key = Person._schema.key((1,))
        row = {**GOOD, "height": 2, "scores": [1, 2.5], "email": "a@b.c"}
        got = await _read(store, Person, key, _payload_for(Person, form, row))
        assert (got.height, got.scores, got.email) == (2.0, [1.0, 2.5], "a@b.c")
        assert type(got.height) is float and all(type(s) is float for s in got.scores)


async def _read(store: Backend, model: Any, key: str, payload: bytes) -> Any:
    await store.set(key, payload)
    one = await model.get(id=1)
    many = await model.query_many(1)
    assert many[0].to_dict() == one.to_dict()
    return one


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("depth", [300, 900, 1500])
async def test_deep_stored_json_is_a_serialization_error(form: str, depth: int) -> None:
    async with co.SimpleBackend() as store:
        Person = person_model(store, form.split("-")[0])
        key = Person._schema.key((1,))
        good = _payload_for(Person, form, {**GOOD, "extra": None})
        deep = b"\x91" * (depth - 1) + b"\x90"  # fixarray of one item, ..., empty array
        if form == "json":
            text = (
                good[6:].decode().replace('"extra": null', '"extra": ' + "[" * depth + "]" * depth)
            )
            payload = good[:6] + text.encode()
        elif form == "msgpack-map":
            payload = good[:6] + good[6:].replace(b"\xa5extra\xc0", b"\xa5extra" + deep)
        else:  # the array of the values, "extra" nested deep
            values = [deep if n == "extra" else msgpack.packb(GOOD[n]) for n in GOOD]
            payload = Person._schema.row_header + bytes([0x90 + len(values)]) + b"".join(values)
        assert payload != good
        await store.set(key, payload)
        with pytest.raises(co.SerializationError) as info:
            await Person.get(id=1)
        assert (info.value.key, info.value.model) == (key, "Person")
        with pytest.raises(co.SerializationError):
            await Person.query_many(1)


# -- a row under another row's key ----------------------------------------------------------


def substitution_models(store: Backend) -> Any:
    class Member(co.Model):
        id = co.IntegerField(primary_key=True)
        name = co.StringField()
        admin = co.BooleanField(default=False)

        class Meta:
            backend = store
            serializer = "msgpack"

    class Post(co.Model):
        id = co.IntegerField(primary_key=True)
        author = co.ForeignKeyField(Member)

        class Meta:
            backend = store
            serializer = "json"

    class Grant(co.Model):
        member = co.StringField()
        scope = co.StringField()
        level = co.IntegerField(default=0)

        class Meta:
            backend = store
            serializer = "msgpack"
            primary_key = co.CompositeKey("member", "scope")

    class Badge(co.Model):
        code = co.StringField(primary_key=True)
        label = co.StringField()

        class Meta:
            backend = store
            serializer = "json"
            key_format = "badge.%s"

    return Member, Post, Grant, Badge


async def test_a_row_under_another_rows_key_is_refused(backend: Backend) -> None:
    Member, Post, Grant, Badge = substitution_models(backend)
    await Member.create(id=1, name="Sam")
    await Member.create(id=2, name="Root", admin=True)
    await Post.create(id=10, author=1)
    await Grant.insert_many({"member": "a", "scope": "b:c"}, {"member": "a:b", "scope": "c"})
    await Badge.insert_many({"code": "x", "label": "x"}, {"code": "y", "label": "root"})
    sam = await Member.get(id=1)
    # every model: row 2's bytes copied under row 1's key
    swaps = [
        (Member, (1,), (2,)),
        (Grant, ("a", "b:c"), ("a:b", "c")),  # two pks whose parts differ only by the ':'
        (Badge, ("x",), ("y",)),
    ]
    tried = 0
    for model, victim_pk, donor_pk in swaps:
        schema = model._schema
        victim = victim_pk if schema.composite else victim_pk[0]
        donor = donor_pk if schema.composite else donor_pk[0]
        key = schema.key(victim_pk)
        assert key != schema.key(donor_pk)
        planted = await backend.get(schema.key(donor_pk))
        assert planted is not None
        await backend.set(key, planted)
        reads: list[Callable[[], Awaitable[Any]]] = [
            lambda m=model, v=victim: m.get_by_id(v),
            lambda m=model, v=victim: m.query_many(v),
            lambda m=model, v=victim, d=donor: m.query_many(d, v),
            lambda m=model, v=victim: co.query_many((m, v)),
            lambda m=model, v=victim_pk: m.get_or_create(
                defaults={"name": "x"} if m is Member else {"label": "x"} if m is Badge else {},
                **dict(zip(m._schema.pk_names, v, strict=True)),
            ),
        ]
        for read in reads:
            with pytest.raises(co.SerializationError, match="another row's key") as info:
                await read()
            assert (info.value.key, info.value.model) == (key, model.__name__)
            tried += 1
        assert await backend.get(key) == planted
    # the paths that also write: update and set_by_id, refresh, select_related, prefetch
    key = Member._schema.key((1,))
    for write in (
        lambda: Member.update(id=1, name="Kim"),
        lambda: Member.set_by_id(1, {"name": "Kim"}),
        lambda: Member.update_many({"id": 1, "name": "Kim"}),
        sam.refresh,
        lambda: Post.get(id=10).select_related("author"),
        lambda: Post.query_many(10).select_related("author"),
    ):
        with pytest.raises(co.SerializationError, match="another row's key") as info:
            await write()
        assert (info.value.key, info.value.model) == (key, "Member")
        tried += 1
    post = await Post.get(id=10)
    with pytest.raises(co.SerializationError, match="another row's key"):
        await co.prefetch([post], "author")
    with pytest.raises(co.SerializationError, match="another row's key"):
        await post.author.load()
    assert await backend.get(key) == await backend.get(Member._schema.key((2,)))
    assert sam.name == "Sam" and not sam.admin  # refresh left the instance alone
    assert tried == 3 * 5 + 6


async def test_migrate_and_inspect_refuse_a_substituted_row() -> None:
    async with co.SimpleBackend() as store:
        Member, *_ = substitution_models(store)
        await Member.create(id=1, name="Sam")
        await Member.create(id=2, name="Root", admin=True)
        await store.set("member:1", await store.get("member:2") or b"")

        class Member2(co.Model):  # the next version of Member: one more field
            id = co.IntegerField(primary_key=True)
            name = co.StringField()
            admin = co.BooleanField(default=False)
            visits = co.IntegerField(default=0)

            class Meta:
                backend = store
                serializer = "msgpack"
                name = "member"

        report = await _ops.migrate(store, Member2, ["member:1", "member:2"])
        assert report.migrated == 1 and [k for k, _ in report.failed] == ["member:1"]
        assert "another row's key" in report.failed[0][1]
        found = await _ops.inspect_key(store, "member:1", Member)
        with pytest.raises(co.SerializationError, match="another row's key"):
            Member._schema.decode("member:1", found.raw)


# -- StructField functions that fail --------------------------------------------------------


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


def _struct_model(store: Backend) -> Any:
    class Shape(co.Model):
        id = co.IntegerField(primary_key=True)
        corner = co.StructField(lambda p: [p.x, p.y], lambda v: Point(v[0], v[1]))
        centre = co.StructField(lambda p: {"x": p.x, "y": p.y}, lambda v: Point(v.x, v.y))

        class Meta:
            backend = store
            serializer = "json"

    return Shape


async def test_struct_field_errors_are_validation_and_serialization_errors() -> None:
    async with co.SimpleBackend() as store:
        Shape = _struct_model(store)
        # at construction and assignment: the serializer raises AttributeError/IndexError
        for bad in ("not a point", 5, None, [1]):
            with pytest.raises(co.ValidationError, match="corner"):
                Shape(id=1, corner=bad, centre=Point(0, 0))
        shape = Shape(id=1, corner=Point(1, 2), centre=Point(0, 0))
        with pytest.raises(co.ValidationError, match="centre"):
            shape.centre = object()
        # on read: the deserializer raises IndexError (corner) or AttributeError (centre)
        key = Shape._schema.key((1,))
        for corner, centre in (([], {"x": 0, "y": 0}), ([1, 2], {"x": 0, "y": 0})):
            payload = (
                Shape._schema.header
                + json.dumps({"id": 1, "corner": corner, "centre": centre}).encode()
            )
            await store.set(key, payload)
            with pytest.raises(co.SerializationError) as info:
                await Shape.get(id=1)
            assert (info.value.key, info.value.model) == (key, "Shape")
            assert "Error" in info.value.reason  # IndexError / AttributeError, named
            with pytest.raises(co.SerializationError):
                await Shape.query_many(1)


def test_aware_datetime_beyond_utc_range_is_a_validation_error() -> None:
    class Event(co.Model):
        id = co.IntegerField(primary_key=True)
        at = co.DateTimeTZField()

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    minus5 = datetime.timezone(datetime.timedelta(hours=-5))
    plus5 = datetime.timezone(datetime.timedelta(hours=5))
    for value in (
        datetime.datetime(9999, 12, 31, 23, 0, tzinfo=minus5),
        datetime.datetime(1, 1, 1, 1, 0, tzinfo=plus5),
    ):
        with pytest.raises(co.ValidationError, match=r"Event\.at"):
            Event(id=1, at=value)
    ok = Event(id=1, at=datetime.datetime(9999, 12, 31, 18, 0, tzinfo=minus5))
    assert Event._schema.encode(ok)
    with pytest.raises(co.ValidationError, match="UTC"):
        ok.at = datetime.datetime(9999, 12, 31, 20, 0, tzinfo=minus5)


def test_payload_header_is_what_the_model_writes() -> None:
    # guards the hand-made payloads above: the header is the envelope of the model's rows
    Person = person_model(co.SimpleBackend(), "json")
    tag, fingerprint, _ = _codec.unwrap(Person._schema.encode(Person(id=1, name="a", height=1)))
    assert Person._schema.header == _codec.header(tag, fingerprint)


primitives = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.sampled_from(["2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00", "1", "0"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.mark.parametrize("form", FORMS)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_decoded_row_holds_only_valid_values(form: str, data: st.DataObject) -> None:
    """Whatever a well-framed payload holds, a row that decodes holds values its fields
    accept (the same values validation would give), and the key it was read from."""
    serializer = form.split("-")[0]
    Person = MODELS.get(serializer) or MODELS.setdefault(
        serializer, person_model(co.SimpleBackend(), serializer)
    )
    schema = Person._schema
    forged = data.draw(st.dictionaries(st.sampled_from(sorted(GOOD)), primitives, max_size=4))
    row = {**GOOD, **forged}
    if form == "json":
        payload = schema.header + json.dumps(row, default=lambda b: b.hex()).encode()
    else:
        payload = _payload_for(Person, form, row)
    key = schema.key((row["id"],)) if type(row["id"]) is int else "person:1"
    try:
        obj = schema.decode(key, payload)
    except co.SerializationError as exc:
        assert (exc.key, exc.model) == (key, "Person")
        return
    for name, field in schema.fields.items():
        value = getattr(obj, name)
        assert field.clean(value) == value, name
        if value is not None:
            assert isinstance(value, field.python_type), name
        if isinstance(field, co.ListField) and field.field.python_type in (str, float):
            assert all(type(x) is field.field.python_type for x in value), name
        if isinstance(value, bool | int) and field.python_type in (int, float):
            assert type(value) is field.python_type, name
    assert schema.key_of(obj) == key


MODELS: dict[str, Any] = {}
