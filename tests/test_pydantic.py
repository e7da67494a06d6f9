"""``pydantic_model``: every field type maps, constraints carry over, partial, exclude,
foreign keys, caching, and the round trip model → schema → model."""

from __future__ import annotations

import datetime
import decimal
import enum
import sys
import typing
import uuid
from typing import Any

import pydantic
import pytest

import acacheorm as co
from acacheorm._fields_scalar import _short_encode
from acacheorm._pydantic import pydantic_model
from acacheorm.cli._demo import Gender, define_models


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


UTC = datetime.UTC
NOW = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
U = uuid.UUID("12345678-1234-5678-1234-567812345678")


def make_everything() -> type[co.Model]:
    class Everything(co.Model):
        id = co.IntegerField(primary_key=True, min_value=1, max_value=1000)
        ratio = co.FloatField(min_value=0, max_value=1)
        price = co.DecimalField(max_digits=5, decimal_places=2)
        flag = co.BooleanField()
        name = co.StringField(min_length=2, max_length=5)
        blob = co.BinaryField(max_length=4)
        token = co.UUIDField()
        short = co.ShortUUIDField()
        colour = co.EnumField(Colour)
        naive = co.DateTimeField()
        aware = co.DateTimeTZField()
        day = co.DateField()
        at = co.TimeField()
        stamp = co.TimestampField()
        data = co.JSONField()
        tags = co.ListField(co.StringField(max_length=3), max_items=2)
        grid = co.ListField(co.ListField(co.IntegerField(null=True)))
        point = co.StructField(lambda p: [p.x, p.y], lambda v: Point(*v))

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    return Everything


GOOD: dict[str, Any] = {
    "id": 7,
    "ratio": 0.5,
    "price": decimal.Decimal("123.45"),
    "flag": True,
    "name": "abc",
    "blob": b"\x00\xff",
    "token": U,
    "short": U,
    "colour": Colour.BLUE,
    "naive": datetime.datetime(2024, 1, 2, 3, 4, 5),
    "aware": NOW,
    "day": datetime.date(2024, 1, 2),
    "at": datetime.time(12, 30),
    "stamp": NOW,
    "data": {"a": [1, 2.5, None, "x", True]},
    "tags": ["a", "bc"],
    "grid": [[1, None], []],
    "point": Point(1, 2),
}


@pytest.fixture
def Everything() -> type[co.Model]:
    return make_everything()


@pytest.fixture
def demo() -> tuple[Any, Any, Any]:
    return define_models(co.SimpleBackend(), "json")


def errors_for(schema: type[pydantic.BaseModel], **changes: Any) -> list[str]:
    """The locations pydantic reports for GOOD with ``changes``."""
    with pytest.raises(pydantic.ValidationError) as info:
        schema.model_validate({**GOOD, **changes})
    return [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]


# -- field types ------------------------------------------------------------------------------


def test_every_field_type_maps(Everything: type[co.Model]) -> None:
    schema = pydantic_model(Everything)
    hints = {name: f.annotation for name, f in schema.model_fields.items()}
    assert list(hints) == list(Everything._schema.fields)
    assert hints["id"] is int and hints["ratio"] is float and hints["flag"] is bool
    assert hints["price"] is decimal.Decimal and hints["name"] is str
    assert hints["blob"] is bytes and hints["token"] is uuid.UUID and hints["short"] is uuid.UUID
    assert hints["colour"] is Colour
    assert hints["naive"] is datetime.datetime
    assert hints["aware"] is pydantic.AwareDatetime and hints["stamp"] is pydantic.AwareDatetime
    assert hints["day"] is datetime.date and hints["at"] is datetime.time
    assert hints["data"] is pydantic.JsonValue
    assert typing.get_origin(hints["tags"]) is list
    assert typing.get_args(typing.get_args(hints["tags"])[0])[0] is str  # Annotated[str, ...]
    assert hints["grid"] == list[list[int | None]]
    assert hints["point"] is Any
    assert all(f.is_required() for f in schema.model_fields.values())

    value = schema.model_validate(GOOD)
    assert value.model_dump() == GOOD


def test_every_field_type_round_trips_through_json(Everything: type[co.Model]) -> None:
    schema = pydantic_model(Everything, exclude=["point"])
    good = {k: v for k, v in GOOD.items() if k != "point"}
    instance = Everything(**GOOD)
    text = schema.model_validate(instance).model_dump_json()
    back = Everything.from_dict(
        {**schema.model_validate_json(text).model_dump(), "point": Point(1, 2)}
    )
    assert {k: getattr(back, k) for k in good} == good


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"id": 0}, "id"),
        ({"id": 1001}, "id"),
        ({"ratio": 1.5}, "ratio"),
        ({"price": decimal.Decimal("1.234")}, "price"),  # decimal places
        ({"price": decimal.Decimal("1234.5")}, "price"),  # digits
        ({"name": "a"}, "name"),
        ({"name": "abcdef"}, "name"),
        ({"blob": b"12345"}, "blob"),
        ({"token": "not a uuid"}, "token"),
        ({"colour": "green"}, "colour"),
        ({"aware": datetime.datetime(2024, 1, 1)}, "aware"),  # naive refused
        ({"stamp": datetime.datetime(2024, 1, 1)}, "stamp"),
        ({"day": "yesterday"}, "day"),
        ({"data": {"a": object()}}, "data"),
        ({"tags": ["a", "b", "c"]}, "tags"),  # max_items
        ({"tags": ["abcd"]}, "tags.0"),  # the item field's max_length
        ({"grid": [["x"]]}, "grid.0.0"),
        ({"name": None}, "name"),  # not null
    ],
)
def test_constraints_carry_over(
    Everything: type[co.Model], changes: dict[str, Any], where: str
) -> None:
    schema = pydantic_model(Everything)
    locations = errors_for(schema, **changes)
    assert any(loc == where or loc.startswith(where + ".") for loc in locations), locations
    # The model refuses the same value.
    with pytest.raises(co.ValidationError):
        Everything(**{**GOOD, **changes})


def test_lenient_inputs_the_model_also_takes(Everything: type[co.Model]) -> None:
    schema = pydantic_model(Everything)
    value = schema.model_validate(
        {
            **GOOD,
            "short": _short_encode(U),  # the 22-character short form
            "token": str(U),
            "stamp": NOW.timestamp(),  # seconds since the epoch
            "colour": "red",
        }
    )
    assert value.short == U and value.token == U and value.colour is Colour.RED  # type: ignore[attr-defined]
    assert value.stamp == NOW  # type: ignore[attr-defined]
    Everything(**value.model_dump())


def test_json_schema_has_the_constraints(Everything: type[co.Model]) -> None:
    props = pydantic_model(Everything).model_json_schema()["properties"]
    assert (props["name"]["minLength"], props["name"]["maxLength"]) == (2, 5)
    assert (props["id"]["minimum"], props["id"]["maximum"]) == (1, 1000)
    assert props["tags"]["maxItems"] == 2 and props["tags"]["items"]["maxLength"] == 3
    assert props["token"]["format"] == "uuid"


# -- null and defaults ------------------------------------------------------------------------


def test_null_and_defaults() -> None:
    counter = iter(range(100))

    class Defaults(co.Model):
        id = co.IntegerField(primary_key=True)
        note = co.StringField(null=True)
        level = co.IntegerField(default=3)
        seq = co.IntegerField(default=lambda: next(counter))
        tags = co.ListField(co.StringField(), default=["x"])
        maybe = co.IntegerField(null=True, default=5)

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    schema = pydantic_model(Defaults)
    fields = schema.model_fields
    assert fields["note"].annotation == str | None and fields["note"].default is None
    assert fields["level"].default == 3 and fields["maybe"].default == 5
    assert fields["id"].is_required()
    a, b = schema(id=1), schema(id=2)
    assert (a.note, a.level, a.maybe) == (None, 3, 5)  # type: ignore[attr-defined]
    assert a.seq != b.seq  # type: ignore[attr-defined]  # a callable is called per instance
    a.tags.append("y")  # type: ignore[attr-defined]
    assert b.tags == ["x"]  # type: ignore[attr-defined]  # a mutable default is not shared
    assert schema(id=1, note=None).note is None  # type: ignore[attr-defined]


def test_implicit_uuid_primary_key_gets_a_factory() -> None:
    class Tag(co.Model):
        label = co.StringField()

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    schema = pydantic_model(Tag)
    assert schema.model_fields["id"].annotation is uuid.UUID
    first, second = schema(label="a"), schema(label="b")
    assert isinstance(first.id, uuid.UUID) and first.id != second.id  # type: ignore[attr-defined]
    assert Tag.from_dict(first.model_dump()).pk == first.id  # type: ignore[attr-defined]


def test_demo_user_defaults(demo: tuple[Any, Any, Any]) -> None:
    User = demo[0]
    schema = pydantic_model(User)
    fields = schema.model_fields
    assert fields["married"].default is False
    assert fields["gender"].annotation is Gender and fields["gender"].default is Gender.UNKNOWN
    assert fields["phones"].default_factory is list
    assert fields["email"].annotation == str | None
    sam = schema(id=1, name="Sam", height=1.8)
    assert sam.created_at.tzinfo is not None  # type: ignore[attr-defined]


# -- partial and exclude ----------------------------------------------------------------------


def test_partial(demo: tuple[Any, Any, Any]) -> None:
    User = demo[0]
    patch = pydantic_model(User, partial=True, exclude=["id", "created_at"])
    assert patch.__name__ == "UserPartialWithoutCreatedAtId"
    assert all(not f.is_required() and f.default is None for f in patch.model_fields.values())
    assert patch().model_dump(exclude_unset=True) == {}
    body = patch(height=1.9, email=None)
    assert body.model_dump(exclude_unset=True) == {"height": 1.9, "email": None}
    with pytest.raises(pydantic.ValidationError):
        patch(name="x" * 65)  # constraints still apply to a value that is given
    # null is accepted by the schema even for a required field; the model refuses it.
    with pytest.raises(co.ValidationError):
        User.from_dict({"id": 1, "height": 1.0, **patch(name=None).model_dump(exclude_unset=True)})


def test_exclude(demo: tuple[Any, Any, Any]) -> None:
    User, Article, _ = demo
    schema = pydantic_model(User, exclude=["created_at", "phones"])
    assert "created_at" not in schema.model_fields and "phones" not in schema.model_fields
    assert schema.__name__ == "UserWithoutCreatedAtPhones"
    assert "author" not in pydantic_model(Article, exclude=["author_id"]).model_fields
    with pytest.raises(TypeError, match="'nope'"):
        pydantic_model(User, exclude=["nope"])
    with pytest.raises(TypeError, match="single str"):
        pydantic_model(User, exclude="phones")


# -- foreign keys -----------------------------------------------------------------------------


def test_foreign_keys_are_related_primary_keys(demo: tuple[Any, Any, Any]) -> None:
    _, Article, Collection = demo
    assert pydantic_model(Article).model_fields["author"].annotation is int

    class Note(co.Model):
        on = co.ForeignKeyField(Collection)  # composite pk of two foreign keys
        parent = co.ForeignKeyField("self", null=True)
        text = co.StringField()

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    fields = pydantic_model(Note).model_fields
    assert fields["on"].annotation == tuple[int, int]
    assert fields["parent"].annotation == uuid.UUID | None  # Note's implicit UUID pk
    note = pydantic_model(Note)(on=[1, 2], text="hi")
    assert note.on == (1, 2)  # type: ignore[attr-defined]
    assert Note.from_dict(note.model_dump()).on_id == (1, 2)  # type: ignore[attr-defined]


async def test_round_trip_with_the_backend(demo: tuple[Any, Any, Any]) -> None:
    User, Article, Collection = demo
    UserIn = User.pydantic_model(exclude=["created_at"])
    UserOut = User.pydantic_model()
    user = User.from_dict(UserIn(id=1, name="Sam", height=1.78, gender=2).model_dump())
    assert user.gender is Gender.FEMALE and user.phones == []
    await user.save(force_insert=True)
    stored = await User.get(id=1)
    out = UserOut.model_validate(stored.to_dict())
    assert out.model_dump() == stored.to_dict()
    assert UserOut.model_validate(stored) == out  # an instance validates directly
    assert User.from_dict(UserOut.model_validate_json(out.model_dump_json()).model_dump()) == user

    article = await Article.create(id=10, author=user, title="t")
    loaded = await Article.get(id=10)
    assert Article.pydantic_model().model_validate(loaded).author == 1  # type: ignore[attr-defined]
    with pytest.raises(pydantic.ValidationError):
        UserOut.model_validate(loaded.author)  # sparse: only its pk is known
    collection = await Collection.create(collector=user, article=article)
    dumped = Collection.pydantic_model().model_validate(collection).model_dump()
    assert dumped == {"collector": 1, "article": 10, "mark": ""}


# -- naming, caching, errors ------------------------------------------------------------------


def test_cached_per_model_and_arguments(demo: tuple[Any, Any, Any]) -> None:
    User = demo[0]
    assert pydantic_model(User) is pydantic_model(User) is User.pydantic_model()
    assert pydantic_model(User, exclude=["id", "name"]) is pydantic_model(
        User, exclude=("name", "id")
    )
    assert pydantic_model(User, partial=True) is not pydantic_model(User)
    assert pydantic_model(User, name="UserOut") is not pydantic_model(User)
    assert pydantic_model(User, name="UserOut").__name__ == "UserOut"
    other_user = define_models(co.SimpleBackend(), "json")[0]
    assert pydantic_model(other_user) is not pydantic_model(User)
    assert pydantic_model(User).__module__ == User.__module__
    assert pydantic_model(User).__acacheorm_model__ is User  # type: ignore[attr-defined]


def test_bad_arguments(demo: tuple[Any, Any, Any]) -> None:
    class Abstract(co.Model):
        class Meta:
            abstract = True
            backend = co.SimpleBackend()
            serializer = "json"

    with pytest.raises(TypeError, match="abstract"):
        pydantic_model(Abstract)
    with pytest.raises(TypeError, match="model class"):
        pydantic_model(dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="identifier"):
        pydantic_model(demo[0], name="not a name")
    with pytest.raises(TypeError, match="partial"):
        pydantic_model(demo[0], partial="yes")  # type: ignore[arg-type]


def test_missing_pydantic_names_the_extra(
    demo: tuple[Any, Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pydantic", None)
    with pytest.raises(co.ConfigurationError, match=r"pip install 'acacheorm\[pydantic\]'"):
        pydantic_model(demo[0], name="NeverBuilt")


def test_a_field_declares_its_own_pydantic_type() -> None:
    """The mapping asks each field (``pydantic_type``): a field of your own can say what
    validates it, and a subclass of a built-in field keeps its parent's constraints."""

    class Slug(co.StringField):
        def pydantic_type(self, pyd: Any) -> Any:
            return typing.Annotated[str, pyd.StringConstraints(pattern="^[a-z-]+$")]

    class Score(co.IntegerField):
        pass

    class Page(co.Model):
        id = co.IntegerField(primary_key=True)
        slug = Slug()
        score = Score(min_value=0)

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    schema = pydantic_model(Page)
    assert schema(id=1, slug="a-b", score=0).slug == "a-b"
    with pytest.raises(pydantic.ValidationError, match="slug"):
        schema(id=1, slug="Not A Slug", score=0)
    with pytest.raises(pydantic.ValidationError, match="score"):
        schema(id=1, slug="a", score=-1)
