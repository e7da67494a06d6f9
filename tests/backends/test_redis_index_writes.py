"""Index writes on real Redis servers under failure: a script call that cannot complete
(out of memory, a key of another type where an index key belongs) writes nothing, and
duplicates or unique conflicts inside one call leave rows and index entries agreeing."""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import pytest

import acacheorm as co
from acacheorm._index import spec_of
from acacheorm.backends.base import Backend
from tests import servers
from tests.conftest import unique_namespace


def define(backend: Backend) -> type[co.Model]:
    class Gadget(co.Model):
        id = co.IntegerField(primary_key=True)
        group = co.IntegerField(index=True)
        rating = co.IntegerField(index=True, null=True)
        tag = co.StringField(index=True, default="")
        Meta = type("Meta", (), {"backend": backend, "serializer": "msgpack"})

    return Gadget


def define_unique(backend: Backend) -> type[co.Model]:
    class Handle(co.Model):
        id = co.IntegerField(primary_key=True)
        name = co.StringField(unique=True)
        level = co.IntegerField(index=True, default=0)
        Meta = type("Meta", (), {"backend": backend, "serializer": "msgpack"})

    return Handle


@pytest.fixture
def redis_kind(backend: Backend, backend_name: str) -> Backend:
    if backend_name not in ("redis", "redis-cluster"):
        pytest.skip("Redis index scripts")
    return backend


async def agree(model: Any, field: str, values: list[Any]) -> None:
    """Every index read agrees with the rows: filters, counts and ordered walks."""
    rows = await model.all()
    for v in values:
        expected = sorted(r.id for r in rows if getattr(r, field) == v)
        assert sorted(r.id for r in await model.filter(**{field: v})) == expected, (field, v)
        assert await model.filter(**{field: v}).count() == len(expected), (field, v)
    live = [r for r in rows if getattr(r, field) is not None]
    low = "" if isinstance(values[0], str) else -(10**6)
    assert await model.filter(**{f"{field}__gte": low}).count() == len(live)


async def test_a_duplicate_key_in_one_insert_many_keeps_only_the_last_rows_entries(
    redis_kind: Backend,
) -> None:
    Gadget = define(redis_kind)
    await Gadget.insert_many(
        Gadget(id=1, group=1, rating=10, tag="a"),
        Gadget(id=2, group=1, rating=20, tag="b"),
        Gadget(id=1, group=2, rating=30, tag="c"),  # the same row again
        Gadget(id=3, group=2, rating=None),
        Gadget(id=1, group=3, rating=40, tag="d"),
    )
    await Gadget.insert_many(
        Gadget(id=4, group=3, rating=41), Gadget(id=4, group=4, rating=42), ttl=60
    )
    assert (await Gadget.get(id=1)).group == 3
    await agree(Gadget, "group", [1, 2, 3, 4])
    await agree(Gadget, "rating", [10, 20, 30, 40, 41, 42, None])
    await agree(Gadget, "tag", ["a", "b", "c", "d", ""])
    assert [g.id for g in await Gadget.all().order_by("-rating").limit(2)] == [4, 1]
    # delete and write again in one call
    await co.delete_many((Gadget, 1))
    await Gadget.insert_many(Gadget(id=1, group=5, rating=50), Gadget(id=1, group=6, rating=60))
    await agree(Gadget, "group", [1, 2, 3, 4, 5, 6])
    await agree(Gadget, "rating", [10, 20, 30, 40, 42, 50, 60, None])


async def test_unique_conflicts_inside_one_call_exactly_one_row_wins(
    redis_kind: Backend,
) -> None:
    Handle = define_unique(redis_kind)
    with pytest.raises(co.IntegrityError, match=r"Handle\.name"):
        await Handle.insert_many(
            Handle(id=1, name="x", level=1),
            Handle(id=2, name="x", level=2),  # taken by row 1 of the same call
            Handle(id=3, name="y", level=3),
        )
    assert sorted(h.id for h in await Handle.all()) == [1, 3]
    assert [h.id for h in await Handle.filter(name="x")] == [1]
    await agree(Handle, "level", [1, 2, 3])
    # the same row twice with its own value is no conflict; freeing a value in the same call
    await Handle.insert_many(Handle(id=1, name="x", level=4), Handle(id=1, name="z", level=5))
    await Handle.insert_many(Handle(id=4, name="x", level=6))
    assert [h.id for h in await Handle.filter(name="x")] == [4]
    assert [h.id for h in await Handle.filter(name="z")] == [1]
    await agree(Handle, "level", [1, 3, 4, 5, 6])


async def test_a_planted_key_at_any_index_key_names_it_and_nothing_changes(
    redis_kind: Backend,
) -> None:
    Gadget = define(redis_kind)
    Handle = define_unique(redis_kind)
    await Gadget.insert_many(*(Gadget(id=i, group=0, rating=i, tag="old") for i in range(3)))
    await Handle.create(id=1, name="taken")
    prefix = redis_kind._prefix  # type: ignore[attr-defined]
    raw = redis_kind.client  # type: ignore[attr-defined]
    g_spec, h_spec = spec_of(Gadget._schema), spec_of(Handle._schema)
    assert g_spec is not None and h_spec is not None
    g_key, h_key = Gadget._schema.key, Handle._schema.key
    g_bucket = prefix + g_spec.index_of(g_key((10,)))
    h_bucket = prefix + h_spec.index_of(h_key((2,)))
    g_bucket1 = prefix + g_spec.index_of(g_key((1,)))  # row 1's bucket (Cluster: 16)
    cases: list[tuple[str, Any]] = [
        (f"{g_bucket}:n:rating", lambda: Gadget.create(id=10, group=1, rating=5, tag="t")),
        (f"{g_bucket}:l:tag", lambda: Gadget.create(id=10, group=1, rating=5, tag="t")),
        (f"{g_bucket}:t", lambda: Gadget.create(id=10, group=1, rating=5, tag="t")),
        (f"{g_bucket}:x", lambda: Gadget.create(id=10, group=1, rating=5, ttl=30)),
        (f"{g_bucket}:e:tag:st", lambda: Gadget.create(id=10, group=1, rating=5, tag="t")),
        (f"{h_bucket}:u:name\x00snew", lambda: Handle.create(id=2, name="new")),
        (f"{h_bucket}:e:name:snew", lambda: Handle.create(id=2, name="new")),
        # an update: the row's old entries are removed from a key that changed type
        (f"{g_bucket1}:n:group", lambda: Gadget.update(id=1, group=7)),
    ]
    for planted, write in cases:
        if await raw.exists(planted):
            await raw.rename(planted, planted + ":saved")
        await raw.sadd(planted, "planted")  # a set where a sorted set or string belongs
        try:
            with pytest.raises(co.BackendError) as info:
                await write()
            text = str(info.value)
            shown = planted.replace("\x00", "\\0")  # NUL shown as \0
            assert shown in text and "nothing written" in text, (planted, text)
            assert await raw.exists(g_key((10,))) == 0 and await raw.exists(h_key((2,))) == 0
            assert (await Gadget.get(id=1)).group == 0
        finally:
            await raw.delete(planted)
            if await raw.exists(planted + ":saved"):
                await raw.rename(planted + ":saved", planted)
    await agree(Gadget, "group", [0, 1, 7])
    await agree(Gadget, "rating", [0, 1, 2, 5])


async def test_out_of_memory_refuses_the_call_and_writes_nothing() -> None:
    if os.environ.get("ACACHEORM_TEST_REDIS_URL"):
        pytest.skip("needs a server of its own (its maxmemory is changed)")
    server = servers.RedisServer()
    with servers.running(server):
        backend = co.RedisBackend(server.url, namespace="oom")
        try:
            Gadget = define(backend)
            Handle = define_unique(backend)
            await Gadget.insert_many(*(Gadget(id=i, group=0, rating=i) for i in range(5)))
            await Handle.create(id=1, name="a")
            raw = backend.client
            keys_before = sorted(await raw.keys("*"))
            await raw.config_set("maxmemory", 1)  # every write that grows memory is refused
            try:
                writes = [
                    lambda: Gadget.insert_many(
                        *(Gadget(id=10 + i, group=1, rating=i) for i in range(50)), ttl=60
                    ),
                    lambda: Gadget.create(id=20, group=2, rating=3),
                    lambda: Gadget.update(id=1, group=5),
                    lambda: Handle.create(id=2, name="b"),
                ]
                for write in writes:
                    with pytest.raises(co.BackendError, match="out of memory") as info:
                        await write()
                    assert "nothing written" in str(info.value)
                    assert sorted(await raw.keys("*")) == keys_before
            finally:
                await raw.config_set("maxmemory", 0)
            assert (await Gadget.get(id=1)).group == 0
            await agree(Gadget, "group", [0, 1, 2, 5])
            await Gadget.insert_many(*(Gadget(id=10 + i, group=1, rating=i) for i in range(50)))
            await agree(Gadget, "group", [0, 1])
        finally:
            await backend.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_one_call_of_many_rows_ends_as_the_rows_written_one_by_one(
    redis_kind: Backend, backend_factory: Any, seed: int
) -> None:
    """Random writes of a few keys (every mode, repeated keys, unique values, TTLs) sent as
    one batch give the results and the rows and index entries of the same writes sent one
    at a time."""
    from acacheorm._commands import KEEP_TTL, Batch
    from acacheorm._writes import touch_row, write_row

    other = backend_factory()
    rng = random.Random(seed)

    def model(backend: Backend) -> type[co.Model]:
        class Card(co.Model):
            id = co.IntegerField(primary_key=True)
            code = co.StringField(unique=True, null=True)
            level = co.IntegerField(index=True, null=True)
            on = co.BooleanField(index=True, default=False)
            Meta = type("Meta", (), {"backend": backend, "serializer": "msgpack"})

        return Card

    One, Many = model(other), model(redis_kind)
    plan: list[tuple[str, int, dict[str, Any], Any]] = []
    for _ in range(60):
        mode = rng.choice(["set", "set", "add", "replace", "delete", "touch"])
        values = {
            "code": rng.choice([None, "a", "b", "c"]),
            "level": rng.choice([None, 1, 2, 2**60]),
            "on": rng.random() < 0.5,
        }
        ttl = rng.choice([None, 600, KEEP_TTL]) if mode in ("replace", "set") else 600
        if mode == "set" and ttl is KEEP_TTL:
            ttl = None
        plan.append((mode, rng.randrange(5), values, ttl))

    def commands(m: type[co.Model]) -> list[Any]:
        schema = m._schema
        out = []
        for mode, pk, values, ttl in plan:
            key = schema.key((pk,))
            if mode == "delete":
                out.append(write_row(schema, "delete", key, None))
            elif mode == "touch":
                out.append(touch_row(schema, key, rng.choice([None, 300])))
            else:
                out.append(write_row(schema, mode, key, m(id=pk, **values), ttl))
        return out

    state = rng.getstate()
    one_by_one = [(await other.execute(Batch((c,))))[0] for c in commands(One)]
    rng.setstate(state)
    together = await redis_kind.execute(Batch(tuple(commands(Many))))
    assert [type(r) for r in together] == [type(r) for r in one_by_one]
    assert [r for r in together if not isinstance(r, Exception)] == [
        r for r in one_by_one if not isinstance(r, Exception)
    ]
    rows = sorted((c.id, c.code, c.level, c.on) for c in await One.all())
    assert sorted((c.id, c.code, c.level, c.on) for c in await Many.all()) == rows
    for m in (One, Many):
        for col, field, values in (
            (1, "code", ["a", "b", "c"]),
            (2, "level", [1, 2, 2**60, None]),
            (3, "on", [True, False]),
        ):
            for v in values:
                expected = sorted(r[0] for r in rows if r[col] == v)
                assert sorted(c.id for c in await m.filter(**{field: v})) == expected, (field, v)
                assert await m.filter(**{field: v}).count() == len(expected), (field, v)
        assert await m.filter(level__gte=0).count() == sum(1 for r in rows if r[2] is not None)


async def test_entries_of_expired_rows_are_reclaimed_by_reads_without_writes(
    redis_kind: Backend,
) -> None:
    from tests.backends.test_conformance import eventually

    Gadget = define(redis_kind)
    Handle = define_unique(redis_kind)
    await Gadget.insert_many(*(Gadget(id=i, group=i % 3, rating=i, tag="t") for i in range(20)))
    await Gadget.insert_many(
        *(Gadget(id=100 + i, group=i % 3, rating=1000 + i, tag="gone") for i in range(20)),
        ttl=0.05,
    )
    await Handle.create(id=1, name="short", ttl=0.05)
    raw = redis_kind.client  # type: ignore[attr-defined]
    prefix = redis_kind._prefix  # type: ignore[attr-defined]
    g_spec, h_spec = spec_of(Gadget._schema), spec_of(Handle._schema)
    assert g_spec is not None and h_spec is not None
    g_buckets = [prefix + g_spec.bucket_name(b) for b in range(g_spec.buckets())]
    h_bucket = prefix + h_spec.bucket_name(0)

    async def entries_of_expired_rows() -> int:
        total = 0
        for b in g_buckets:
            total += await raw.zcard(f"{b}:x") + await raw.hlen(f"{b}:t")
            total += await raw.zcount(f"{b}:n:rating", 1000, 2000)
            total += await raw.zlexcount(f"{b}:l:tag", b"[gone\x00", b"(gone\x00\xff")
        total += await raw.zcard(f"{h_bucket}:x") + await raw.hlen(f"{h_bucket}:t")
        total += await raw.exists(f"{h_bucket}:u:name\x00sshort")
        return total - 20  # the entry lists of the 20 rows that live

    assert await entries_of_expired_rows() > 0

    async def expired() -> bool:  # reads are exact as soon as the rows expire
        return await Gadget.filter(group=1).count() == 7

    await eventually(expired)

    async def reclaimed() -> bool:
        # reads only, no write: each one reclaims a few expired rows' entries
        assert await Gadget.filter(group=1).count() == 7
        assert len(await Gadget.filter(tag="t")) == 20
        assert await Gadget.filter(rating__gte=0).count() == 20
        assert await Handle.filter(name="short").count() == 0
        return await entries_of_expired_rows() == 0

    await eventually(reclaimed)
    # the rows that live keep their entries
    assert sorted(g.id for g in await Gadget.filter(rating__lt=5)) == [0, 1, 2, 3, 4]
    assert await Gadget.filter(tag="t").count() == 20


async def test_rows_of_several_indexed_models_in_one_call(redis_kind: Backend) -> None:
    from acacheorm._commands import Batch
    from acacheorm._writes import write_row

    Gadget = define(redis_kind)
    Handle = define_unique(redis_kind)
    g, h = Gadget._schema, Handle._schema
    rows: list[Any] = [
        (g, Gadget(id=1, group=1, rating=1)),
        (h, Handle(id=1, name="a", level=1)),
        (g, Gadget(id=2, group=1, rating=2)),
        (h, Handle(id=2, name="a", level=2)),  # taken by the Handle just before
        (g, Gadget(id=1, group=2, rating=3)),
    ]
    batch = Batch(tuple(write_row(s, "set", s.key_of(o), o) for s, o in rows))
    results = await redis_kind.execute(batch)
    assert [r is True for r in results] == [True, True, True, False, True]
    assert isinstance(results[3], co.IntegrityError)
    await agree(Gadget, "group", [1, 2])
    await agree(Handle, "level", [1, 2])
    assert [x.id for x in await Handle.filter(name="a")] == [1]


async def test_entry_lists_are_stored_in_the_form_every_version_reads(
    redis_kind: Backend,
) -> None:
    """A row's entry list in ``B:t`` is the msgpack sequence (expiry, count, entries, count
    of unique values, unique values), counts as strings, whether the client sent the
    entries as one string or not: rows written by an earlier version and by this one are
    read alike."""
    import msgpack

    Gadget = define(redis_kind)
    Handle = define_unique(redis_kind)
    raw: Any = redis_kind.client  # type: ignore[attr-defined]
    prefix = redis_kind._prefix  # type: ignore[attr-defined]
    await Gadget.insert_many(Gadget(id=1, group=1, rating=None, tag="t\x00"))
    await Handle.create(id=1, name="n" * 40, level=3, ttl=100)

    async def stored(model: Any, pk: int) -> list[Any]:
        schema = model._schema
        key = schema.key((pk,))
        bucket = prefix + spec_of(schema).index_of(key)  # type: ignore[union-attr]
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(await raw.hget(f"{bucket}:t", prefix + key))
        return list(unpacker)

    assert await stored(Gadget, 1) == [
        -1,
        "4",
        *("num", "group", "1.0"),
        *("eq", "rating", "n"),
        *("eq", "tag", "st\x00"),
        *("lex", "tag", "t\x01\x01"),
        "0",
    ]
    got = await stored(Handle, 1)
    assert got[0] > 0  # the expiry, ms since the epoch
    assert got[1:] == [
        "3",
        *("eq", "name", "s" + "n" * 40),
        *("lex", "name", "n" * 40),
        *("num", "level", "3.0"),
        "1",
        "name\x00s" + "n" * 40,
    ]


async def test_entry_lists_of_an_earlier_version_are_read_by_writes_and_the_sweep(
    redis_kind: Backend,
) -> None:
    """Entry lists an earlier version stored as JSON (``[[field, kind, value], ...],
    [unique values]``) are read by both scripts: a write replaces the entries they list,
    and the read sweep reclaims those of an expired row."""
    import json
    import time

    import msgpack

    Gadget = define(redis_kind)
    raw: Any = redis_kind.client  # type: ignore[attr-defined]
    prefix = redis_kind._prefix  # type: ignore[attr-defined]
    spec = spec_of(Gadget._schema)
    assert spec is not None

    async def as_json(pk: int) -> tuple[str, str]:
        """Rewrite row ``pk``'s entry list in the JSON form; its bucket and row key."""
        key = Gadget._schema.key((pk,))
        bucket, row = prefix + spec.index_of(key), prefix + key
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(await raw.hget(f"{bucket}:t", row))
        stored = list(unpacker)
        n = int(stored[1])
        terms = [stored[2 + 3 * i : 5 + 3 * i] for i in range(n)]
        old = [[f, k, float(v) if k == "num" else v] for k, f, v in terms]
        await raw.hset(f"{bucket}:t", row, json.dumps([old, stored[3 + 3 * n :]]))
        return bucket, row

    await Gadget.insert_many(Gadget(id=1, group=1, rating=5, tag="a"))
    bucket, row = await as_json(1)
    await Gadget.update(id=1, tag="b", rating=6)  # the write script reads the JSON list
    assert await raw.zcard(f"{bucket}:e:tag:sa") == 0
    assert not [m for m in await raw.zrange(f"{bucket}:l:tag", 0, -1) if m.startswith(b"a\x00")]
    await agree(Gadget, "tag", ["a", "b"])
    await agree(Gadget, "rating", [5, 6])

    await Gadget.create(id=2, group=2, rating=7, tag="c", ttl=0.2)
    bucket, row = await as_json(2)
    deadline = time.monotonic() + 10
    while await raw.hexists(f"{bucket}:t", row):  # reads reclaim it once it has expired
        assert time.monotonic() < deadline, "the sweep never reclaimed the JSON entry list"
        assert await Gadget.filter(group=2).count() in (0, 1)
    assert await raw.zcard(f"{bucket}:e:tag:sc") == 0
    assert await raw.zscore(f"{bucket}:n:rating", row) is None
    assert await Gadget.filter(group=2).count() == 0


def test_the_buckets_of_a_batch_are_those_of_each_key() -> None:
    """insert_many looks a bucket up once per bucket tag: the same bucket as `index_of`
    gives key by key, braces and tag-like text in the keys included."""
    from acacheorm._writes import _buckets_of

    backend = co.RedisBackend("redis://127.0.0.1:1", cluster=True)  # never connected

    class Item(co.Model):
        id = co.StringField(primary_key=True)
        group = co.IntegerField(index=True)
        Meta = type("Meta", (), {"backend": backend, "serializer": "msgpack"})

    spec = spec_of(Item._schema)
    assert spec is not None and spec.tagged()
    rng = random.Random(7)
    pks = ["", "{", "}", "{item.3}", "x{item.3}", "{item.}", "a{b}c", "{item.12}{"]
    pks += ["".join(rng.choice("{}.item3x") for _ in range(rng.randrange(12))) for _ in range(500)]
    keys = [Item._schema.key_of(Item(id=pk, group=1)) for pk in pks]
    keys += ["item:plain", "item:old{other.3}"]  # keys without this model's tag
    assert _buckets_of(spec, keys) == [spec.index_of(k) for k in keys]


async def test_long_values_are_indexed_but_not_kept_by_the_client(redis_kind: Backend) -> None:
    """The client keeps the wire form of short index entries only: a long indexed string
    is written (and found) without staying in memory after its write."""
    from acacheorm.backends.redis import _index_lua

    Gadget = define(redis_kind)
    long_tag = "x" * 5000
    await Gadget.insert_many(Gadget(id=1, group=1, tag=long_tag), Gadget(id=2, group=1, tag="y"))
    assert [g.id for g in await Gadget.filter(tag=long_tag)] == [1]
    assert [g.id for g in await Gadget.filter(tag__startswith="xxx")] == [1]
    assert all(len(v[0]) <= _index_lua._ENTRY_KEPT for v in _index_lua._ENTRIES.values())
    assert not any(long_tag in str(term) for term in _index_lua._ENTRIES)


def test_bucket_tags_take_one_slot_range_each() -> None:
    """Bucket ``b`` of ``n`` has its hash slot in the ``b``-th of ``n`` equal slot ranges
    (so the buckets spread over a Cluster's nodes as evenly as its slots); one bucket
    keeps the ``.0`` tag; the tags are the same on every call."""
    from redis.crc import key_slot

    from acacheorm._keys import bucket_tags

    assert bucket_tags("item", 1) == ("item.0",)
    for tag in ("item", "player", "a:b", "ünï"):
        for n in (2, 3, 16, 64):
            tags = bucket_tags(tag, n)
            assert len(set(tags)) == n and all(t.startswith(tag + ".") for t in tags)
            slots = [key_slot(t.encode()) for t in tags]
            assert [s * n // 16384 for s in slots] == list(range(n)), (tag, n)
            bucket_tags.cache_clear()
            assert bucket_tags(tag, n) == tags


async def test_an_indexed_model_spreads_its_buckets_evenly_over_the_cluster(
    redis_cluster_url: str,
) -> None:
    """On the 3-master test Cluster, the 16 buckets of an indexed model are 5, 5 and 6 per
    master (tags taken at random put up to 8 on one), and every row key lands in its
    bucket's slot."""
    backend = co.RedisBackend(redis_cluster_url, cluster=True, namespace=unique_namespace())
    try:
        Gadget = define(backend)
        spec = spec_of(Gadget._schema)
        assert spec is not None and spec.buckets() == 16
        client = backend.client
        await client.initialize()
        slots = [client.keyslot(spec.bucket_name(b)) for b in range(16)]
        owners = [client.nodes_manager.get_node_from_slot(s).name for s in slots]
        assert sorted(owners.count(o) for o in set(owners)) == [5, 5, 6]
        await Gadget.insert_many(*(Gadget(id=i, group=i % 7) for i in range(200)))
        assert sorted(g.id for g in await Gadget.filter(group=3)) == list(range(3, 200, 7))
        assert await Gadget.count() == 200
        bucket_slots = set(slots)
        rows = [k async for k in backend.scan() if not k.startswith("~ix")]
        assert len(rows) == 200
        assert {client.keyslot(backend._prefix + k) for k in rows} <= bucket_slots
    finally:
        await backend.clear()
        await backend.close()


def test_fresh_rows_take_the_fresh_layout_and_every_other_call_the_general_one() -> None:
    """The write script gets fresh rows (one bucket, mode "set", no TTL, no unique values,
    no key twice) in its fresh layout, grouped by index key; any other call in the
    general layout."""
    from acacheorm._commands import KEEP_TTL, IndexedWrite, IndexTerm
    from acacheorm.backends.redis import _index_lua

    def row(key: str, bucket: str = "b", **options: Any) -> IndexedWrite:
        terms = (IndexTerm("g", "eq", "i1"), IndexTerm("g", "num", 1.0))
        terms += (IndexTerm("t", "eq", "sx"), IndexTerm("t", "lex", "x"))
        return IndexedWrite(
            key, bucket, options.pop("mode", "set"), b"v" + key.encode(), terms=terms, **options
        )

    argv = _index_lua.write_argv([row("k1"), row("k2")], "ns:")
    assert argv[:6] == ["F", b"ns:b", b"vk1", b"vk2", *argv[4:6]]
    assert argv[4] == b"\xff\xa13\xa3num\xa1g\xa31.0\xa2eq\xa1t\xa2sx\xa3lex\xa1t\xa1x\xa10"
    assert argv[6:] == [
        *(b":n:g", "R", b"1.0", b"1.0"),  # a score per row, the members are the row keys
        *(b":e:t:sx", "R", b"inf", b"inf"),
        *(b":l:t", 4, b"0", b"x\x00k1", b"0", b"x\x00k2"),
    ]
    for other in (
        [row("k1"), row("k2", ttl=5)],
        [row("k1"), row("k2", ttl=KEEP_TTL)],
        [row("k1"), row("k2", mode="add")],
        [row("k1"), row("k2", unique=("t\x00sx",))],
        [row("k1"), row("k2", bucket="c")],
        [row("k1"), row("k1")],
    ):
        assert not _index_lua.fresh(other)
        assert _index_lua.write_argv(other, "ns:")[0] != "F"


async def keys_of(backend: Backend) -> dict[str, Any]:
    """Every key of the backend's namespace and what it holds (the namespace taken out)."""
    raw: Any = backend.client  # type: ignore[attr-defined]
    prefix = backend._prefix.encode()  # type: ignore[attr-defined]
    out: dict[str, Any] = {}
    async for k in backend.scan():
        key = backend._prefix + k  # type: ignore[attr-defined]
        kind = await raw.type(key)
        if kind == b"zset":
            got: Any = [
                (m.replace(prefix, b""), s)
                for m, s in await raw.zrange(key, 0, -1, withscores=True)
            ]
        elif kind == b"hash":
            got = sorted((f.replace(prefix, b""), v) for f, v in (await raw.hgetall(key)).items())
        else:
            got = (await raw.get(key), await raw.pttl(key) > 0)
        out[k] = (kind, got)
    return out


async def test_fresh_rows_leave_the_keys_the_general_path_leaves(
    redis_kind: Backend, backend_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of every indexable kind of value, written (then overwritten, in part) through
    the fresh layout and through the general one, leave the same keys holding the same
    bytes: rows, index entries, entry lists."""
    from acacheorm.backends.redis import _index_lua

    def model(backend: Backend) -> type[co.Model]:
        class Mix(co.Model):
            id = co.IntegerField(primary_key=True)
            n = co.IntegerField(index=True, null=True)
            f = co.FloatField(index=True, null=True)
            s = co.StringField(index=True, default="")
            b = co.BooleanField(index=True, default=False)
            Meta = type("Meta", (), {"backend": backend, "serializer": "msgpack"})

        return Mix

    rng = random.Random(5)

    def rows(m: type[co.Model], ids: range) -> list[Any]:
        return [
            m(
                id=i,
                n=rng.choice([None, 0, -5, 7, 2**60, 10**15, 10**16]),
                f=rng.choice([None, 1.5, -0.0, float("nan"), float("inf"), 1e300, 3.0]),
                s=rng.choice(["", "a", "a\x00b", "\x01z", "é" * 40]),
                b=rng.random() < 0.5,
            )
            for i in ids
        ]

    general = backend_factory()
    real = _index_lua.fresh
    written: dict[str, Any] = {}
    for backend, layout in ((redis_kind, True), (general, False)):
        monkeypatch.setattr(_index_lua, "fresh", lambda cmds, on=layout: on and real(cmds))
        Mix = model(backend)
        rng.seed(5)
        await Mix.insert_many(*rows(Mix, range(40)))
        await Mix.insert_many(*rows(Mix, range(20, 60)))  # rows 20-39 have entries already
        written[str(layout)] = await keys_of(backend)
        await agree(Mix, "n", [None, 0, -5, 7, 2**60, 10**15, 10**16])
        await agree(Mix, "s", ["", "a", "a\x00b", "\x01z", "é" * 40])
    assert written["True"] == written["False"]
    assert len([k for k in written["True"] if not k.startswith("~ix")]) == 60


async def test_fresh_rows_reclaim_the_entries_of_expired_rows(redis_kind: Backend) -> None:
    """A call of fresh rows in a bucket where an expired row still has entries reclaims
    them as every write does (its rows then take the general way)."""
    Gadget = define(redis_kind)
    raw: Any = redis_kind.client  # type: ignore[attr-defined]
    prefix = redis_kind._prefix  # type: ignore[attr-defined]
    spec = spec_of(Gadget._schema)
    assert spec is not None
    key = Gadget._schema.key
    await Gadget.create(id=1, group=1, rating=1, tag="gone", ttl=0.2)
    bucket = spec.index_of(key((1,)))
    same = [i for i in range(2, 400) if spec.index_of(key((i,))) == bucket][:3]
    row = prefix + key((1,))
    b = prefix + bucket
    assert await raw.hexists(f"{b}:t", row)
    deadline = time.monotonic() + 10
    while await raw.exists(row):
        assert time.monotonic() < deadline, "the row never expired"
        await asyncio.sleep(0.05)
    await Gadget.insert_many(*(Gadget(id=i, group=2, rating=i) for i in same))
    assert not await raw.hexists(f"{b}:t", row)
    assert await raw.zscore(f"{b}:n:rating", row) is None
    assert await raw.zcard(f"{b}:e:tag:sgone") == 0
    assert sorted(g.id for g in await Gadget.filter(group=2)) == same


async def test_cluster_index_reads_after_a_script_flush_and_beside_a_broken_bucket(
    redis_cluster_url: str,
) -> None:
    """A filter's reads of its 16 buckets on Cluster: after the nodes lost their script
    cache every read is sent again with the script's body; filters merged into one batch
    (the same buckets read twice) get their own rows; a bucket whose index key holds
    another type fails the reads of that field, and only those."""
    import asyncio

    backend = co.RedisBackend(redis_cluster_url, cluster=True, namespace=unique_namespace())
    try:
        Gadget = define(backend)
        await Gadget.insert_many(
            *(Gadget(id=i, group=i % 7, rating=i, tag=f"t{i % 3}") for i in range(200))
        )
        sevens = list(range(3, 200, 7))
        client = backend.client

        async def flush() -> None:  # every master forgets the scripts
            assert await client.script_flush()  # redis-py sends it to every primary

        await flush()
        assert sorted(g.id for g in await Gadget.filter(group=3)) == sevens
        await flush()
        assert await Gadget.filter(group=3).count() == len(sevens)
        await flush()
        top = await Gadget.filter(rating__gte=50).order_by("-rating").limit(3)
        assert [g.id for g in top] == [199, 198, 197]
        both, again, n = await asyncio.gather(
            Gadget.filter(group=3), Gadget.filter(group=3), Gadget.filter(group=4).count()
        )
        assert sorted(g.id for g in both) == sorted(g.id for g in again) == sevens
        assert n == len(range(4, 200, 7))
        spec = spec_of(Gadget._schema)
        assert spec is not None
        await client.set(f"{backend._prefix}{spec.bucket_name(5)}:n:group", b"not a zset")
        with pytest.raises(co.BackendError, match="WRONGTYPE"):
            await Gadget.filter(group=3)
        with pytest.raises(co.BackendError, match="WRONGTYPE"):
            await Gadget.filter(group=3).count()
        assert await Gadget.filter(tag="t1").count() == len(range(1, 200, 3))
    finally:
        await backend.clear()
        await backend.close()


async def test_reads_skip_rows_past_their_ttl_in_buckets_with_and_without_expiring_rows(
    redis_kind: Backend,
) -> None:
    """Equality, range, ordered and count reads see exactly the live rows: in buckets whose
    rows never expire (the scripts skip the expiry lookups there) and in buckets holding
    rows past their TTL that no sweep has reclaimed yet (many more than one read sweeps)."""
    from tests.backends.test_conformance import eventually

    Gadget = define(redis_kind)
    await Gadget.insert_many(*(Gadget(id=i, group=i % 2, rating=i, tag="t") for i in range(60)))
    expected_all = list(range(60))
    assert sorted(g.id for g in await Gadget.filter(rating__gte=10)) == expected_all[10:]
    assert [g.id for g in await Gadget.filter(rating__lt=40).order_by("-rating").limit(3)] == [
        39,
        38,
        37,
    ]
    assert await Gadget.filter(group=1).count() == 30
    assert await Gadget.filter(tag="t").count() == 60
    await Gadget.insert_many(
        *(Gadget(id=100 + i, group=i % 2, rating=100 + i, tag="t") for i in range(200)),
        ttl=0.05,
    )

    async def expired() -> bool:  # asked of the rows alone: no index read sweeps meanwhile
        return set(await Gadget.query_many(*range(100, 300))) == {None}

    await eventually(expired)
    assert await Gadget.filter(rating__gte=0).count() == 60
    assert sorted(g.id for g in await Gadget.filter(rating__gte=10)) == expected_all[10:]
    top = await Gadget.filter(rating__gte=0).order_by("-rating").limit(3)
    assert [g.id for g in top] == [59, 58, 57]
    assert sorted(g.id for g in await Gadget.filter(group=1)) == list(range(1, 60, 2))
    assert await Gadget.filter(group=0).count() == 30
    assert sorted(g.id for g in await Gadget.filter(tag="t")) == expected_all
    assert await Gadget.filter(tag__startswith="t").count() == 60


async def test_query_many_finds_the_rows_of_an_indexed_model(redis_kind: Backend) -> None:
    """On Cluster a row key of an indexed model ends with its bucket's hash tag: reading
    many rows by key computes those keys, as reading one does."""
    Gadget = define(redis_kind)
    await Gadget.insert_many(*(Gadget(id=i, group=i % 2) for i in range(20)))
    got = await Gadget.query_many(*range(25))
    assert [g.id if g is not None else None for g in got] == [*range(20), *[None] * 5]
    assert [g.id for g in await Gadget.query_many(3)] == [3]
    both = await co.query_many((Gadget, 4), (Gadget, 30))
    assert [g.id if g is not None else None for g in both] == [4, None]
