"""Every field type by every serializer round-trips exactly (Hypothesis)."""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import acacheorm as co
from acacheorm.cli._demo import Gender

SERIALIZERS = ["json", "msgpack", "pickle", "protobuf"]

offsets = st.builds(
    lambda m: datetime.timezone(datetime.timedelta(minutes=m)), st.integers(-23 * 60, 23 * 60)
)
aware = st.datetimes(
    min_value=datetime.datetime(1, 1, 2),
    max_value=datetime.datetime(9999, 12, 30),
    timezones=offsets,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)

FIELDS: dict[str, tuple[Any, Any]] = {
    "integer": (lambda **kw: co.IntegerField(**kw), st.integers()),
    "float": (lambda **kw: co.FloatField(**kw), st.floats(allow_nan=False)),
    "decimal": (
        lambda **kw: co.DecimalField(**kw),
        st.decimals(allow_nan=False, allow_infinity=True),
    ),
    "boolean": (lambda **kw: co.BooleanField(**kw), st.booleans()),
    "string": (lambda **kw: co.StringField(**kw), st.text()),
    "binary": (lambda **kw: co.BinaryField(**kw), st.binary()),
    "uuid": (lambda **kw: co.UUIDField(**kw), st.uuids()),
    "shortuuid": (lambda **kw: co.ShortUUIDField(**kw), st.uuids()),
    "enum": (lambda **kw: co.EnumField(Gender, **kw), st.sampled_from(Gender)),
    "datetime": (lambda **kw: co.DateTimeField(**kw), st.datetimes() | aware),
    "datetimetz": (lambda **kw: co.DateTimeTZField(**kw), aware),
    "date": (lambda **kw: co.DateField(**kw), st.dates()),
    "time": (lambda **kw: co.TimeField(**kw), st.times() | st.times(timezones=offsets)),
    "timestamp": (
        lambda **kw: co.TimestampField(**kw),
        st.datetimes(
            min_value=datetime.datetime(1, 1, 2),
            max_value=datetime.datetime(9999, 12, 30),
            timezones=st.just(datetime.UTC),
        ),
    ),
    "json": (lambda **kw: co.JSONField(**kw), json_values),
    "list": (lambda **kw: co.ListField(co.StringField(), **kw), st.lists(st.text())),
    "list_decimal": (
        lambda **kw: co.ListField(co.DecimalField(), **kw),
        st.lists(st.decimals(allow_nan=False)),
    ),
    "list_binary": (lambda **kw: co.ListField(co.BinaryField(), **kw), st.lists(st.binary())),
    "list_of_lists": (
        lambda **kw: co.ListField(co.ListField(co.IntegerField()), **kw),
        st.lists(st.lists(st.integers())),
    ),
    "struct": (
        lambda **kw: co.StructField(lambda c: [c.real, c.imag], lambda v: complex(*v), **kw),
        st.complex_numbers(allow_nan=False),
    ),
}


# Protobuf stores what its message declares (tests/protos.py AllFields): 64-bit integers,
# JSON numbers as doubles (so no whole-number floats inside JSON), and repeated fields have
# no presence (so list fields are not nullable there).
PROTOBUF_STRATEGIES: dict[str, Any] = {
    "integer": st.integers(-(2**63), 2**63 - 1),
    "json": st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=10,
    ),
    "list_of_lists": st.lists(st.lists(st.integers(-(2**53), 2**53))),
    "struct": st.builds(complex, st.integers(-(2**53), 2**53), st.integers(-(2**53), 2**53)),
}
LIST_FIELDS = {"list", "list_decimal", "list_binary", "list_of_lists"}


def make_model(serializer: str) -> type[co.Model]:
    attrs: dict[str, Any] = {"__module__": __name__, "id": co.IntegerField(primary_key=True)}
    for name, (factory, _) in FIELDS.items():
        if serializer == "protobuf" and name in LIST_FIELDS:
            attrs[name] = factory(default=list)
        else:
            attrs[name] = factory(null=True)
    if serializer == "protobuf":
        from tests.protos import AllFields

        serializer_obj: Any = co.ProtobufSerializer(AllFields)
        co.registry.register(serializer_obj.name, serializer_obj)
    else:
        serializer_obj = serializer
    attrs["Meta"] = type("Meta", (), {"backend": co.SimpleBackend(), "serializer": serializer_obj})
    return type(f"All_{serializer}", (co.Model,), attrs)


@pytest.fixture(scope="module", autouse=True)
def pickle_key() -> Any:
    old = co.registry.get_by_name("pickle")
    co.registry.register("pickle", co.PickleSerializer(secret_key=b"test-secret"))
    yield
    co.registry.register("pickle", old)


MODELS: dict[str, type[co.Model]] = {}


def model_for(serializer: str) -> type[co.Model]:
    if serializer not in MODELS:
        MODELS[serializer] = make_model(serializer)
    return MODELS[serializer]


def row_strategy(serializer: str) -> Any:
    optional = {}
    for name, (_, strategy) in FIELDS.items():
        if serializer == "protobuf":
            strategy = PROTOBUF_STRATEGIES.get(name, strategy)
            if name in LIST_FIELDS:
                optional[name] = strategy
                continue
        optional[name] = strategy | st.none()
    return st.fixed_dictionaries({}, optional=optional)


ROWS = {s: row_strategy(s) for s in SERIALIZERS}


@pytest.mark.parametrize("serializer", SERIALIZERS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_field_round_trips(serializer: str, data: st.DataObject) -> None:
    values = data.draw(ROWS[serializer])
    model = model_for(serializer)
    obj = model(id=1, **values)
    schema = model._schema
    payload = schema.encode(obj)
    back = schema.decode(schema.key_of(obj), payload)
    for name in FIELDS:
        want = getattr(obj, name)
        got = getattr(back, name)
        assert got == want, name
        assert type(got) is type(want), name
        if isinstance(want, datetime.datetime) and want.tzinfo is not None:
            assert got.utcoffset() is not None
        if isinstance(want, decimal.Decimal):
            assert str(got) == str(want)


@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_round_trip_through_a_backend(serializer: str) -> None:
    model = model_for(serializer)
    obj = model(
        id=7,
        binary=b"\x00\xff",
        decimal=decimal.Decimal("0.1000000000000000000001"),
        datetimetz=datetime.datetime(
            2020, 1, 1, 12, tzinfo=datetime.timezone(datetime.timedelta(hours=5))
        ),
        json={"a": [1, "b", None]},
    )
    await model.create(**obj.to_dict())
    got = await model.get(id=7)
    assert got.to_dict() == obj.to_dict()
    assert got.datetimetz.utcoffset() == datetime.timedelta(0)
    assert got.binary == b"\x00\xff"


def test_json_field_is_a_value_not_json_text() -> None:
    import json

    model = model_for("json")
    payload = model._schema.encode(model(id=1, json={"a": 1}))
    body = json.loads(payload[6:])
    assert body["json"] == {"a": 1}


def test_envelope_is_small() -> None:
    model = model_for("msgpack")
    import msgpack

    obj = model(id=1, string="x")
    payload = model._schema.encode(obj)
    bare = msgpack.packb(model._schema.to_primitives(obj), use_bin_type=True)
    assert len(payload) - len(bare) <= 8


def _json_types_only(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_types_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_types_only(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_to_dict_json_mode_round_trips_through_json_text(data: st.DataObject) -> None:
    values = data.draw(ROWS["json"])
    model = model_for("msgpack")
    obj = model(id=1, **values)
    as_json = obj.to_dict(mode="json")
    assert _json_types_only(as_json)
    text = json.dumps(as_json)  # no default=: every value is JSON data
    for back in (model.from_dict(json.loads(text)), model.from_dict(obj.to_dict())):
        for name in FIELDS:
            want = getattr(obj, name)
            got = getattr(back, name)
            assert got == want, name
            assert type(got) is type(want), name
            if isinstance(want, decimal.Decimal):
                assert str(got) == str(want)
    assert model.from_dict(json.loads(text)).to_dict(mode="json") == as_json


def test_to_dict_json_forms() -> None:
    model = model_for("msgpack")
    token = uuid.UUID("12345678-1234-5678-1234-567812345678")
    moment = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
    obj = model(
        id=1,
        decimal=decimal.Decimal("1.10"),
        binary=b"\x00\xff",
        uuid=token,
        enum=Gender.FEMALE,
        datetime=datetime.datetime(2024, 5, 1, 12, 0),
        datetimetz=moment,
        date=datetime.date(2024, 5, 1),
        time=datetime.time(9, 30),
        timestamp=moment,
        list_binary=[b"a"],
        json={"a": [1, 2]},
    )
    d = obj.to_dict(mode="json")
    assert d["decimal"] == "1.10"
    assert d["binary"] == "AP8="
    assert d["uuid"] == str(token)
    assert d["enum"] == 2
    assert d["datetime"] == "2024-05-01T12:00:00"
    assert d["datetimetz"] == "2024-05-01T12:00:00+00:00"
    assert d["date"] == "2024-05-01"
    assert d["time"] == "09:30:00"
    assert d["timestamp"] == "2024-05-01T12:00:00+00:00"
    assert d["list_binary"] == ["YQ=="]
    assert d["json"] == {"a": [1, 2]}
    assert d["string"] is None
    assert obj.to_dict()["binary"] == b"\x00\xff"
    with pytest.raises(ValueError, match=r"All_msgpack\.to_dict\(\): mode is 'python' or 'json'"):
        obj.to_dict(mode="yaml")


def test_from_dict_refuses_what_neither_form_accepts() -> None:
    model = model_for("msgpack")
    with pytest.raises(co.ValidationError, match="binary"):
        model.from_dict({"id": 1, "binary": "not base64!"})
    with pytest.raises(co.ValidationError, match="date"):
        model.from_dict({"id": 1, "date": "yesterday"})
    with pytest.raises(TypeError, match="unexpected keyword"):
        model.from_dict({"id": 1, "nope": 1})
    with pytest.raises(TypeError, match="takes a mapping"):
        model.from_dict([("id", 1)])  # type: ignore[arg-type]


def test_to_dict_json_of_foreign_keys() -> None:
    store = co.SimpleBackend()

    class Owner(co.Model):
        id = co.UUIDField(primary_key=True)

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    class Pair(co.Model):
        a = co.ForeignKeyField(Owner)
        b = co.DateField()

        class Meta:
            primary_key = co.CompositeKey("a", "b")
            serializer = "json"
            backend = store

    class Item(co.Model):
        id = co.IntegerField(primary_key=True)
        owner = co.ForeignKeyField(Owner)
        pair = co.ForeignKeyField(Pair, null=True)

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    token = uuid.uuid4()
    item = Item(id=1, owner=token, pair=(token, datetime.date(2024, 1, 2)))
    d = item.to_dict(mode="json")
    assert d == {"id": 1, "owner": str(token), "pair": [str(token), "2024-01-02"]}
    back = Item.from_dict(json.loads(json.dumps(d)))
    assert back.owner_id == token
    assert back.pair_id == (token, datetime.date(2024, 1, 2))


async def test_protobuf_json_field_too_deep_for_the_parser_is_refused_at_write() -> None:
    """A JSONField held in a google.protobuf.Value nests two or three messages per level, and
    protobuf's parsers read 100: a deeper value would be written and never read again."""
    model = model_for("protobuf")
    schema = model._schema
    store = schema.backend
    key = schema.key((1,))
    deep: Any = 1
    for i in range(60):
        deep = [deep] if i % 2 else {"k": deep}
    with pytest.raises(co.SerializationError, match="field json: nested deeper") as info:
        await model.create(id=1, json=deep)
    assert (info.value.key, info.value.model) == (key, model.__name__)
    assert await store.get(key) is None
    shallow: Any = 1
    for i in range(20):
        shallow = [shallow] if i % 2 else {"k": shallow}
    await model.create(id=1, json=shallow)
    assert (await model.get(id=1)).json == shallow
    await store.delete(key)
