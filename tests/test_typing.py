"""A small typed user module: ``mypy --strict tests/test_typing.py`` checks what a type
checker sees (it runs in the README test command); pytest also imports and runs it."""

from __future__ import annotations

import datetime
import decimal
import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import assert_type

import pytest

import acacheorm as co


class User(co.Model):
    id = co.IntegerField(primary_key=True)
    name = co.StringField(max_length=64)
    height = co.FloatField()
    married = co.BooleanField(default=False)
    price = co.DecimalField(default=decimal.Decimal(0))
    token = co.UUIDField(default=uuid.uuid4)
    seen = co.DateTimeTZField(default=lambda: datetime.datetime.now(datetime.UTC))
    phones = co.ListField(co.StringField(), default=list)

    class Meta:
        backend = co.SimpleBackend()
        serializer = "json"


class Article(co.Model):
    id = co.IntegerField(primary_key=True)
    author = co.ForeignKeyField(User)
    # The options every field shares are typed: these check.
    slug = co.StringField(null=True, index=True, unique=True)
    views = co.IntegerField(default=0, index=True, unique=False)
    editor = co.ForeignKeyField(User, null=True, on_delete=co.SET_NULL, related_name="edited")

    class Meta:
        backend = co.SimpleBackend()
        serializer = "json"


async def typed_usage() -> None:
    user = await User.create(id=1, name="Sam", height=1.8)
    assert_type(user, User)
    assert_type(user.name, str)
    assert_type(user.height, float)
    assert_type(user.married, bool)
    assert_type(user.price, decimal.Decimal)
    assert_type(user.token, uuid.UUID)
    assert_type(user.seen, datetime.datetime)
    assert_type(user.phones, list[str])
    assert_type(User.name, co.StringField)
    assert_type(await User.get(id=1), User)
    assert_type(await User.get_by_id(1), User)
    assert_type(await User.query(id=1), User | None)
    assert_type(await User.get_or_none(id=1), User | None)
    assert_type(await User.query_many(1, 2), list[User | None])
    assert_type(await User.insert_many({"id": 2, "name": "K", "height": 1.0}), list[User])
    assert_type(await User.update(id=1, height=1.9), User | None)
    assert_type(await User.set_by_id(1, {"height": 2.0}), User)
    assert_type(
        await User.get_or_create(id=3, defaults={"name": "x", "height": 1.0}), tuple[User, bool]
    )
    assert_type(await User.delete(id=3), bool)
    article = await Article.create(id=1, author=user)
    assert_type(article.author, User)
    assert_type(await article.author.load(), User)
    assert_type(await user.save(), User)
    assert_type(await user.refresh(), User)
    assert_type(await User.delete_many(1, 2), int)
    await User.create(id=5, name="Sam", height=1.8)
    assert_type(await User.filter(name="Sam").order_by("-height").limit(5), list[User])
    assert_type(await User.filter(User.height > 1.5).count(), int)
    assert_type(await User.exclude(married=True).exists(), bool)
    assert_type(await User.first(name="Sam"), User | None)
    assert_type(await User.get(name="Sam"), User)
    assert_type(await User.filter(name="Sam").update(height=1.7), int)
    assert_type(
        await User.update_or_create(name="Sam", defaults={"height": 1.7}), tuple[User, bool]
    )
    async for found in User.filter(married=False):
        assert_type(found, User)


async def test_typed_usage_runs() -> None:
    await typed_usage()


# -- type checkers on sample applications (tests/typing_samples) ------------------------------

SAMPLES = Path(__file__).parent / "typing_samples"
#: The checks docs/queries.md recommends on top of --strict: a query that is never awaited.
MYPY_FLAGS = ["--strict", "--enable-error-code", "unused-awaitable", "--enable-error-code",
              "truthy-bool"]  # fmt: skip


def expected_errors(path: Path, checker: str) -> set[int]:
    lines = path.read_text().splitlines()
    marker = re.compile(r"# error: ([\w ]+)$")
    return {
        number
        for number, line in enumerate(lines, 1)
        if (m := marker.search(line)) and checker in m.group(1).split()
    }


def test_mypy_checks_constructors_and_fields_of_annotated_models(tmp_path: Path) -> None:
    mypy_api = pytest.importorskip("mypy.api")
    files = [str(SAMPLES / "good_app.py"), str(SAMPLES / "bad_app.py")]
    out, _err, _status = mypy_api.run(
        [*MYPY_FLAGS, "--cache-dir", str(tmp_path), "--no-error-summary", *files]
    )
    errors: dict[str, set[int]] = {}
    for line in out.splitlines():
        m = re.match(r"(.+?):(\d+): error:", line)
        if m:
            errors.setdefault(Path(m.group(1)).name, set()).add(int(m.group(2)))
    assert errors.get("good_app.py", set()) == set(), out
    assert errors.get("bad_app.py") == expected_errors(SAMPLES / "bad_app.py", "mypy"), out


def test_pyright_checks_constructors_and_fields_of_annotated_models() -> None:
    pyright = shutil.which("pyright", path=str(Path(sys.executable).parent)) or shutil.which(
        "pyright"
    )
    if pyright is None:
        pytest.skip("pyright is not installed (pip install pyright)")
    files = [SAMPLES / "good_app.py", SAMPLES / "bad_app.py", Path(__file__)]
    try:
        result = subprocess.run(
            [pyright, "--outputjson", "--pythonpath", sys.executable, *map(str, files)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        report = json.loads(result.stdout)
    except (subprocess.TimeoutExpired, json.JSONDecodeError):
        pytest.skip("pyright could not run here (it fetches its engine on first use)")
    errors: dict[str, set[int]] = {}
    for diagnostic in report["generalDiagnostics"]:
        if diagnostic["severity"] == "error":
            line = diagnostic["range"]["start"]["line"] + 1
            errors.setdefault(Path(diagnostic["file"]).name, set()).add(line)
    assert errors.get("good_app.py", set()) == set(), report
    assert errors.get("test_typing.py", set()) == set(), report  # the classic style
    assert errors.get("bad_app.py") == expected_errors(SAMPLES / "bad_app.py", "pyright"), report
