"""Model declaration: schema, Meta, primary keys, keys, instances, validation."""

from __future__ import annotations

import copy
import decimal
import enum
import uuid
import warnings
from typing import Any

import pytest

import acacheorm as co
from acacheorm._keys import escape_key_part

backend = co.SimpleBackend()


class Base(co.Model):
    class Meta:
        abstract = True
        backend = backend
        serializer = "json"


class Plain(Base):
    name = co.StringField(default="")


class Named(Base):
    code = co.StringField(primary_key=True)
    tags = co.ListField(co.StringField(), default=list)
    meta = co.JSONField(default=dict)

    class Meta:
        name = "nm"
        namespace = "app"
        ttl = 10


class Pair(Base):
    a = co.StringField()
    b = co.IntegerField()
    note = co.StringField(default="")

    class Meta:
        primary_key = co.CompositeKey("a", "b")


def test_implicit_uuid_pk_and_defaults() -> None:
    p = Plain()
    assert isinstance(p.id, uuid.UUID)
    assert p.pk == p.id
    assert Plain().id != p.id
    assert Plain._schema.pk_names == ("id",)


def test_mutable_defaults_are_not_shared() -> None:
    a, b = Named(code="a"), Named(code="b")
    a.tags.append("x")
    a.meta["k"] = 1
    assert b.tags == [] and b.meta == {}


def test_meta_options_and_inheritance() -> None:
    s = Named._schema
    assert (s.name, s.namespace, s.ttl, s.serializer.name) == ("nm", "app", 10.0, "json")
    assert s.key(("x",)) == "app:nm:x"
    assert Plain._schema.backend is backend

    class Child(Named):
        extra = co.IntegerField(default=0)
        tags = co.ListField(co.IntegerField(), default=list)  # overridden field

    cs = Child._schema
    assert cs.ttl == 10.0 and cs.namespace == "app"
    assert cs.name == "child"  # the key name is not inherited: a subclass is another model
    assert list(cs.fields) == ["code", "tags", "meta", "extra"]
    assert isinstance(cs.fields["tags"].field, co.IntegerField)
    assert isinstance(Named._schema.fields["tags"].field, co.StringField)
    assert issubclass(Child.DoesNotExist, Named.DoesNotExist)
    assert Child.DoesNotExist is not Named.DoesNotExist


def test_composite_keys_escape_separators() -> None:
    s = Pair._schema
    assert s.key(("x", 1)) == "pair:x:1"
    k1 = s.key(("a:b", 1))
    k2 = s.key(("a", 1))
    assert k1 != k2 and k1 == "pair:a\\:b:1"
    assert s.key(("a\\", 1)) != s.key(("a", 1))
    p = Pair(a="q", b=2)
    assert p.pk == ("q", 2)
    assert Pair._schema.normalize_pk({"a": "q", "b": 2}) == ("q", 2)
    with pytest.raises(TypeError, match="composite"):
        Pair._schema.normalize_pk("q")
    with pytest.raises(TypeError):
        Pair._schema.normalize_pk(("q",))


def test_escape_is_injective_on_samples() -> None:
    samples = ["", ":", "\\", "\\:", ":\\", "a:b", "a\\:b", "a\\\\:b"]
    escaped = [escape_key_part(s) for s in samples]
    assert len(set(escaped)) == len(samples)
    joined = {f"{escape_key_part(x)}:{escape_key_part(y)}" for x in samples for y in samples}
    assert len(joined) == len(samples) ** 2


def test_key_format_string_and_callable() -> None:
    class Fmt(Base):
        a = co.IntegerField()
        b = co.IntegerField()

        class Meta:
            primary_key = co.CompositeKey("a", "b")
            key_format = "fmt.%d.%d"

    assert Fmt._schema.key((1, 2)) == "fmt.1.2"

    class Call(Base):
        id = co.IntegerField(primary_key=True)

        class Meta:
            key_format = staticmethod(lambda i: f"c/{i}")
            namespace = "ns"

    assert Call._schema.key((5,)) == "ns:c/5"

    with pytest.raises(co.ConfigurationError, match="key_format"):

        class Bad(Base):
            id = co.IntegerField(primary_key=True)

            class Meta:
                key_format = "%d-%d"


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ({"colour": "red"}, "unknown option 'colour'"),
        ({"serializer": "nope"}, "unknown serializer 'nope'"),
        ({"backend": "redis://"}, "must be a backend"),
        ({"ttl": 0}, "ttl"),
        ({"serializer": 5}, "serializer"),
    ],
)
def test_bad_meta_is_a_definition_error(meta: dict[str, Any], match: str) -> None:
    Meta = type("Meta", (), {"backend": backend, "serializer": "json", **meta})
    with pytest.raises(co.ConfigurationError, match=match) as info:
        type(
            "Broken",
            (co.Model,),
            {"__module__": __name__, "Meta": Meta, "id": co.IntegerField(primary_key=True)},
        )
    assert "Broken" in str(info.value)


def test_missing_backend_or_serializer() -> None:
    with pytest.raises(co.ConfigurationError, match=r"Nob\.Meta\.backend"):
        type(
            "Nob",
            (co.Model,),
            {"__module__": __name__, "Meta": type("Meta", (), {"serializer": "json"})},
        )
    with pytest.raises(co.ConfigurationError, match=r"Nos\.Meta\.serializer"):
        type(
            "Nos",
            (co.Model,),
            {"__module__": __name__, "Meta": type("Meta", (), {"backend": backend})},
        )


def test_two_primary_keys() -> None:
    with pytest.raises(co.ConfigurationError, match="two primary keys"):

        class Two(Base):
            a = co.IntegerField(primary_key=True)
            b = co.IntegerField(primary_key=True)


def test_serializer_instance_in_meta() -> None:
    class WithInstance(Base):
        class Meta:
            serializer = co.registry.get_by_name("msgpack")

    assert WithInstance._schema.serializer.name == "msgpack"


def test_unknown_keyword_and_validation() -> None:
    with pytest.raises(TypeError, match="colour"):
        Named(code="x", colour="red")
    with pytest.raises(co.ValidationError) as info:
        Named(code=5)
    err = info.value
    assert (err.model, err.field, err.value) == ("Named", "code", 5)
    assert "Named.code" in str(err) and "5" in str(err)
    with pytest.raises(co.ValidationError, match="required"):
        Pair(a="x")
    n = Named(code="x")
    with pytest.raises(co.ValidationError):
        n.tags = ["a", 1]
    assert n.tags == []
    with pytest.raises(co.ValidationError, match="None"):
        n.code = None


def test_repr_equality_hash_to_dict() -> None:
    a = Pair(a="x", b=1, note="n")
    b = Pair(a="x", b=1, note="other")
    assert a == b and hash(a) == hash(b)
    assert a != Pair(a="x", b=2)
    assert repr(a) == "<Pair a='x', b=1: note='n'>"
    assert a.to_dict() == {"a": "x", "b": 1, "note": "n"}
    assert Pair.from_dict(a.to_dict()) == a
    assert "<table>" in a._repr_html_() or "<table" in a._repr_html_()


def test_class_attribute_is_the_field() -> None:
    assert isinstance(Named.code, co.StringField)
    assert Named.code.name == "code" and Named.code.model is Named
    assert "Named.code" in repr(Named.code)


@pytest.mark.parametrize(
    ("field", "good", "bad"),
    [
        (co.IntegerField(min_value=0, max_value=10), [0, 10], [-1, 11, 1.5, True, "1"]),
        (co.FloatField(min_value=0), [0, 1.5], [-0.1, "1", False]),
        (
            co.DecimalField(max_digits=5, decimal_places=2),
            [decimal.Decimal("123.45"), 1, "1.5"],
            [decimal.Decimal("1234.5"), decimal.Decimal("1.234"), "x", True],
        ),
        (co.StringField(max_length=3), ["abc", ""], ["abcd", 1, b"a"]),
        (co.BinaryField(max_length=2), [b"ab", bytearray(b"a")], [b"abc", "ab"]),
        (co.BooleanField(), [True, False], [1, 0, "true"]),
        (co.UUIDField(), [uuid.uuid4(), str(uuid.uuid4())], ["nope", 5]),
        (co.JSONField(), [{"a": [1, None, "x"]}, 5, None], [{1: 2}, {"a": {1}}, object()]),
        (co.ListField(co.IntegerField(), max_items=2), [[1, 2], (1,)], [[1, 2, 3], ["a"], 5]),
    ],
)
def test_field_validation(field: co.Field[Any], good: list[Any], bad: list[Any]) -> None:
    field.name = "f"
    field.null = True
    for value in good:
        field.clean(value)
    for value in bad:
        with pytest.raises(co.ValidationError):
            field.clean(value)


def test_unknown_field_option_is_type_error() -> None:
    with pytest.raises(TypeError):
        co.StringField(maxlength=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        co.IntegerField(primary_key=True, null=True)


# -- keys of namespaces and names never overlap ------------------------------------------------


def _model_in(module: str, cls_name: str, store: co.Backend, **meta: Any) -> Any:
    attrs = {
        "__module__": module,
        "id": co.IntegerField(primary_key=True),
        "Meta": type("Meta", (), {"backend": store, "serializer": "json", **meta}),
    }
    return type(cls_name, (co.Model,), attrs)


def test_namespace_and_name_are_escaped_in_keys() -> None:
    store = co.SimpleBackend()

    def pair_model(namespace: str, name: str) -> Any:
        attrs = {
            "__module__": __name__,
            "a": co.StringField(),
            "b": co.StringField(),
            "Meta": type(
                "Meta",
                (),
                {
                    "backend": store,
                    "serializer": "json",
                    "namespace": namespace,
                    "name": name,
                    "primary_key": co.CompositeKey("a", "b"),
                },
            ),
        }
        return type(f"P{len(namespace)}{len(name)}", (co.Model,), attrs)

    # without escaping each pair would write the same key "app:s:x:1"
    one = pair_model("app", "s")
    two = pair_model("app:s", "x")
    three = pair_model("", "app:s:x")
    keys = {one._schema.key(("x", "1")), two._schema.key(("1", "")), three._schema.key(("1", ""))}
    assert len(keys) == 3
    assert two._schema.prefix == "app\\:s:x:" and three._schema.prefix == "app\\:s\\:x:"
    assert (
        _model_in(__name__, "Plainly", store, namespace="blog")._schema.prefix
        == "plainly:"[:0] + "blog:plainly:"
    )


def test_a_key_clash_between_modules_is_warned() -> None:
    store = co.SimpleBackend()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = _model_in("shop.models", "Session", store)
        # the same module again (a re-run notebook cell): a redefinition, not a clash
        again = _model_in("shop.models", "Session", store)
        # another name, another backend, a key_format: other keys
        _model_in("auth.models", "Session", store, name="auth_session")
        _model_in("auth.models", "Session", co.SimpleBackend())
        _model_in("auth.models", "Session", store, key_format="session.%d")
    with pytest.warns(co.KeyClashWarning) as record:
        clash = _model_in("auth.models", "Session", store)
    message = str(record[0].message)
    assert "auth.models.Session" in message and "shop.models.Session" in message
    assert "'session:'" in message
    assert clash._schema.prefix == again._schema.prefix == first._schema.prefix
    # same key through the namespace and the name is a clash too
    with pytest.warns(co.KeyClashWarning):
        _model_in("billing.models", "Other", store, name="session")


# -- Enum primary keys ------------------------------------------------------------------------


class Mixed(enum.Enum):
    ONE = 1
    ONE_TEXT = "1"
    TWO = 2


class Clean(enum.Enum):
    ONE = 1
    TEXT = "one"


def test_enum_primary_key_whose_values_collide_as_text_is_refused() -> None:
    store = co.SimpleBackend()
    with pytest.raises(co.ConfigurationError) as info:

        class Tagged(co.Model):
            kind = co.EnumField(Mixed, primary_key=True)

            class Meta:
                backend = store
                serializer = "json"

    message = str(info.value)
    assert "Tagged.kind" in message and "Mixed.ONE" in message and "Mixed.ONE_TEXT" in message
    with pytest.raises(co.ConfigurationError, match=r"Slot\.kind"):

        class Slot(co.Model):
            kind = co.EnumField(Mixed)
            n = co.IntegerField()

            class Meta:
                backend = store
                serializer = "json"
                primary_key = co.CompositeKey("kind", "n")

    class Fine(co.Model):  # not in the key: any Enum; in the key: distinct texts
        id = co.EnumField(Clean, primary_key=True)
        other = co.EnumField(Mixed, default=Mixed.ONE)

        class Meta:
            backend = store
            serializer = "json"

    assert Fine._schema.key((Clean.ONE,)) != Fine._schema.key((Clean.TEXT,))


# -- values no serializer could store are refused when set ------------------------------------

LONE = ["\ud800", "a\udc80b", "\udfff" * 3, "ok\ud83d"]


def test_lone_surrogates_are_refused_on_assignment() -> None:
    store = co.SimpleBackend()

    class Note(co.Model):
        key = co.StringField(primary_key=True)
        text = co.StringField(default="")
        tags = co.ListField(co.StringField(), default=list)
        data = co.JSONField(default=dict)
        point = co.StructField(lambda p: p, lambda v: v, default=None, null=True)

        class Meta:
            backend = store
            serializer = "json"

    tried = 0
    for bad in LONE:
        for kwargs in (
            {"key": bad},
            {"text": bad},
            {"tags": ["fine", bad]},
            {"data": {"k": [bad]}},
            {"data": {bad: 1}},
            {"point": {"x": bad}},
        ):
            with pytest.raises(co.ValidationError, match="surrogate"):
                Note(**{"key": "k", **kwargs})
            tried += 1
        note = Note(key="k")
        with pytest.raises(co.ValidationError, match=r"Note\.text"):
            note.text = bad
        with pytest.raises(co.ValidationError):
            Note.get(key=bad)
        with pytest.raises(co.ValidationError):
            Note.update(key="k", text=bad)
        tried += 3
    assert tried == 9 * len(LONE)
    # a pair is text, and so is every other character
    note = Note(key="\U0001f600", text="\U0001f600 ünï \x00", data={"é": "\u200b"})
    assert note.text == "\U0001f600 ünï \x00"


async def test_a_stored_json_lone_surrogate_is_a_serialization_error() -> None:
    async with co.SimpleBackend() as store:

        class Memo(co.Model):
            id = co.IntegerField(primary_key=True)
            text = co.StringField()

            class Meta:
                backend = store
                serializer = "json"

        header = Memo._schema.header
        await store.set("memo:1", header + b'{"id":1,"text":"\\ud800"}')
        with pytest.raises(co.SerializationError, match="surrogate"):
            await Memo.get(id=1)
        await store.set("memo:1", header + b'{"id":1,"text":"\\ud83d\\ude00 \\\\ud800"}')
        assert (await Memo.get(id=1)).text == "\U0001f600 \\ud800"


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def test_json_nesting_deeper_than_the_limit_is_a_validation_error() -> None:
    from acacheorm._fields_struct import MAX_JSON_DEPTH

    class Blob(co.Model):
        id = co.IntegerField(primary_key=True)
        data = co.JSONField(null=True)
        shape = co.StructField(lambda v: v, lambda v: v, null=True)

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    ok = Blob(id=1, data=_nested(MAX_JSON_DEPTH), shape=_nested(MAX_JSON_DEPTH))
    assert Blob._schema.decode("blob:1", Blob._schema.encode(ok)).data == ok.data
    for depth in (MAX_JSON_DEPTH + 1, 600, 5000):
        with pytest.raises(co.ValidationError, match=r"Blob\.data: nested deeper"):
            Blob(id=1, data=_nested(depth))
        with pytest.raises(co.ValidationError, match=r"Blob\.shape"):
            Blob(id=1, shape=_nested(depth))


def test_instance_state_is_one_slot_apart_from_the_field_values() -> None:
    class Writer(co.Model):
        id = co.IntegerField(primary_key=True)
        name = co.StringField()

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    sparse = Writer._sparse((1,))
    missing = Writer._sparse((2,), "missing")
    loaded = Writer(id=3, name="a")
    assert sparse.__dict__ == {"id": 1} and missing.__dict__ == {"id": 2}
    assert sparse.is_sparse and missing.is_sparse and not loaded.is_sparse
    assert repr(sparse) == "<Writer id=1 [sparse]>" and repr(missing) == "<Writer id=2 [missing]>"
    assert sparse.to_dict() == {"id": 1} and loaded.to_dict() == {"id": 3, "name": "a"}
    with pytest.raises(AttributeError, match="was not found in its backend"):
        _ = missing.name
    assert copy.copy(sparse).is_sparse and not copy.copy(loaded).is_sparse
