"""Mistakes a type checker must report (tests/test_typing.py runs mypy --strict with the
checks docs/queries.md recommends, and pyright). A line ending in ``# error: mypy`` must
have a mypy error, ``# error: pyright`` a pyright error; no other line may have one."""

from __future__ import annotations

import acacheorm as co


class Player(co.Model):
    id: int = co.IntegerField(primary_key=True)
    nick: str = co.StringField(max_length=32)
    email: str | None = co.StringField(null=True)

    class Meta:
        backend = "main"
        serializer = "json"


async def mistakes() -> None:
    Player(id="x", nick="a")  # error: mypy pyright
    Player(id=1, nik="a")  # error: mypy pyright
    player = Player(id=1, nick="a")
    email: str = player.email  # error: mypy pyright
    player.nick = 1  # error: mypy pyright
    Player.create(id=2, nick="b")  # error: mypy
    if Player.get_or_none(id=1):  # error: mypy
        pass
    print(Player.get(id=1).nick)  # error: mypy pyright
    print(email)
    co.IntegerField(index="yes")  # error: mypy pyright
    co.StringField(indexed=True)  # error: mypy pyright
