"""Error messages name the model and field and say what to write instead; type errors in
update expressions are caught before any I/O."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest

import acacheorm as co


class Member(co.Model):
    id = co.IntegerField(primary_key=True)
    name = co.StringField(default="")
    visits = co.IntegerField(min_value=0, default=0)
    height = co.FloatField(default=1.0)
    price = co.DecimalField(null=True)
    married = co.BooleanField(default=False)
    tags = co.ListField(co.IntegerField(), default=list)
    seen = co.DateTimeField(null=True)

    class Meta:
        backend = co.SimpleBackend()
        serializer = "json"


@pytest.fixture
def batches() -> Iterator[list[co.BatchEvent]]:
    events: list[co.BatchEvent] = []
    co.add_batch_hook(events.append)
    try:
        yield events
    finally:
        co.remove_batch_hook(events.append)


@pytest.mark.parametrize(
    ("call", "hint"),
    [
        (lambda: Member.get(1), "Member.get(id=1) or Member.get_by_id(1)"),
        (lambda: Member.delete(1), "Member.delete(id=1) or Member.delete_by_id(1)"),
        (lambda: Member.query(1), "Member.query(id=1)"),
        (lambda: Member.get_or_none(1), "Member.get_or_none(id=1)"),
        (
            lambda: Member.update(1, name="x"),
            "Member.update(id=1, field=value) or Member.set_by_id(1, {...})",
        ),
        (lambda: Member.get_or_create(1), "Member.get_or_create(id=1)"),
        (lambda: Member.remaining_ttl(1), "Member.remaining_ttl(id=1)"),
        (lambda: Member.touch(1), "Member.touch(id=1)"),
    ],
)
def test_positional_primary_key_names_the_model_and_the_keyword_form(call: Any, hint: str) -> None:
    with pytest.raises(TypeError) as info:
        call()
    message = str(info.value)
    assert message.startswith("Member.")
    assert "takes the primary key as keywords (id)" in message
    assert hint in message


def test_get_or_create_keeps_its_positional_defaults() -> None:
    query = Member.get_or_create({"name": "Sam"}, id=1)
    assert query.instance.name == "Sam"
    query.compile()  # looked at, never run: compiling it says so (no never-awaited warning)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: Member.visits + "a", r"Member\.visits \+ 'a': expected int, not str"),
        (lambda: Member.visits + 1.5, r"Member\.visits \+ 1\.5: expected int, not float"),
        (lambda: Member.visits + True, r"expected int, not bool"),
        (lambda: Member.price + 1.5, r"Member\.price \+ 1\.5: expected int or Decimal"),
        (lambda: Member.name - "x", r"Member\.name - 'x': a StringField does not support '-'"),
        (lambda: Member.married + 1, r"Member\.married \+ 1: a BooleanField does not support"),
        (
            lambda: Member.tags + ["a"],  # noqa: RUF005
            r"Member\.tags \+ \['a'\]: item 0: expected int",
        ),
        (lambda: Member.seen + 1, r"Member\.seen \+ 1: expected timedelta, not int"),
        (lambda: Member.visits + None, r"Member\.visits \+ None: expected int"),
    ],
)
def test_expression_type_errors_are_caught_when_built(make: Any, expected: str) -> None:
    with pytest.raises(TypeError, match=expected):
        make()


def test_valid_expressions_still_build() -> None:
    assert repr(Member.visits - 5) == "(visits - 5)"  # bounds apply to the result, not here
    assert repr(Member.height + 1) == "(height + 1)"
    assert repr(Member.tags + [1]) == "(tags + [1])"  # noqa: RUF005
    assert repr(Member.name + "!") == "(name + '!')"
    Member.seen + datetime.timedelta(days=1)


async def test_expression_on_another_field_is_refused_before_io(
    batches: list[co.BatchEvent],
) -> None:
    await Member.create(id=1, height=1.5)
    batches.clear()
    with pytest.raises(TypeError) as info:
        Member.update(id=1, name=Member.height + 1)
    assert str(info.value) == (
        "Member.update(name=(height + 1)): the expression is on Member.height, not on Member.name"
    )
    assert batches == []
    assert (await Member.get(id=1)).name == ""


def test_unknown_foreign_key_target_names_the_field() -> None:
    class Post(co.Model):
        id = co.IntegerField(primary_key=True)
        author = co.ForeignKeyField("Membr")

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    with pytest.raises(co.ConfigurationError) as info:
        Post(id=1, author=1)
    message = str(info.value)
    assert message.startswith("Post.author: ForeignKeyField('Membr') names no model")
    assert "did you mean 'Member'" in message
    with pytest.raises(co.ConfigurationError, match=r"Post\.author"):
        Post.get(id=1).select_related("author")
    with pytest.raises(LookupError):  # what resolving an unknown name always raised
        Post.author.rel_model  # noqa: B018
