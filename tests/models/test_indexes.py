"""Secondary indexes: unique values, on_delete, round trips, races and expiry, on every
backend that keeps indexes (memory, Redis, Redis Cluster); a clear error elsewhere."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

import acacheorm as co
from acacheorm._commands import Get, IndexedWrite, IndexRead
from acacheorm.backends.base import Backend
from tests.backends.test_conformance import eventually
from tests.models.conftest import RoundTrips


def define(backend: Backend) -> tuple[type[co.Model], type[co.Model]]:
    class Team(co.Model):
        id = co.IntegerField(primary_key=True)
        name = co.StringField(unique=True)
        Meta = type("Meta", (), {"backend": backend, "serializer": "msgpack"})

    class Player(co.Model):
        id = co.IntegerField(primary_key=True)
        nick = co.StringField(index=True)
        score = co.IntegerField(default=0, index=True)
        plain = co.IntegerField(default=0)
        team = co.ForeignKeyField(Team, null=True, on_delete=co.SET_NULL)
        Meta = type("Meta", (), {"backend": backend, "serializer": "msgpack"})

    return Team, Player


def second_client(backend: Backend, factory: Any) -> Backend:
    """Another backend object on the same store (the in-process store is its own object)."""
    if isinstance(backend, co.SimpleBackend):
        return backend
    return factory(namespace=backend._prefix.rstrip(":"))  # type: ignore[no-any-return]


@pytest.fixture
def indexed(backend: Backend, backend_name: str) -> Backend:
    if not backend.capabilities.indexes:
        pytest.skip(f"{backend_name} keeps no secondary indexes")
    return backend


async def test_index_options_need_a_backend_that_keeps_indexes(
    backend: Backend, backend_name: str
) -> None:
    if backend.capabilities.indexes:
        pytest.skip("this backend keeps indexes")
    with pytest.raises(co.ConfigurationError, match=type(backend).__name__):

        class Bad(co.Model):
            id = co.IntegerField(primary_key=True)
            nick = co.StringField(index=True)
            Meta = type("Meta", (), {"backend": backend, "serializer": "msgpack"})


def test_bad_options_are_definition_errors() -> None:
    with pytest.raises(TypeError, match="index must be a bool"):
        co.IntegerField(index="yes")
    with pytest.raises(TypeError, match="on_delete"):
        co.ForeignKeyField("x", on_delete="cascade")
    with pytest.raises(TypeError, match="null=True"):
        co.ForeignKeyField("x", on_delete=co.SET_NULL)
    with pytest.raises(co.ConfigurationError, match="JSONField"):

        class J(co.Model):
            id = co.IntegerField(primary_key=True)
            data = co.JSONField(index=True)
            Meta = type("Meta", (), {"backend": co.SimpleBackend(), "serializer": "json"})


async def test_unique_refuses_a_second_live_row(indexed: Backend) -> None:
    Team, _ = define(indexed)
    await Team.create(id=1, name="red")
    with pytest.raises(co.IntegrityError, match=r"Team\.name.*'red'"):
        await Team.create(id=2, name="red")
    assert await Team.get_or_none(id=2) is None  # nothing written
    await Team.update(id=1, name="blue")  # the value is free again
    await Team.create(id=2, name="red")
    with pytest.raises(co.IntegrityError):
        await Team.update(id=2, name="blue")
    assert (await Team.get(id=2)).name == "red"
    await Team.delete(id=1)
    await Team.update(id=2, name="blue")
    assert [t.id for t in await Team.filter(name="blue")] == [2]


async def test_unique_value_of_an_expired_row_is_free(indexed: Backend) -> None:
    Team, _ = define(indexed)
    await Team.create(id=1, name="red", ttl=0.2)

    async def free() -> bool:
        try:
            await Team.create(id=2, name="red")
        except co.IntegrityError:
            return False
        return True

    await eventually(free)
    assert await Team.filter(name="red").count() == 1


async def test_racing_inserts_of_a_unique_value_exactly_one_wins(
    indexed: Backend, backend_factory: Any
) -> None:
    other = second_client(indexed, backend_factory)
    Team, _ = define(indexed)
    Team2, _ = define(other)

    async def insert(i: int) -> bool:
        model = Team if i % 2 else Team2
        try:
            await model.create(id=i, name="same")
        except co.IntegrityError:
            return False
        return True

    try:
        won = await asyncio.gather(*(insert(i) for i in range(20)))
        assert sum(won) == 1
        assert await Team.filter(name="same").count() == 1
        assert len(await Team.all()) == 1
    finally:
        if other is not indexed:
            await other.close()


async def test_indexed_reads_count_round_trips(indexed: Backend, round_trips: RoundTrips) -> None:
    _, Player = define(indexed)
    await Player.insert_many(*(Player(id=i, nick=f"n{i % 4}", score=i) for i in range(80)))
    round_trips.reset()
    assert await Player.filter(nick="n1").count() == 20
    assert round_trips.count == 1
    assert not any(isinstance(c, Get) for c in round_trips.commands())
    round_trips.reset()
    assert await Player.filter(nick="n2").exists()
    assert round_trips.count == 1
    round_trips.reset()
    got = await Player.filter(nick="n3")
    assert sorted(p.id for p in got) == list(range(3, 80, 4))
    gets = sum(isinstance(c, Get) for c in round_trips.commands())
    if isinstance(indexed, co.FileSystemBackend):  # rows are read apart from the index
        assert (round_trips.count, gets) == (2, 20)
    else:  # the rows come with the index read
        assert (round_trips.count, gets) == (1, 0)
    round_trips.reset()
    top = await Player.filter(score__gte=10).order_by("-score").limit(5)
    assert [p.id for p in top] == [79, 78, 77, 76, 75]
    assert round_trips.count <= 2
    assert sum(isinstance(c, Get) for c in round_trips.commands()) <= 6
    assert "index" in Player.filter(nick="a").explain()
    assert "no row read" in Player.filter(nick="a").count().explain()
    assert "full scan" in Player.filter(plain=1).explain()


async def test_writes_without_indexes_send_plain_commands(
    indexed: Backend, round_trips: RoundTrips
) -> None:
    class Plain(co.Model):
        id = co.IntegerField(primary_key=True)
        Meta = type("Meta", (), {"backend": indexed, "serializer": "msgpack"})

    await Plain.create(id=1)
    await Plain.delete(id=1)
    assert round_trips.count == 2
    assert not any(isinstance(c, IndexedWrite | IndexRead) for c in round_trips.commands())


async def test_expired_rows_leave_the_index_at_once(indexed: Backend) -> None:
    _, Player = define(indexed)
    await Player.create(id=1, nick="a", score=5)
    await Player.create(id=2, nick="a", score=6, ttl=0.2)
    assert await Player.filter(nick="a").count() == 2

    async def one_left() -> bool:
        return await Player.filter(nick="a").count() == 1

    await eventually(one_left)
    assert [p.id for p in await Player.filter(score__gte=0)] == [1]
    assert await Player.filter(score__gte=0).count() == 1
    assert [p.id for p in await Player.filter(nick="a").order_by("score").limit(5)] == [1]


async def test_range_reads_page_past_many_expired_entries(indexed: Backend) -> None:
    # 300 expired rows below 300 live ones: range reads page through entries (several pages
    # of the index, some of a single member for exists()) and skip every expired one.
    _, Player = define(indexed)
    await Player.insert_many(*(Player(id=i, nick="e", score=i) for i in range(300)), ttl=0.2)
    await Player.insert_many(*(Player(id=i, nick="l", score=i) for i in range(300, 600)))

    async def expired() -> bool:
        return await Player.filter(score__gte=0).count() == 300

    await eventually(expired)
    assert not await Player.filter(score__lt=300).exists()
    assert await Player.filter(score__lt=301).exists()
    assert await Player.filter(score__range=(250, 310)).count() == 11
    top = await Player.filter(score__gte=0).order_by("score").limit(5)
    assert [p.id for p in top] == [300, 301, 302, 303, 304]
    low = await Player.filter(score__lt=303).order_by("-score").offset(1).limit(5)
    assert [p.id for p in low] == [301, 300]
    assert [p.id for p in await Player.filter(score__gte=598)] == [598, 599]


async def test_on_delete_set_null_cascade_restrict(indexed: Backend) -> None:
    Team, Player = define(indexed)

    class Member(co.Model):
        id = co.IntegerField(primary_key=True)
        team = co.ForeignKeyField(Team, on_delete=co.CASCADE)
        Meta = type("Meta", (), {"backend": indexed, "serializer": "msgpack"})

    class Badge(co.Model):
        id = co.IntegerField(primary_key=True)
        member = co.ForeignKeyField(Member, on_delete=co.RESTRICT)
        Meta = type("Meta", (), {"backend": indexed, "serializer": "msgpack"})

    red = await Team.create(id=1, name="red")
    await Team.create(id=2, name="blue")
    await Player.create(id=1, nick="a", team=red)
    await Player.create(id=2, nick="b", team=2)
    await Member.create(id=1, team=red)
    await Member.create(id=2, team=red)
    await Member.create(id=3, team=2)
    await Badge.create(id=1, member=3)

    await Team.delete(id=1)
    assert (await Player.get(id=1)).team_id is None  # SET_NULL
    assert (await Player.get(id=2)).team_id == 2
    assert sorted(m.id for m in await Member.all()) == [3]  # CASCADE

    with pytest.raises(co.IntegrityError, match="RESTRICT"):
        await Team.delete(id=2)  # cascades to Member 3, which a Badge restricts
    assert await Team.get_or_none(id=2) is not None
    assert await Member.get_or_none(id=3) is not None
    await Badge.delete(id=1)
    await Team.delete(id=2)
    assert await Member.all() == []


async def test_concurrent_changes_through_two_backends_keep_index_and_rows_agreeing(
    indexed: Backend, backend_factory: Any
) -> None:
    other = second_client(indexed, backend_factory)
    _, P1 = define(indexed)
    _, P2 = define(other)
    await P1.insert_many(*(P1(id=i, nick="a", score=0) for i in range(5)))
    rng = random.Random(7)
    plans = [(rng.randrange(5), rng.choice("abc"), rng.randrange(4)) for _ in range(50)]

    async def change(k: int) -> None:
        pk, nick, score = plans[k]
        model = P1 if k % 2 else P2
        if k % 3 == 0:
            await model.update(id=pk, nick=nick, score=model.score + score)
        else:
            await model.filter(id=pk).update(nick=nick, score=score)

    try:
        await asyncio.gather(*(change(k) for k in range(50)))
        rows = await P1.all()
        assert len(rows) == 5
        for nick in "abc":
            expected = sorted(r.id for r in rows if r.nick == nick)
            assert sorted(r.id for r in await P2.filter(nick=nick)) == expected
            assert await P1.filter(nick=nick).count() == len(expected)
        for score in range(0, 200):
            expected = sorted(r.id for r in rows if r.score == score)
            assert await P1.filter(score=score).count() == len(expected)
        assert await P1.filter(score__gte=0).count() == 5
    finally:
        if other is not indexed:
            await other.close()


async def test_migrate_builds_the_index_of_rows_written_before_it(
    indexed: Backend, backend_name: str
) -> None:
    if indexed.capabilities.index_buckets > 1:
        pytest.skip("on Cluster an indexed model's keys carry their bucket tag")
    from acacheorm.cli import _ops

    meta = {"backend": indexed, "serializer": "msgpack", "name": "legacy"}

    class Before(co.Model):
        id = co.IntegerField(primary_key=True)
        nick = co.StringField()
        Meta = type("Meta", (), meta)

    await Before.insert_many(*(Before(id=i, nick="ab"[i % 2]) for i in range(10)))

    class After(co.Model):
        id = co.IntegerField(primary_key=True)
        nick = co.StringField(index=True)
        Meta = type("Meta", (), meta)

    assert await After.filter(nick="a").count() == 0  # no entries yet
    keys = await _ops.scan_keys(indexed, _ops.model_key_prefix(After))
    done: list[int] = []
    report = await _ops.migrate(indexed, After, keys, batch_size=4, progress=done.append)
    assert report.migrated == 10 and sum(done) == 10
    assert await After.filter(nick="a").count() == 5
    assert sorted(p.id for p in await After.filter(nick="b")) == [1, 3, 5, 7, 9]


async def test_touch_moves_the_index_entries_expiry_with_the_row(indexed: Backend) -> None:
    from acacheorm._commands import Batch
    from acacheorm._writes import touch_row

    _, Player = define(indexed)
    schema = Player._schema
    await Player.create(id=1, nick="a", score=1, ttl=0.3)  # made permanent below
    await Player.create(id=2, nick="a", score=2, ttl=0.3)  # expires as written
    await Player.create(id=3, nick="a", score=3)  # made short-lived below

    async def touch(pk: int, ttl: float | None) -> bool:
        [done] = await indexed.execute(Batch((touch_row(schema, schema.key((pk,)), ttl),)))
        return bool(done)

    assert await touch(1, None)
    assert await touch(3, 0.3)
    assert not await touch(4, 10)  # no such row

    async def only_the_permanent_one() -> bool:
        return [p.id for p in await Player.filter(nick="a")] == [1]

    await eventually(only_the_permanent_one)
    assert await Player.filter(nick="a").count() == 1
    assert await Player.filter(score__gte=0).count() == 1


async def test_on_delete_runs_in_every_delete_form(indexed: Backend) -> None:
    Team, _ = define(indexed)

    class Member(co.Model):
        id = co.IntegerField(primary_key=True)
        team = co.ForeignKeyField(Team, on_delete=co.CASCADE)
        Meta = type("Meta", (), {"backend": indexed, "serializer": "msgpack"})

    for i in range(1, 4):
        await Team.create(id=i, name=f"t{i}")
        await Member.create(id=i, team=i)
    await co.delete_many((Team, 1))
    await Team.filter(name="t2").delete()
    team3 = await Team.get(id=3)
    await team3.delete_instance()
    assert await Member.all() == []
    assert await Team.all() == []


async def test_counts_in_the_index_agree_with_rows_on_edge_values(indexed: Backend) -> None:
    class Edge(co.Model):
        id = co.IntegerField(primary_key=True)
        n = co.IntegerField(null=True, index=True)
        x = co.FloatField(index=True)
        s = co.StringField(index=True)
        Meta = type("Meta", (), {"backend": indexed, "serializer": "msgpack"})

    big = 2**53 + 1
    values = [
        (1, None, float("nan"), ""),
        (2, 0, -0.0, "a"),
        (3, big, 0.0, "a\u00e9"),
        (4, big + 1, float("inf"), "b"),
        (5, -big, -float("inf"), "\U0001f600"),
    ]
    for pk, n, x, s in values:
        await Edge.create(id=pk, n=n, x=x, s=s)
    queries: list[dict[str, Any]] = [
        {"n__in": [None, 0]},
        {"n": None},
        {"n__gt": big},
        {"n__gte": big + 1},
        {"n__lt": -big + 1},
        {"x": 0.0},
        {"x": float("nan")},
        {"x__gt": 0.0},
        {"x__lte": -0.0},
        {"s__startswith": "a"},
        {"s__gt": "a"},
        {"s__lte": "a"},
        {"s__gte": "\U0001f600"},
    ]
    for q in queries:
        rows = await Edge.filter(**q)
        assert await Edge.filter(**q).count() == len(rows), q
        assert await Edge.filter(**q).exists() is bool(rows), q
    assert sorted(e.id for e in await Edge.filter(n__in=[None, 0])) == [2]
    assert sorted(e.id for e in await Edge.filter(x=0.0)) == [2, 3]
    assert sorted(e.id for e in await Edge.filter(n__gt=big)) == [4]
    assert sorted(e.id for e in await Edge.filter(s__gt="a")) == [3, 4, 5]


async def test_string_ranges_with_nul_and_low_bytes_match_brute_force(indexed: Backend) -> None:
    """Values holding NUL and other low code points sort and match as Python compares them
    (the Redis entries keep value and key apart whatever bytes the value holds)."""

    class Low(co.Model):
        id = co.IntegerField(primary_key=True)
        s = co.StringField(index=True)
        Meta = type("Meta", (), {"backend": indexed, "serializer": "msgpack"})

    values = ["", "a", "a\x00", "a\x00b", "a\x00\x00", "a\x01", "a\x01\x00", "ab", "b\x00", "\x00"]
    values += ["a\U0010ffff", "a\U0010ffffz", "a\ud7ff", "a\ue000"]
    rows = {i: s for i, s in enumerate(values, start=1)}
    for pk, s in rows.items():
        await Low.create(id=pk, s=s)
    bounds = ["", "a", "a\x00", "a\x00b", "a\x01", "\x00", "b", "a\U0010ffff", "a\ud7ff"]
    checks: list[tuple[dict[str, Any], Any]] = []
    for b in bounds:
        checks += [
            ({"s": b}, lambda s, b=b: s == b),
            ({"s__gt": b}, lambda s, b=b: s > b),
            ({"s__gte": b}, lambda s, b=b: s >= b),
            ({"s__lt": b}, lambda s, b=b: s < b),
            ({"s__lte": b}, lambda s, b=b: s <= b),
            ({"s__startswith": b}, lambda s, b=b: s.startswith(b)),
        ]
    for lookup, pred in checks:
        expected = sorted(pk for pk, s in rows.items() if pred(s))
        got = sorted(r.id for r in await Low.filter(**lookup))
        assert got == expected, lookup
        assert await Low.filter(**lookup).count() == len(expected), lookup
    ordered = [r.s for r in await Low.all().order_by("s")]
    assert ordered == sorted(values)
    assert [r.s for r in await Low.all().order_by("-s").limit(4)] == sorted(values)[::-1][:4]


def test_entries_of_new_values_are_kept_once_the_memo_is_full() -> None:
    """The client keeps the index entries of the latest int and str values of a field: a
    field whose memo filled up with earlier values keeps memoizing new ones, and the
    entries are those of the general path either way."""
    from acacheorm import _index

    class Memo(co.Model):
        id = co.IntegerField(primary_key=True)
        level = co.IntegerField(index=True)
        Meta = type("Meta", (), {"backend": co.SimpleBackend(), "serializer": "msgpack"})

    spec = _index.spec_of(Memo._schema)
    assert spec is not None
    for v in range(_index._MEMO + 10):
        spec.terms(Memo(id=1, level=v))
    memo = spec._memo["level"]
    assert len(memo) <= _index._MEMO and _index._MEMO + 9 in memo
    terms, unique = spec.terms(Memo(id=1, level=5))
    assert terms == (("level", "eq", "i5"), ("level", "num", 5.0)) and unique == ()


async def test_a_large_insert_many_refused_by_a_row_writes_nothing_and_keeps_the_collector(
    indexed: Backend,
) -> None:
    """The rows of a large insert_many are built with the collector paused: a row that
    cannot be encoded refuses the whole call before anything is written, and the
    collector is running again after it."""
    import gc

    _, Player = define(indexed)
    rows = [Player(id=i, nick=f"p{i}", score=i) for i in range(300)]
    bad = Player(id=300, nick="bad", score=1)
    bad.__dict__["score"] = object()  # past validation: only the encoding can refuse it
    assert gc.isenabled()
    with pytest.raises(co.SerializationError, match="key='player:300"):
        await Player.insert_many(*rows, bad)
    assert gc.isenabled()
    assert await Player.count() == 0
    await Player.insert_many(*rows[:300])
    assert await Player.filter(score__gte=150).count() == 150


async def test_integers_beyond_a_doubles_range_are_indexed_and_found(indexed: Backend) -> None:
    """An indexed integer too large for a float (JSON stores any int) orders as +-infinity
    in the index, and every read re-checks it against the rows: writes, equality, ranges
    on either side and ordering all agree with Python's own comparisons."""

    class Big(co.Model):
        id = co.IntegerField(primary_key=True)
        n = co.IntegerField(index=True)
        Meta = type("Meta", (), {"backend": indexed, "serializer": "json"})

    values = [10**400, 10**401, -(10**400), -(10**401), 2**70, 5, -7, 10**308]
    await Big.insert_many(*(Big(id=i, n=v) for i, v in enumerate(values)))
    rows = {i: v for i, v in enumerate(values)}
    probes = [10**400, 10**401, 10**402, -(10**400), -(10**402), 2**70, 5, 0, 10**308]
    for p in probes:
        for op, test in (
            ("exact", lambda v, p=p: v == p),
            ("gt", lambda v, p=p: v > p),
            ("gte", lambda v, p=p: v >= p),
            ("lt", lambda v, p=p: v < p),
            ("lte", lambda v, p=p: v <= p),
        ):
            found = sorted(b.id for b in await Big.filter(**{f"n__{op}": p}))
            assert found == sorted(i for i, v in rows.items() if test(v)), (op, p)
            assert await Big.filter(**{f"n__{op}": p}).count() == len(found), (op, p)
    top = await Big.order_by("-n").limit(3)
    assert [b.n for b in top] == sorted(values, reverse=True)[:3]
    low = await Big.filter(n__range=(-(10**402), 0)).order_by("n")
    assert [b.n for b in low] == sorted(v for v in values if v <= 0)
