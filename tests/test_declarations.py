"""Declaring models the ways users write them, and the traps that must fail loudly:
reserved names, field classes without parentheses, typos on instances, annotated fields,
``pk=``, ``auto_now``, replacing an inherited primary key, ``"self"`` and model names in
foreign keys, abstract models."""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
from typing import Any, ClassVar

import pytest

import acacheorm as co

store = co.SimpleBackend()


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def model(cls_name: str, module: str = __name__, **attrs: Any) -> Any:
    # Models of other (pretend) modules get a namespace of their own: two modules' models of
    # one name on one backend would share keys (a KeyClashWarning).
    options: dict[str, Any] = {"backend": store, "serializer": "json"}
    if module != __name__:
        options["namespace"] = module
    meta = attrs.pop("Meta", None) or type("Meta", (), options)
    return type(cls_name, (co.Model,), {"__module__": module, "Meta": meta, **attrs})


# -- 1. names a write takes as a keyword, or the model uses --------------------------------


@pytest.mark.parametrize(
    "name",
    ["ttl", "defaults", "atomic", "force_insert", "pk", "save", "objects", "filter", "count",
     "first", "all", "order_by", "touch", "remaining_ttl", "update_or_create", "exclude"],
)  # fmt: skip
def test_reserved_field_names_are_refused(name: str) -> None:
    with pytest.raises(co.ConfigurationError, match=f"cannot be named '{name}'"):
        model("Reserved", id=co.IntegerField(primary_key=True), **{name: co.IntegerField()})
    with pytest.raises(co.ConfigurationError, match=f"cannot be named '{name}'"):
        exec(
            f"class Reserved(co.Model):\n    {name}: int\n"
            "    class Meta:\n        backend = store\n        serializer = 'json'\n",
            {"co": co, "store": store},
        )


def test_a_ttl_field_says_why() -> None:
    with pytest.raises(co.ConfigurationError, match="writes take ttl= as a keyword"):
        model("Session", id=co.IntegerField(primary_key=True), ttl=co.IntegerField())


# -- 5. field classes, typos -----------------------------------------------------------------


def test_a_field_class_without_parentheses_is_a_definition_error() -> None:
    with pytest.raises(co.ConfigurationError, match=r"Bad\.name = StringField is the field"):
        model("Bad", id=co.IntegerField(primary_key=True), name=co.StringField)


class Person(co.Model):
    id = co.IntegerField(primary_key=True)
    height = co.FloatField(default=1.0)
    friend = co.ForeignKeyField("self", null=True)

    class Meta:
        backend = store
        serializer = "json"

    @property
    def tall(self) -> bool:
        return self.height > 1.9

    @tall.setter
    def tall(self, value: bool) -> None:
        self.height = 2.0 if value else 1.5


def test_a_typo_on_an_instance_is_an_attribute_error() -> None:
    p = Person(id=1)
    with pytest.raises(AttributeError, match=r"Person has no field 'heigth' \(fields: id, "):
        p.heigth = 2  # type: ignore[attr-defined]
    assert "heigth" not in vars(p)
    p.height = 2.5  # real fields, raw foreign keys, properties and private state still work
    p.friend_id = 7
    p.tall = False
    p._cache = {}
    assert (p.height, p.friend_id) == (1.5, 7)
    with pytest.raises(co.ValidationError):
        p.height = "tall"  # type: ignore[assignment]


# -- 7. annotated declarations ---------------------------------------------------------------


class Team(co.Model):
    id: int = co.IntegerField(primary_key=True)
    name: str

    class Meta:
        backend = store
        serializer = "json"


class Player(co.Model):
    id: int = co.IntegerField(primary_key=True)
    nick: str = co.StringField(max_length=32)
    score: int = 0
    email: str | None = co.StringField(null=True, default=None)
    rank = co.IntegerField(default=1)  # the classic style mixes in
    team: Team | None = None
    tags: list[str] = co.ListField(co.StringField(), default=list)
    bio: str | None = None
    height: float
    active: bool = True
    avatar: bytes | None
    balance: decimal.Decimal = decimal.Decimal("0")
    token: uuid.UUID | None
    seen: datetime.datetime | None
    born: datetime.date | None
    wakes: datetime.time | None
    colour: Colour = Colour.RED
    prefs: dict[str, Any] = co.JSONField(default=dict)
    extra: dict[str, Any] | None
    scores: list[int | None] = co.ListField(co.IntegerField(null=True), default=list)
    mentor: Player | None = None
    registry: ClassVar[dict[str, int]] = {}
    _private: int = 0

    class Meta:
        backend = store
        serializer = "json"


def test_annotations_declare_fields_in_declaration_order() -> None:
    fields = Player._schema.fields
    assert list(fields) == [
        "id", "nick", "score", "email", "rank", "team", "tags", "bio", "height", "active",
        "avatar", "balance", "token", "seen", "born", "wakes", "colour", "prefs", "extra",
        "scores", "mentor",
    ]  # fmt: skip
    kinds = {name: type(f).__name__ for name, f in fields.items()}
    assert kinds["score"] == "IntegerField" and kinds["bio"] == "StringField"
    assert kinds["team"] == "ForeignKeyField" and fields["team"].rel_model is Team
    assert fields["mentor"].rel_model is Player  # a forward reference to the class itself
    assert kinds["avatar"] == "BinaryField" and kinds["balance"] == "DecimalField"
    assert kinds["token"] == "UUIDField" and kinds["seen"] == "DateTimeField"
    assert kinds["born"] == "DateField" and kinds["wakes"] == "TimeField"
    assert kinds["colour"] == "EnumField" and kinds["extra"] == "JSONField"
    assert fields["bio"].null and not fields["nick"].null and fields["avatar"].null
    assert "registry" not in fields and "_private" not in fields
    assert Player.registry == {} and Player._private == 0
    assert Team._schema.fields["name"].null is False


async def test_annotated_models_store_and_validate() -> None:
    team = await Team.create(id=1, name="Reds")
    p = await Player.create(id=1, nick="sam", height=1.8, team=team, tags=["a"], scores=[1, None])
    got = await Player.get(id=1)
    assert got.to_dict() == p.to_dict()
    expected = (0, None, True, Colour.RED, 1)
    assert (got.score, got.bio, got.active, got.colour, got.team_id) == expected
    with pytest.raises(co.ValidationError, match="height"):
        Player(id=2, nick="kim")  # a bare annotation without a default is required
    with pytest.raises(co.ValidationError, match="score"):
        Player(id=2, nick="kim", height=1.0, score="high")
    with pytest.raises(TypeError, match="'nik'"):
        Player(id=2, nik="kim", height=1.0)


def test_annotating_an_inherited_field_keeps_it() -> None:
    class Captain(Player):
        nick: str  # for type checkers: the inherited field stays, its options too
        armband: bool = True

    assert Captain._schema.fields["nick"].max_length == 32
    assert list(Captain._schema.fields)[-1] == "armband"
    with pytest.raises(co.ConfigurationError, match=r"Sub\.nick: the annotation int"):

        class Sub(Player):
            nick: int


def test_annotations_inside_a_function_see_its_locals() -> None:
    class Local(enum.IntEnum):
        A = 1

    class Row(co.Model):
        id: int = co.IntegerField(primary_key=True)
        kind: Local = Local.A

        class Meta:
            backend = store
            serializer = "json"

    assert Row._schema.fields["kind"].enum_cls is Local


@pytest.mark.parametrize(
    ("annotation", "field", "match"),
    [
        ("str", "co.IntegerField()", "does not match IntegerField"),
        ("int", "co.IntegerField(null=True)", "null=True"),
        ("int | None", "co.IntegerField()", "allows None"),
        ("list[int]", "co.ListField(co.StringField())", "does not match ListField"),
        ("Team", "co.ForeignKeyField(Player)", "does not match ForeignKeyField"),
        ("datetime.date", "co.DateTimeField()", "does not match DateTimeField"),
    ],
)
def test_an_annotation_that_disagrees_with_its_field_is_refused(
    annotation: str, field: str, match: str
) -> None:
    source = (
        f"class Wrong(co.Model):\n    id: int = co.IntegerField(primary_key=True)\n"
        f"    value: {annotation} = {field}\n"
        "    class Meta:\n        backend = store\n        serializer = 'json'\n"
    )
    namespace = {"co": co, "store": store, "Team": Team, "Player": Player, "datetime": datetime}
    with pytest.raises(co.ConfigurationError, match=match) as info:
        exec(source, namespace)
    assert "Wrong.value" in str(info.value)


def test_an_unsupported_bare_annotation_is_refused() -> None:
    with pytest.raises(co.ConfigurationError, match=r"Odd\.value: set\[int\] is not a type"):
        exec(
            "class Odd(co.Model):\n    id: int = co.IntegerField(primary_key=True)\n"
            "    value: set[int]\n"
            "    class Meta:\n        backend = store\n        serializer = 'json'\n",
            {"co": co, "store": store},
        )


def test_a_bare_annotation_naming_something_undefined_is_refused() -> None:
    source = (
        "from __future__ import annotations\n"
        "class Later(co.Model):\n    id: int = co.IntegerField(primary_key=True)\n"
        "    when: datetime\n    owner: Owner | None\n"
        "    class Meta:\n        backend = store\n        serializer = 'json'\n"
    )
    with pytest.raises(co.ConfigurationError, match=r"Later\.when: .*'datetime' names"):
        exec(source, {"co": co, "store": store})
    namespace = {"co": co, "store": store, "datetime": datetime.datetime}
    exec(source, namespace)  # Owner: a model defined later, by name
    owner_field = namespace["Later"]._schema.fields["owner"]
    assert isinstance(owner_field, co.ForeignKeyField) and owner_field.null
    assert owner_field.to == "Owner"


# -- 10. pk= and auto_now ---------------------------------------------------------------------


class Pair(co.Model):
    a = co.StringField()
    b = co.IntegerField()
    note = co.StringField(default="")

    class Meta:
        backend = store
        serializer = "json"
        primary_key = co.CompositeKey("a", "b")


async def test_pk_alias_works_wherever_the_pk_names_do() -> None:
    p = Person(pk=10, height=1.2)
    assert p.id == 10 and p.pk == 10
    await Person.create(pk=11)
    assert (await Person.get(pk=11)).id == 11
    assert (await Person.query(pk=11)) is not None
    assert (await Person.get_or_none(pk=404)) is None
    assert (await Person.update(pk=11, height=1.7)).height == 1.7
    _, created = await Person.get_or_create(pk=11, defaults={"height": 3.0})
    assert created is False
    assert await Person.delete(pk=11) is True
    with pytest.raises(TypeError, match="given twice"):
        Person(pk=1, id=1)

    pair = await Pair.create(pk=("x", 1), note="n")
    assert (pair.a, pair.b) == ("x", 1)
    assert (await Pair.get(pk=("x", 1))).note == "n"
    assert (await Pair.update(pk={"a": "x", "b": 1}, note="m")).note == "m"
    assert Pair.from_dict({"pk": ("y", 2)}).pk == ("y", 2)
    with pytest.raises(TypeError, match="tuple of"):
        Pair(pk="x")
    assert await Pair.delete(pk=("x", 1)) is True


class Stamped(co.Model):
    id = co.IntegerField(primary_key=True)
    name = co.StringField(default="")
    created = co.DateTimeTZField(auto_now_add=True)
    changed = co.DateTimeTZField(auto_now=True)
    day = co.DateField(auto_now=True)
    naive = co.DateTimeField(auto_now_add=True)

    class Meta:
        backend = store
        serializer = "json"


async def test_auto_now_and_auto_now_add() -> None:
    before = datetime.datetime.now(datetime.UTC)
    row = await Stamped.create(id=1)
    assert before <= row.created <= row.changed
    assert row.day == datetime.date.today() and row.naive >= before
    created, changed = row.created, row.changed
    row.name = "x"
    await row.save()
    assert row.created == created and row.changed > changed
    got = await Stamped.get(id=1)
    assert got.changed == row.changed and got.created == created
    updated = await Stamped.update(id=1, name="y")
    assert updated is not None
    assert updated.changed > row.changed and updated.created == created
    explicit = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    assert (await Stamped.update(id=1, changed=explicit)).changed == explicit  # given: kept
    with pytest.raises(TypeError, match="exclusive"):
        co.DateTimeField(auto_now=True, auto_now_add=True)
    with pytest.raises(TypeError, match="no default"):
        co.DateField(auto_now=True, default=datetime.date.today)


# -- 11. a subclass's primary key replaces the inherited one ------------------------------------


class Account(co.Model):
    id = co.IntegerField(primary_key=True)
    email = co.StringField(default="")

    class Meta:
        backend = store
        serializer = "json"


def test_a_subclass_replaces_an_inherited_primary_key() -> None:
    class ByEmail(Account):
        email = co.StringField(primary_key=True)

    assert ByEmail._schema.pk_names == ("email",)
    assert not ByEmail._schema.fields["id"].primary_key  # now a plain field
    assert Account._schema.pk_names == ("id",)

    class Scoped(Account):
        tenant = co.StringField()

        class Meta:
            primary_key = co.CompositeKey("tenant", "email")

    assert Scoped._schema.pk_names == ("tenant", "email")
    assert Scoped(tenant="t", email="e", id=1).pk == ("t", "e")

    class Back(Scoped):
        code = co.StringField(primary_key=True)

    assert Back._schema.pk_names == ("code",) and not Back._schema.composite

    class Implicit(co.Model):
        name = co.StringField()

        class Meta:
            backend = store
            serializer = "json"

    class Explicit(Implicit):
        name = co.StringField(primary_key=True)

    assert list(Explicit._schema.fields) == ["name"]  # the implicit uuid id is gone


# -- 13, 14. foreign keys by "self" and by name ------------------------------------------------


def test_an_inherited_self_foreign_key_means_the_class_it_is_on() -> None:
    class Node(co.Model):
        id = co.IntegerField(primary_key=True)
        parent = co.ForeignKeyField("self", null=True)

        class Meta:
            backend = store
            serializer = "json"

    assert Node._schema.fields["parent"].rel_model is Node  # resolved on the parent first

    class Leaf(Node):
        pass

    assert Leaf._schema.fields["parent"].rel_model is Leaf
    assert Node._schema.fields["parent"].rel_model is Node
    with pytest.raises(co.ValidationError, match="expected a Leaf, not a Node"):
        Leaf(id=2, parent=Node(id=1))
    assert Leaf(id=2, parent=Leaf(id=1)).parent_id == 1


def test_a_model_name_resolves_in_the_declaring_module_first() -> None:
    here = model("Writer", "app_one.models", id=co.IntegerField(primary_key=True))
    model("Writer", "app_two.models", id=co.IntegerField(primary_key=True))
    post = model(
        "Post",
        "app_one.models",
        id=co.IntegerField(primary_key=True),
        writer=co.ForeignKeyField("Writer"),
    )
    assert post._schema.fields["writer"].rel_model is here
    post(id=1, writer=here(id=1))


def test_an_ambiguous_model_name_names_both_modules() -> None:
    model("Editor", "app_three.models", id=co.IntegerField(primary_key=True))
    other = model("Editor", "app_four.models", id=co.IntegerField(primary_key=True))
    review = model(
        "Review",
        "app_five.models",
        id=co.IntegerField(primary_key=True),
        editor=co.ForeignKeyField("Editor"),
    )
    with pytest.raises(co.ConfigurationError) as info:
        review(id=1, editor=1)
    message = str(info.value)
    assert "Review.editor" in message and "ambiguous" in message
    assert "app_three.models.Editor" in message and "app_four.models.Editor" in message
    qualified = model(
        "Review2",
        "app_five.models",
        id=co.IntegerField(primary_key=True),
        editor=co.ForeignKeyField("app_four.models.Editor"),
    )
    assert qualified._schema.fields["editor"].rel_model is other


# -- 16. abstract models ----------------------------------------------------------------------


class Abstract(co.Model):
    name = co.StringField()

    class Meta:
        abstract = True
        backend = store
        serializer = "json"


async def test_queries_on_an_abstract_model_say_it_is_abstract() -> None:
    with pytest.raises(co.ConfigurationError, match="Abstract is abstract"):
        await Abstract.get(id=1)
    with pytest.raises(co.ConfigurationError, match="Abstract is abstract"):
        Abstract.create(name="x")
    with pytest.raises(co.ConfigurationError, match="Abstract is abstract"):
        Abstract(name="x")
    with pytest.raises(co.ConfigurationError, match="Model is abstract"):
        co.Model.get(id=1)
    with pytest.raises(TypeError):  # ConfigurationError is a TypeError too
        Abstract.query_many(1)

    class Concrete(Abstract):
        pass

    assert (await Concrete.create(name="x")).name == "x"
