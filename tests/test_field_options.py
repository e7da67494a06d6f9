"""Field options: DecimalField ``auto_round``/``rounding``, ``formats=`` on the date and time
fields, TimestampField ``resolution``/``utc``. Each option on every serializer and on memory
and Redis (exact values back), bad options at definition, the schema fingerprint and the
pydantic schema."""

from __future__ import annotations

import datetime
import decimal
import json
from typing import Any

import pydantic
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import acacheorm as co
from acacheorm import _codec
from acacheorm.backends.base import Backend
from tests.conftest import BACKENDS
from tests.protos import PACKAGE, F, _field

D = decimal.Decimal
UTC = datetime.UTC
PLUS8 = datetime.timezone(datetime.timedelta(hours=8))
SERIALIZERS = ["json", "msgpack", "pickle", "protobuf"]
STORES = [b for b in ("memory", "redis") if b in BACKENDS]
FORMATS = ["%m/%d/%Y %I:%M %p", "%Y-%m-%d %H:%M:%S"]


# -- the model, with one field per option ---------------------------------------------------


def _options_message() -> Any:
    """``FieldOptions``: the protobuf message of the model below (strings for decimals and
    date texts, 64-bit integers for timestamps)."""
    name = "FieldOptions"
    pool = descriptor_pool.Default()
    try:
        found = pool.FindMessageTypeByName(f"{PACKAGE}.{name}")
    except KeyError:
        fp = descriptor_pb2.FileDescriptorProto(
            name="acacheorm_test/field_options.proto", package=PACKAGE, syntax="proto3"
        )
        m = fp.message_type.add(name=name)
        fields = [
            ("id", F.TYPE_INT64),
            ("price", F.TYPE_STRING),
            ("price_up", F.TYPE_STRING),
            ("exact", F.TYPE_STRING),
            ("dt", F.TYPE_STRING),
            ("dt_tz", F.TYPE_STRING),
            ("day", F.TYPE_STRING),
            ("at", F.TYPE_STRING),
            ("s", F.TYPE_INT64),
            ("ms", F.TYPE_INT64),
            ("us", F.TYPE_INT64),
            ("naive_utc", F.TYPE_SINT64),
        ]
        number = 0
        for number, (fname, ftype) in enumerate(fields, start=1):
            _field(m, fname, number, ftype, optional=True)
        _field(m, "prices", number + 1, F.TYPE_STRING, repeated=True)
        _field(m, "stamps", number + 2, F.TYPE_INT64, repeated=True)
        pool.Add(fp)
        found = pool.FindMessageTypeByName(f"{PACKAGE}.{name}")
    return message_factory.GetMessageClass(found)


def serializer_for(name: str) -> Any:
    if name == "pickle":
        return co.PickleSerializer(secret_key=b"field-options-key" * 2)
    if name == "protobuf":
        return co.ProtobufSerializer(_options_message())
    return name


def option_fields() -> dict[str, co.Field[Any]]:
    """One field per option (fresh instances for each model)."""
    return {
        "id": co.IntegerField(primary_key=True),
        "price": co.DecimalField(decimal_places=2, auto_round=True, null=True),
        "price_up": co.DecimalField(
            decimal_places=2, auto_round=True, rounding=decimal.ROUND_UP, null=True
        ),
        "exact": co.DecimalField(decimal_places=2, null=True),
        "dt": co.DateTimeField(formats=FORMATS, null=True),
        "dt_tz": co.DateTimeTZField(formats=["%d.%m.%Y %H:%M %z"], null=True),
        "day": co.DateField(formats=["%d.%m.%Y", "%Y/%m/%d"], null=True),
        "at": co.TimeField(formats=["%I:%M %p", "%H.%M.%S %z"], null=True),
        "s": co.TimestampField(resolution=1, null=True),
        "ms": co.TimestampField(resolution=3, null=True),  # cacheorm's shorthand for 10**3
        "us": co.TimestampField(resolution=10**6, null=True),
        "naive_utc": co.TimestampField(null=True, utc=True),
        "prices": co.ListField(co.DecimalField(decimal_places=1, auto_round=True), default=list),
        "stamps": co.ListField(co.TimestampField(resolution=10**3), default=list),
    }


def make_model(backend: Backend, serializer: str) -> Any:
    attrs: dict[str, Any] = {"__module__": __name__, **option_fields()}
    attrs["Meta"] = type(
        "Meta", (), {"backend": backend, "serializer": serializer_for(serializer), "name": "opt"}
    )
    return type("Options", (co.Model,), attrs)


DT = datetime.datetime(2020, 1, 1, 10, 11, 12, 12345, tzinfo=UTC)
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)

#: what is given, and what the instance holds and reads back (exactly, type included)
GIVEN: dict[str, Any] = {
    "price": D("1.2345"),
    "price_up": D("1.2345"),
    "exact": D("3.1"),
    "dt": "01/01/2020 10:11 AM",
    "dt_tz": "01.02.2020 10:00 +0800",
    "day": "02.01.2020",
    "at": "10:11 PM",
    "s": DT,
    "ms": DT,
    "us": DT,
    "naive_utc": DT.replace(tzinfo=None),
    "prices": [D("1.25"), 6.789, D("-0.05"), D("7")],
    "stamps": [DT, 1.25],
}
EXPECTED: dict[str, Any] = {
    "price": D("1.23"),
    "price_up": D("1.24"),
    "exact": D("3.1"),
    "dt": datetime.datetime(2020, 1, 1, 10, 11),
    "dt_tz": datetime.datetime(2020, 2, 1, 2, 0, tzinfo=UTC),
    "day": datetime.date(2020, 1, 2),
    "at": datetime.time(22, 11),
    "s": DT.replace(microsecond=0),
    "ms": DT.replace(microsecond=12000),
    "us": DT,
    "naive_utc": DT,
    "prices": [D("1.2"), D("6.8"), D("-0.0"), D("7")],
    "stamps": [DT.replace(microsecond=12000), EPOCH + datetime.timedelta(seconds=1.25)],
}
#: what an instance holds before it is stored (a DateTimeTZField reads back in UTC)
HELD = {**EXPECTED, "dt_tz": datetime.datetime(2020, 2, 1, 10, 0, tzinfo=PLUS8)}
#: what is stored for them (the serializer's primitives)
STORED: dict[str, Any] = {
    "price": "1.23",
    "price_up": "1.24",
    "exact": "3.1",
    "dt": "2020-01-01T10:11:00",
    "dt_tz": "2020-02-01T02:00:00+00:00",
    "day": "2020-01-02",
    "at": "22:11:00",
    "s": 1577873472,
    "ms": 1577873472012,
    "us": 1577873472012345,
    "naive_utc": 1577873472012345,
    "prices": ["1.2", "6.8", "-0.0", "7"],
    "stamps": [1577873472012, 1250],
}


def assert_exact(got: Any, want: Any, name: str) -> None:
    assert type(got) is type(want), f"{name}: {got!r} is not a {type(want).__name__}"
    assert got == want, f"{name}: {got!r} != {want!r}"
    if isinstance(want, D):
        assert str(got) == str(want), name
    if isinstance(want, datetime.datetime | datetime.time):
        assert got.utcoffset() == want.utcoffset(), name
    if isinstance(want, list):
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_exact(g, w, f"{name}[{i}]")


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("backend_name", STORES)
async def test_every_option_round_trips(backend: Backend, serializer: str) -> None:
    model = make_model(backend, serializer)
    made = await model.create(id=1, **GIVEN)
    for name, want in HELD.items():
        assert_exact(getattr(made, name), want, name)  # what you hold is what is stored

    raw = await backend.get("opt:1")
    schema = model._schema
    assert raw is not None and raw.startswith(schema.row_header)  # the current layout
    stored = _codec.body_fields(_codec.open_envelope(raw), schema.serializer)
    assert {name: stored[name] for name in STORED} == STORED
    assert all(type(stored[n]) is type(v) for n, v in STORED.items())

    got = await model.get(id=1)
    for name, want in EXPECTED.items():
        assert_exact(getattr(got, name), want, name)
    [again] = await model.query_many(1)
    assert again.to_dict() == made.to_dict()

    empty = await model.create(id=2)
    back = await model.get(id=2)
    assert back.to_dict() == empty.to_dict()
    assert all(getattr(back, n) is None for n in EXPECTED if n not in ("prices", "stamps"))


@pytest.mark.parametrize("backend_name", STORES)
async def test_refused_values_write_nothing(backend: Backend) -> None:
    model = make_model(backend, "json")
    with pytest.raises(co.ValidationError, match=r"Options\.exact: more than 2 decimal places"):
        await model.create(id=1, exact=D("1.234"))
    with pytest.raises(co.ValidationError) as info:
        await model.create(id=1, dt="2020 01 01")
    assert info.value.field == "dt"
    assert "'%m/%d/%Y %I:%M %p', '%Y-%m-%d %H:%M:%S'" in str(info.value)
    with pytest.raises(co.ValidationError, match="utc=True takes a naive datetime as UTC"):
        await model.create(id=1, us=datetime.datetime(2020, 1, 1))
    with pytest.raises(co.ValidationError, match="aware"):
        await model.create(id=1, dt_tz="2020-02-01T10:00")  # no offset: which instant?
    assert await model.get_or_none(id=1) is None
    assert await backend.get("opt:1") is None


@pytest.mark.parametrize("backend_name", STORES)
async def test_updates_apply_the_options(backend: Backend) -> None:
    model = make_model(backend, "msgpack")
    await model.create(id=1)
    got = await model.set_by_id(1, {"price": 6.789, "dt": "2020-01-01 10:11:12", "ms": 1.0006})
    assert (got.price, got.dt) == (D("6.79"), datetime.datetime(2020, 1, 1, 10, 11, 12))
    assert got.ms == EPOCH + datetime.timedelta(milliseconds=1001)
    await model.update(id=1, price_up=D("0.001"))
    assert (await model.get(id=1)).price_up == D("0.01")


# -- DecimalField ---------------------------------------------------------------------------


def clean(field: co.Field[Any], value: Any) -> Any:
    field.name = "f"
    return field.clean(value)


@pytest.mark.parametrize(
    ("options", "value", "expected"),
    [
        ({}, D("1.2345"), "1.23"),
        ({}, 6.789, "6.79"),
        ({}, "1.235", "1.24"),
        ({}, "1.245", "1.24"),  # half to even, the default
        ({}, "-1.245", "-1.24"),
        ({}, D("3"), "3"),  # within the places: kept as given
        ({}, D("-3.14"), "-3.14"),
        ({}, 0, "0"),
        ({}, D("1E+2"), "1E+2"),
        ({}, D("Infinity"), "Infinity"),
        ({}, D("123456789012345678901234567890.125"), "123456789012345678901234567890.12"),
        ({"rounding": decimal.ROUND_UP}, D("1.2345"), "1.24"),
        ({"rounding": decimal.ROUND_UP}, D("-1.231"), "-1.24"),
        ({"rounding": decimal.ROUND_DOWN}, D("1.239"), "1.23"),
        ({"rounding": decimal.ROUND_HALF_UP}, "1.245", "1.25"),
        ({"rounding": decimal.ROUND_FLOOR}, "-1.231", "-1.24"),
        ({"decimal_places": 0}, "2.5", "2"),
        ({"decimal_places": 0}, "3.5", "4"),
        ({"max_digits": 3}, "9.994", "9.99"),
    ],
)
def test_auto_round(options: dict[str, Any], value: Any, expected: str) -> None:
    field = co.DecimalField(**{"decimal_places": 2, "auto_round": True, **options})
    got = clean(field, value)
    assert type(got) is D and str(got) == expected


def test_digits_are_checked_after_rounding() -> None:
    field = co.DecimalField(max_digits=3, decimal_places=2, auto_round=True)
    with pytest.raises(co.ValidationError, match="more than 3 digits"):
        clean(field, "9.996")  # rounds to 10.00
    with pytest.raises(co.ValidationError, match="more than 2 decimal places"):
        clean(co.DecimalField(decimal_places=2), "1.234")  # without auto_round: refused


# -- formats --------------------------------------------------------------------------------


def test_without_formats_text_is_still_refused() -> None:
    for field in (co.DateTimeField(), co.DateTimeTZField(), co.DateField(), co.TimeField()):
        with pytest.raises(co.ValidationError, match="expected"):
            clean(field, "2020-01-01")


def test_iso_8601_is_always_accepted_and_tried_first() -> None:
    day = co.DateField(formats=["%Y-%d-%m"])
    assert clean(day, "2020-01-02") == datetime.date(2020, 1, 2)  # ISO reading wins
    assert clean(day, "2020-13-02") == datetime.date(2020, 2, 13)  # not ISO: the format
    only_iso = co.DateTimeField(formats=[])
    assert clean(only_iso, "2020-01-02T03:04:05+08:00") == datetime.datetime(
        2020, 1, 2, 3, 4, 5, tzinfo=PLUS8
    )
    with pytest.raises(co.ValidationError, match="not ISO 8601 text"):
        clean(only_iso, "01/02/2020")


def test_the_first_format_that_fits_is_used() -> None:
    field = co.DateField(formats=("%d/%m/%Y", "%m/%d/%Y"))
    assert clean(field, "01/02/2020") == datetime.date(2020, 2, 1)
    assert clean(field, "01/13/2020") == datetime.date(2020, 1, 13)  # only the second fits
    with pytest.raises(co.ValidationError, match=r"nor the formats \['%d/%m/%Y', '%m/%d/%Y'\]"):
        clean(field, "13/13/2020")


def test_formats_on_each_date_and_time_field() -> None:
    assert clean(
        co.DateTimeTZField(formats=["%d.%m.%Y %H:%M %z"]), "01.02.2020 10:00 +0800"
    ) == datetime.datetime(2020, 2, 1, 10, tzinfo=PLUS8)
    with pytest.raises(co.ValidationError, match="aware"):
        clean(co.DateTimeTZField(formats=["%d.%m.%Y"]), "01.02.2020")
    time_field = co.TimeField(formats=["%H.%M %z"])
    got = clean(time_field, "10.30 +0800")
    assert got == datetime.time(10, 30, tzinfo=PLUS8) and got.utcoffset() is not None
    assert clean(time_field, "10:30:00") == datetime.time(10, 30)
    assert clean(co.DateField(formats=["%d.%m.%Y %H:%M"]), "01.02.2020 10:30") == datetime.date(
        2020, 2, 1
    )
    # values that are not text are unchanged by formats
    assert clean(co.DateField(formats=["%d.%m.%Y"]), datetime.date(2020, 1, 1)) == datetime.date(
        2020, 1, 1
    )
    with pytest.raises(co.ValidationError, match="not datetime"):
        clean(co.DateField(formats=["%d.%m.%Y"]), datetime.datetime(2020, 1, 1))


# -- TimestampField -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "resolution"),
    [
        (1, 1),
        (10, 10),
        (100, 100),
        (10**3, 10**3),
        (10**4, 10**4),
        (10**5, 10**5),
        (10**6, 10**6),
        (0, 1),  # cacheorm's shorthand: the exponent
        (2, 100),
        (3, 10**3),
        (4, 10**4),
        (5, 10**5),
        (6, 10**6),
    ],
)
def test_resolutions(given: int, resolution: int) -> None:
    field = co.TimestampField(resolution=given)
    assert field.resolution == resolution
    value = clean(field, DT)
    assert field.to_primitive(value, True) == round(DT.timestamp() * resolution)
    assert field.from_primitive(field.to_primitive(value, True), True) == value


def test_default_resolution_is_microseconds() -> None:
    field = co.TimestampField()
    assert field.resolution == 10**6 and not field.utc
    assert field.to_primitive(clean(field, DT), True) == 1577873472012345


def test_rounding_to_the_resolution_is_half_to_even() -> None:
    seconds = co.TimestampField(resolution=1)
    half = datetime.timedelta(milliseconds=500)
    assert clean(seconds, EPOCH + half) == EPOCH
    assert clean(seconds, EPOCH + 3 * half) == EPOCH + 4 * half
    assert clean(seconds, EPOCH - 3 * half) == EPOCH - 4 * half
    assert seconds.to_primitive(clean(seconds, EPOCH - 3 * half), True) == -2
    assert clean(seconds, 1.5) == EPOCH + 4 * half  # seconds since the epoch
    assert clean(seconds, 7) == EPOCH + datetime.timedelta(seconds=7)
    millis = co.TimestampField(resolution=10**3)
    assert clean(millis, 1.25) == EPOCH + datetime.timedelta(milliseconds=1250)
    assert millis.to_primitive(clean(millis, 2), True) == 2000
    last = datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    with pytest.raises(co.ValidationError):
        clean(seconds, last)  # rounds past the last datetime: refused, not wrapped
    with pytest.raises(co.ValidationError, match="finite"):
        clean(seconds, float("nan"))


def test_utc() -> None:
    naive = datetime.datetime(2020, 1, 1, 10)
    with pytest.raises(co.ValidationError, match="aware"):
        clean(co.TimestampField(), naive)
    field = co.TimestampField(utc=True)
    got = clean(field, naive)
    assert got == naive.replace(tzinfo=UTC) and got.tzinfo is UTC
    other = clean(field, naive.replace(tzinfo=PLUS8))
    assert other == naive.replace(tzinfo=PLUS8) and other.tzinfo is UTC
    assert field.from_primitive(field.to_primitive(got, True), True).tzinfo is UTC


# -- bad options at definition --------------------------------------------------------------

DATE_FIELDS = [co.DateTimeField, co.DateTimeTZField, co.DateField, co.TimeField]
BAD_OPTIONS: list[tuple[Any, dict[str, Any], str]] = [
    (co.DecimalField, {"decimal_places": 2, "auto_round": "yes"}, "auto_round must be a bool"),
    (co.DecimalField, {"auto_round": True}, "auto_round=True needs decimal_places"),
    (
        co.DecimalField,
        {"decimal_places": 2, "auto_round": True, "rounding": "ROUND_SIDEWAYS"},
        "rounding must be a rounding mode",
    ),
    (
        co.DecimalField,
        {"decimal_places": 2, "auto_round": True, "rounding": 1},
        "rounding must be a rounding mode",
    ),
    (
        co.DecimalField,
        {"decimal_places": 2, "rounding": decimal.ROUND_UP},
        "rounding is used only with auto_round=True",
    ),
    (co.DecimalField, {"decimal_places": -1}, "decimal_places must be an int >= 0"),
    (co.DecimalField, {"decimal_places": 1.5}, "decimal_places must be an int >= 0"),
    (co.DecimalField, {"decimal_places": True}, "decimal_places must be an int >= 0"),
    (co.DecimalField, {"max_digits": 0}, "max_digits must be a positive int"),
    (co.DecimalField, {"max_digits": 2, "decimal_places": 3}, "is more than max_digits"),
    *[(f, {"formats": "%Y-%m-%d"}, "formats takes a list") for f in DATE_FIELDS],
    *[(f, {"formats": b"%Y"}, "formats takes a list") for f in DATE_FIELDS],
    *[(f, {"formats": ["%Y", 1]}, "1 is not a strptime format") for f in DATE_FIELDS],
    *[(f, {"formats": [""]}, "'' is not a strptime format") for f in DATE_FIELDS],
    *[(f, {"formats": ["%Y-%q"]}, "bad directive") for f in DATE_FIELDS],
    *[(f, {"formats": ["%Y %"]}, "stray %") for f in DATE_FIELDS],
    (co.TimestampField, {"resolution": 7}, "resolution must be"),
    (co.TimestampField, {"resolution": 10**7}, "resolution must be"),
    (co.TimestampField, {"resolution": 5000}, "resolution must be"),
    (co.TimestampField, {"resolution": -3}, "resolution must be"),
    (co.TimestampField, {"resolution": 1000.0}, "resolution must be"),
    (co.TimestampField, {"resolution": True}, "resolution must be"),
    (co.TimestampField, {"resolution": None}, "resolution must be"),
    (co.TimestampField, {"resolution": "ms"}, "resolution must be"),
    (co.TimestampField, {"utc": "yes"}, "utc must be a bool"),
    (co.TimestampField, {"utc": 1}, "utc must be a bool"),
]


@pytest.mark.parametrize(
    ("field_cls", "options", "match"),
    BAD_OPTIONS,
    ids=[f"{c.__name__}-{o}" for c, o, _ in BAD_OPTIONS],
)
def test_bad_option_is_a_configuration_error_naming_the_field(
    field_cls: Any, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(co.ConfigurationError) as info:

        class Bad(co.Model):
            id = co.IntegerField(primary_key=True)
            when = field_cls(null=True, **options)

            class Meta:
                backend = co.SimpleBackend()
                serializer = "json"

    message = str(info.value)
    assert message.startswith("Bad.when: "), message
    assert match in message


def test_bad_option_of_an_abstract_base_names_the_concrete_model() -> None:
    class Base(co.Model):
        price = co.DecimalField(auto_round=True)

        class Meta:
            abstract = True
            backend = co.SimpleBackend()
            serializer = "json"

    with pytest.raises(co.ConfigurationError, match=r"^Item\.price: auto_round=True needs"):

        class Item(Base):
            id = co.IntegerField(primary_key=True)


def test_bad_option_of_a_field_outside_a_model_is_refused_on_use() -> None:
    """A ListField's item field is never part of the model itself: its bad option shows on
    the first value instead of being ignored."""

    class Basket(co.Model):
        id = co.IntegerField(primary_key=True)
        prices = co.ListField(co.DecimalField(decimal_places=2, rounding="up"), default=list)
        stamps = co.ListField(co.TimestampField(resolution=7), default=list)

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    with pytest.raises(co.ValidationError, match="rounding must be a rounding mode"):
        Basket(id=1, prices=[D("1")])
    with pytest.raises(co.ValidationError, match="resolution must be"):
        Basket(id=1, stamps=[DT])
    with pytest.raises(co.ConfigurationError, match="resolution must be"):
        Basket.stamps.field.from_primitive(1, True)


# -- schema fingerprint ---------------------------------------------------------------------


def fingerprint_before_options(model: Any) -> int:
    """The fingerprint as computed before these options existed."""
    return _codec.fingerprint([f"{n}={type(f).__name__}" for n, f in model._schema.fields.items()])


def model_with(**fields: co.Field[Any]) -> Any:
    attrs: dict[str, Any] = {"__module__": __name__, "id": co.IntegerField(primary_key=True)}
    attrs.update(fields)
    attrs["Meta"] = type("Meta", (), {"backend": co.SimpleBackend(), "serializer": "json"})
    return type("Fp", (co.Model,), attrs)


def test_options_that_do_not_change_what_is_stored_keep_the_fingerprint() -> None:
    plain = model_with(
        price=co.DecimalField(decimal_places=2),
        dt=co.DateTimeField(),
        day=co.DateField(),
        at=co.TimeField(),
        stamp=co.TimestampField(),
        stamps=co.ListField(co.TimestampField()),
    )
    optioned = model_with(
        price=co.DecimalField(decimal_places=2, auto_round=True, rounding=decimal.ROUND_UP),
        dt=co.DateTimeField(formats=FORMATS),
        day=co.DateField(formats=["%d.%m.%Y"]),
        at=co.TimeField(formats=[]),
        stamp=co.TimestampField(utc=True, resolution=10**6),
        stamps=co.ListField(co.TimestampField(resolution=6)),
    )
    assert plain._schema.fingerprint == fingerprint_before_options(plain)
    assert optioned._schema.fingerprint == plain._schema.fingerprint  # rows stay on fast path


def test_resolution_is_part_of_the_fingerprint() -> None:
    prints = {
        model_with(stamp=co.TimestampField(resolution=r))._schema.fingerprint
        for r in (1, 10**3, 10**6)
    }
    assert len(prints) == 3
    in_list = {
        model_with(stamps=co.ListField(co.TimestampField(resolution=r)))._schema.fingerprint
        for r in (1, 10**3, 10**6)
    }
    assert len(in_list) == 3


async def test_rows_of_another_resolution_are_not_read_on_the_fast_path() -> None:
    store = co.SimpleBackend()

    def stamp_model(resolution: int) -> Any:
        attrs: dict[str, Any] = {
            "__module__": __name__,
            "id": co.IntegerField(primary_key=True),
            "at": co.TimestampField(resolution=resolution),
            "Meta": type("Meta", (), {"backend": store, "serializer": "json", "name": "st"}),
        }
        return type("Stamp", (co.Model,), attrs)

    micros, millis = stamp_model(10**6), stamp_model(10**3)
    await micros.create(id=1, at=DT)
    raw = await store.get("st:1")
    assert raw is not None and raw[:6] == micros._schema.header != millis._schema.header


# -- pydantic -------------------------------------------------------------------------------


def test_pydantic_schema_validates_like_the_model() -> None:
    model = make_model(co.SimpleBackend(), "json")
    schema = co.pydantic_model(model)
    body = schema.model_validate({"id": 1, **GIVEN})
    for name, want in HELD.items():
        assert_exact(getattr(body, name), want, name)
    assert model(**body.model_dump()).to_dict() == model(id=1, **GIVEN).to_dict()

    text = schema.model_validate(model(id=1, **GIVEN)).model_dump_json()
    again = schema.model_validate_json(text)
    for name, want in HELD.items():
        assert_exact(getattr(again, name), want, name)

    with pytest.raises(pydantic.ValidationError, match="nor the formats"):
        schema.model_validate({"id": 1, "dt": "2020 01 01"})
    with pytest.raises(pydantic.ValidationError, match="more than 2 decimal places"):
        schema.model_validate({"id": 1, "exact": "1.234"})
    with pytest.raises(pydantic.ValidationError, match="timezone"):
        schema.model_validate({"id": 1, "us": "2020-01-01T10:00:00"})


def test_pydantic_json_schema_declares_the_options() -> None:
    model = make_model(co.SimpleBackend(), "json")
    schema = co.pydantic_model(model)

    def prop(name: str, mode: str = "validation") -> dict[str, Any]:
        found = schema.model_json_schema(mode=mode)["properties"][name]  # type: ignore[arg-type]
        if "anyOf" in found:  # null=True
            found = next(s for s in found["anyOf"] if s.get("type") != "null")
        return found  # type: ignore[no-any-return]

    assert prop("price_up")["x-rounding"] == decimal.ROUND_UP
    assert prop("price")["x-decimal-places"] == 2
    assert "x-rounding" not in prop("exact")
    assert prop("dt")["x-formats"] == FORMATS
    assert "format" not in prop("dt")  # any of the formats is accepted on input ...
    assert prop("dt", "serialization")["format"] == "date-time"  # ... ISO 8601 comes out
    assert prop("day")["x-formats"] == ["%d.%m.%Y", "%Y/%m/%d"]
    assert prop("ms")["x-resolution"] == 1000
    assert prop("naive_utc")["x-utc"] is True
    assert prop("stamps")["items"]["x-resolution"] == 1000
    json.dumps(schema.model_json_schema())  # serializable as it is


def test_pydantic_reports_a_timestamp_rounded_out_of_range() -> None:
    schema = co.pydantic_model(make_model(co.SimpleBackend(), "json"), partial=True)
    last = datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    with pytest.raises(pydantic.ValidationError, match="s\n"):
        schema.model_validate({"s": last})  # seconds: rounds past the last datetime
    assert schema.model_validate({"us": last}).us == last
