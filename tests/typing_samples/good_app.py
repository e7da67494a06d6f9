"""A typed application on acacheorm: ``mypy --strict`` and pyright must accept it, and see
the types asserted here (tests/test_typing.py runs both)."""

from __future__ import annotations

import asyncio
import datetime
import enum
from typing import assert_type

import acacheorm as co


class Role(enum.Enum):
    PLAYER = "player"
    ADMIN = "admin"


class Team(co.Model):
    id: int = co.IntegerField(primary_key=True)
    name: str = co.StringField(max_length=32)

    class Meta:
        backend = "main"
        serializer = "json"


class Player(co.Model):
    id: int = co.IntegerField(primary_key=True)
    nick: str = co.StringField(max_length=32)
    score: int = co.IntegerField(default=0)
    email: str | None = co.StringField(null=True)
    team: Team | None = co.ForeignKeyField(Team, null=True)
    tags: list[str] = co.ListField(co.StringField(), default=list)
    role: Role = Role.PLAYER
    bio: str | None = None
    joined: datetime.datetime = co.DateTimeTZField(auto_now_add=True)

    class Meta:
        backend = "main"
        serializer = "json"


class Membership(co.Model):
    """Every field takes the shared options (index=, unique=, ...), typed."""

    id: int = co.IntegerField(primary_key=True, index=False)
    code: str = co.StringField(max_length=16, index=True, unique=True)
    rank: int = co.IntegerField(index=True, unique=True)
    since: datetime.date = co.DateField(index=True)
    team: Team = co.ForeignKeyField(Team, on_delete=co.CASCADE, related_name="memberships")

    class Meta:
        backend = "main"
        serializer = "json"


async def main() -> None:
    co.backends.configure(main=co.SimpleBackend())
    team = await Team.create(id=1, name="Reds")
    player = Player(id=1, nick="sam", team=team, tags=["a"])
    assert_type(player.nick, str)
    assert_type(player.email, str | None)
    assert_type(player.team, Team | None)
    assert_type(player.tags, list[str])
    assert_type(player.role, Role)
    assert_type(player.bio, str | None)
    assert_type(player.joined, datetime.datetime)
    assert_type(await player.save(force_insert=True), Player)
    assert_type(await Player.get(id=1), Player)
    assert_type(await Player.get_or_none(id=2), Player | None)
    assert_type(await Player.update(id=1, score=3), Player | None)
    found = await Player.get_or_none(id=1)
    if found is not None and found.email is None:
        found.email = "sam@example.com"
        await found.save()
    task = asyncio.create_task(Player.get(id=1))
    assert_type(await task, Player)
    assert await Player.delete(id=1)


if __name__ == "__main__":
    asyncio.run(main())
