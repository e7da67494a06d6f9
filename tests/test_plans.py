"""Plans driven with canned results, without a server: the round trips a query makes, its
retries, its relation levels and its races, asserted step by step (as peewee's tests
assert the SQL a query compiles to)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import acacheorm as co
from acacheorm._commands import KEEP_TTL, Add, Batch, Cas, Get, Gets, Set
from acacheorm._executor import Backoff, Driven, Emit, Lock, Unlock, drive
from acacheorm._query import MAX_UPDATE_ATTEMPTS
from acacheorm.cli._ops import migrate_plan

BACKEND = co.SimpleBackend(namespace="plans")


class Team(co.Model):
    id = co.IntegerField(primary_key=True)
    name = co.StringField(default="")

    class Meta:
        backend = BACKEND
        serializer = "json"


class Author(co.Model):
    id = co.IntegerField(primary_key=True)
    name = co.StringField(default="")
    team = co.ForeignKeyField(Team, null=True)

    class Meta:
        backend = BACKEND
        serializer = "json"


class Article(co.Model):
    id = co.IntegerField(primary_key=True)
    title = co.StringField(default="")
    author = co.ForeignKeyField(Author)

    class Meta:
        backend = BACKEND
        serializer = "json"


def payload(obj: co.Model) -> bytes:
    return type(obj)._schema.encode(obj)


def key(model: type[co.Model], pk: Any) -> str:
    return model._schema.key((pk,))


def kinds(driven: Driven) -> list[list[str]]:
    return [[type(c).__name__ for c in cmds] for cmds in driven.commands]


# -- update: compare-and-swap retries --------------------------------------------------------


def test_update_retries_until_its_cas_lands() -> None:
    stored = payload(Author(id=1, name="old"))
    cas_answers = iter([False, False, True])
    tokens = iter(range(100))

    def answer(step: Any) -> Any:
        [(_, batch)] = step
        [command] = batch.commands
        if isinstance(command, Gets):
            return [(stored, next(tokens))]
        assert isinstance(command, Cas)
        return [next(cas_answers)]

    driven = drive(Author.update(id=1, name="new")._steps(), answer)
    assert kinds(driven) == [["Gets"], ["Cas"]] * 3
    k = key(Author, 1)
    # every round trip names the row; each Cas carries the token of the read before it
    assert [c.key for cmds in driven.commands for c in cmds] == [k] * 6
    assert [cmds[0].token for cmds in driven.commands[1::2]] == [0, 1, 2]
    assert all(cmds[0].ttl is KEEP_TTL for cmds in driven.commands[1::2])
    # the row is locked for the whole update, and the executor picks the pauses
    assert driven.steps[0] == Lock(BACKEND, (k,))
    assert driven.steps[-1] == Unlock(BACKEND, (k,))
    assert [s for s in driven.steps if isinstance(s, Backoff)] == [Backoff(1), Backoff(2)]
    assert driven.value.name == "new" and driven.value.id == 1


def test_update_gives_up_after_max_attempts() -> None:
    stored = payload(Author(id=1, name="old"))
    rounds: list[str] = []

    def answer(step: Any) -> Any:
        [(_, batch)] = step
        [command] = batch.commands
        rounds.append(type(command).__name__)
        return [(stored, 7)] if isinstance(command, Gets) else [False]

    with pytest.raises(co.ConflictError, match=f"gave up after {MAX_UPDATE_ATTEMPTS} attempts"):
        drive(Author.update(id=1, name="new")._steps(), answer)
    assert rounds == ["Gets", "Cas"] * MAX_UPDATE_ATTEMPTS


def test_update_of_a_missing_row_reads_once_and_writes_nothing() -> None:
    driven = drive(Author.update_many({"id": 1, "name": "x"})._steps(), [[None]])
    assert kinds(driven) == [["Gets"]]
    assert driven.value == [None]


def test_compile_skips_locks_and_shows_the_first_round_trip() -> None:
    [(backend, batch)] = Author.update(id=1, name="x").compile()
    assert backend is BACKEND and batch == Batch((Gets(key(Author, 1)),))


# -- get_or_create: the add-if-absent race ----------------------------------------------------


def test_get_or_create_that_loses_the_race_reads_the_winner() -> None:
    winner = Author(id=5, name="winner")
    driven = drive(
        Author.get_or_create(id=5, defaults={"name": "mine"})._steps(),
        [[None], [False], [payload(winner)]],
    )
    assert driven.commands == [
        [Get(key(Author, 5))],
        [Add(key(Author, 5), payload(Author(id=5, name="mine")), None)],
        [Get(key(Author, 5))],
    ]
    obj, created = driven.value
    assert created is False and obj.name == "winner"


def test_get_or_create_whose_winner_vanished_tries_again() -> None:
    driven = drive(
        Author.get_or_create(id=5, defaults={"name": "mine"})._steps(),
        [[None], [False], [None], [True]],
    )
    assert kinds(driven) == [["Get"], ["Add"], ["Get"], ["Add"]]
    obj, created = driven.value
    assert created is True and obj.name == "mine"


def test_get_or_create_of_an_existing_row_is_one_read() -> None:
    driven = drive(Author.get_or_create(id=5)._steps(), [[payload(Author(id=5, name="x"))]])
    assert kinds(driven) == [["Get"]]
    assert driven.value[1] is False


# -- select_related: one batch per relation level --------------------------------------------


def test_two_level_select_related_reads_each_distinct_key_once_per_level() -> None:
    articles = [Article(id=i, title=f"t{i}", author=10 + i % 2) for i in (1, 2, 3)]
    authors = {10: Author(id=10, team=100), 11: Author(id=11, team=100)}
    query = Article.query_many(1, 2, 3, 4).select_related("author__team")
    driven = drive(
        query._steps(),
        [
            [payload(a) for a in articles] + [None],
            [payload(authors[11]), payload(authors[10])],
            [payload(Team(id=100, name="core"))],
        ],
    )
    assert driven.commands == [
        [Get(key(Article, i)) for i in (1, 2, 3, 4)],
        [Get(key(Author, 11)), Get(key(Author, 10))],  # in order of first mention
        [Get(key(Team, 100))],
    ]
    rows = driven.value
    assert rows[3] is None
    assert [r.author.id for r in rows[:3]] == [11, 10, 11]
    assert {r.author.team.name for r in rows[:3]} == {"core"}
    assert rows[0].author.team is rows[1].author.team  # one instance per distinct row


def test_select_related_stops_at_missing_and_null_links() -> None:
    query = Article.query_many(1).select_related("author__team")
    driven = drive(
        query._steps(),
        [[payload(Article(id=1, author=10))], [payload(Author(id=10, team=None))]],
    )
    assert kinds(driven) == [["Get"], ["Get"]]  # no team to read: no third round trip
    assert driven.value[0].author.team is None


# -- filter: a scan, page by page ------------------------------------------------------------


def test_filter_reads_each_listed_page_then_stops_at_the_empty_one() -> None:
    rows = {i: Author(id=i, name="a" if i % 2 else "b") for i in range(1, 6)}
    canned: list[Any] = [
        [key(Author, 1), key(Author, 2), key(Author, 2) + ":not-a-row"],
        [payload(rows[1]), payload(rows[2])],
        [key(Author, 3)],
        [payload(rows[3])],
        [],
    ]
    driven = drive(Author.filter(name="a")._steps(), canned)
    scans = [s for s in driven.steps if type(s).__name__ == "Scan"]
    assert len(scans) == 3  # two pages of keys, then the empty page that ends the listing
    assert driven.commands == [
        [Get(key(Author, 1)), Get(key(Author, 2))],  # a key no row has is never read
        [Get(key(Author, 3))],
    ]
    assert sorted(a.id for a in driven.value) == [1, 3]


def test_filter_of_a_page_with_only_deleted_rows_goes_on_listing() -> None:
    pages: list[Any] = [[key(Author, 1)], [None], [key(Author, 2)], [payload(Author(id=2))], []]
    driven = drive(Author.filter(name="").first()._steps(), pages)
    assert kinds(driven) == [["Get"], ["Get"]]
    assert driven.value is not None and driven.value.id == 2


# -- migrate: read with tokens, write back where unchanged ------------------------------------


def test_migrate_plan_rewrites_only_rows_not_current() -> None:
    class Old(co.Model):
        id = co.IntegerField(primary_key=True)

        class Meta:
            backend = BACKEND
            serializer = "json"
            name = "author"

    keys = [key(Author, i) for i in (1, 2, 3, 4)]
    reads = [
        (payload(Author(id=1, name="current")), 1),
        (payload(Old(id=2)), 2),  # another schema: rewritten
        None,  # vanished
        co.BackendError("node down"),
    ]
    driven = drive(migrate_plan(BACKEND, Author, keys), [reads, [False]])
    assert kinds(driven) == [["Gets"] * 4, ["Cas"]]
    [cas] = driven.commands[1]
    assert cas.key == keys[1] and cas.token == 2 and cas.ttl is KEEP_TTL
    assert Author._schema.decode(keys[1], cas.value).name == ""  # defaulted
    report = driven.value
    assert (report.scanned, report.migrated, report.current, report.changed) == (4, 0, 1, 1)
    assert report.vanished == 1 and report.failed == [(keys[3], "read failed: node down")]


def test_migrate_dry_run_writes_nothing() -> None:
    class Old(co.Model):
        id = co.IntegerField(primary_key=True)

        class Meta:
            backend = BACKEND
            serializer = "json"
            name = "author"

    driven = drive(
        migrate_plan(BACKEND, Author, [key(Author, 1)], dry_run=True),
        [[(payload(Old(id=1)), 1)]],
    )
    assert kinds(driven) == [["Gets"]] and driven.value.migrated == 1


# -- the driver itself -----------------------------------------------------------------------


def test_drive_records_signals_and_refuses_a_missing_canned_result() -> None:
    received: list[Any] = []

    def receiver(sender: Any, instance: Any, **kwargs: Any) -> None:
        received.append(instance)

    co.post_save.connect(receiver, sender=Author)
    try:
        driven = drive(Author.create(id=9, name="x")._steps(), [[True]])
    finally:
        co.post_save.disconnect(receiver, sender=Author)
    assert kinds(driven) == [["Set"]]
    assert [type(s) for s in driven.steps] == [list, Emit]
    assert received == []  # recorded, not sent
    with pytest.raises(AssertionError, match="no canned result"):
        drive(Author.query_many(1)._steps(), [])


# -- capabilities: refused in the plan, before any I/O ----------------------------------------


class _NoTransactions(co.SimpleBackend):
    capabilities = co.SimpleBackend.capabilities._replace(atomic_batch=False)


class _OneSlot(co.SimpleBackend):
    capabilities = co.SimpleBackend.capabilities._replace(atomic_one_slot=True)


class _NoCas(co.SimpleBackend):
    capabilities = co.SimpleBackend.capabilities._replace(native_cas=False)


def test_atomic_write_on_a_backend_without_transactions_fails_in_compile() -> None:
    class Item(co.Model):
        id = co.StringField(primary_key=True)

        class Meta:
            backend = _NoTransactions()
            serializer = "json"

    query = Item.insert_many({"id": "a"}, {"id": "b"}, atomic=True)
    with pytest.raises(co.AtomicityError, match="cannot write 2 rows all-or-nothing"):
        query.compile()
    # one row is one command: atomic anyway
    [(_, batch)] = Item.insert_many({"id": "a"}, atomic=True).compile()
    assert batch.atomic and len(batch.commands) == 1


def test_atomic_write_across_cluster_slots_fails_in_compile() -> None:
    class Item(co.Model):
        id = co.StringField(primary_key=True)

        class Meta:
            backend = _OneSlot()
            serializer = "json"

    with pytest.raises(co.AtomicityError, match="span 2 slots"):
        Item.insert_many({"id": "a"}, {"id": "b"}, atomic=True).compile()
    # a common hash tag puts them in one slot
    [(_, batch)] = Item.insert_many({"id": "{u1}a"}, {"id": "{u1}b"}, atomic=True).compile()
    assert batch.atomic and len(batch.commands) == 2


def test_update_on_a_backend_without_cas_fails_in_compile() -> None:
    class Item(co.Model):
        id = co.StringField(primary_key=True)
        n = co.IntegerField(default=0)

        class Meta:
            backend = _NoCas()
            serializer = "json"

    with pytest.raises(co.ConfigurationError, match="needs compare-and-swap"):
        Item.update(id="a", n=1).compile()
    events: list[co.BatchEvent] = []
    co.add_batch_hook(events.append)
    try:
        with pytest.raises(co.ConfigurationError, match="needs compare-and-swap"):
            asyncio.run(Item.update(id="a", n=1).execute())  # refused before any I/O
    finally:
        co.remove_batch_hook(events.append)
    assert events == []


def test_hash_slot_matches_redis() -> None:
    from acacheorm._plans import hash_slot

    # values from CLUSTER KEYSLOT
    assert hash_slot("foo") == 12182
    assert hash_slot("{user1000}.following") == hash_slot("{user1000}.followers") == 3443
    assert hash_slot("foo{}{bar}") == hash_slot("foo{}{bar}")
    assert hash_slot("{}x") != hash_slot("x")


# -- emulations: what a backend lacks natively, as plan steps ---------------------------------


def test_negative_incr_emulation_is_gets_then_cas_retried() -> None:
    from acacheorm._commands import Incr
    from acacheorm._plans import emulation_plan

    driven = drive(
        emulation_plan(BACKEND, Incr("n", -3, 60.0)),
        [[(b"5", "t1")], [False], [(b"7", "t2")], [True]],
    )
    assert driven.commands == [
        [Gets("n")],
        [Cas("n", b"2", "t1", KEEP_TTL)],
        [Gets("n")],
        [Cas("n", b"4", "t2", KEEP_TTL)],  # the remaining TTL is kept
    ]
    assert Backoff(1) in driven.steps and driven.value == 4
    # a missing key is created with the TTL, as the native command would
    created = drive(emulation_plan(BACKEND, Incr("m", -1, 60.0)), [[None], [True]])
    assert created.commands[1] == [Add("m", b"-1", 60.0)] and created.value == -1
    # a value that is not an integer fails the slot, not the batch
    bad = drive(emulation_plan(BACKEND, Incr("s", -1)), [[(b"abc", "t")]])
    assert isinstance(bad.value, co.BackendError) and "not an integer" in str(bad.value)


def test_replace_keeping_ttl_emulation() -> None:
    from acacheorm._commands import Replace
    from acacheorm._plans import emulation_plan

    absent = drive(emulation_plan(BACKEND, Replace("r", b"v", KEEP_TTL)), [[None]])
    assert absent.commands == [[Gets("r")]] and absent.value is False
    present = drive(emulation_plan(BACKEND, Replace("r", b"v", KEEP_TTL)), [[(b"old", 9)], [True]])
    assert present.commands[1] == [Cas("r", b"v", 9, KEEP_TTL)] and present.value is True


async def test_memcached_decr_round_trips_are_seen_by_hooks(
    memcached_servers: list[tuple[str, int]],
) -> None:
    from tests.conftest import unique_namespace

    backend = co.MemcachedBackend(memcached_servers, namespace=unique_namespace("plans"))
    events: list[co.BatchEvent] = []
    co.add_batch_hook(events.append)
    try:
        assert await backend.decr("c", 2) == -2  # missing: Gets, then Add
        assert await backend.incr("c", 5) == 3  # ma cannot take "-2": NotNative, Gets, Cas
        assert await backend.incr("c", 1) == 4  # native
    finally:
        co.remove_batch_hook(events.append)
        await backend.clear()
        await backend.close()
    kinds_seen = [[type(c).__name__ for c in e.batch.commands] for e in events]
    assert kinds_seen == [["Gets"], ["Add"], ["Incr"], ["Gets"], ["Cas"], ["Incr"]]


# -- the executor's locks ---------------------------------------------------------------------


async def test_locks_are_reentrant_within_a_plan_and_released_when_it_fails() -> None:
    from acacheorm import _executor

    order: list[str] = []

    def failing() -> Any:
        yield Lock(BACKEND, ("k",))
        yield Lock(BACKEND, ("k", "j"))  # a nested plan of the same row: no self-deadlock
        yield Unlock(BACKEND, ("k", "j"))
        order.append("failing")
        raise ValueError("boom")

    def later() -> Any:
        yield Lock(BACKEND, ("k",))
        order.append("later")
        yield Unlock(BACKEND, ("k",))
        return "done"

    with pytest.raises(ValueError, match="boom"):
        await _executor.run(failing())
    # the failed plan still held "k": the executor released it when the plan ended (a
    # lock left held would make this wait forever)
    async with asyncio.timeout(10):
        assert await _executor.run(later()) == "done"
    assert order == ["failing", "later"]
    assert not any(key[2] in ("k", "j") for key in _executor._key_locks)


async def test_a_held_key_goes_to_the_waiting_plans_in_order_skipping_cancelled_ones() -> None:
    from acacheorm import _executor

    first, second, third, fourth = (_executor.Driver() for _ in range(4))
    await first.lock(Lock(BACKEND, ("q",)))
    waiting = [asyncio.create_task(d.lock(Lock(BACKEND, ("q",)))) for d in (second, third, fourth)]
    await asyncio.sleep(0)  # each of them has asked for the key
    assert not any(t.done() for t in waiting)
    waiting[1].cancel()  # the third gives up while it waits
    first.unlock(Unlock(BACKEND, ("q",)))  # the key goes to the second...
    waiting[0].cancel()  # ...which is cancelled before it runs: it passes the key on
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert isinstance(results[1], asyncio.CancelledError)
    assert results[2] is None and fourth.locks  # the fourth holds it
    assert not second.locks and not third.locks
    again = asyncio.create_task(first.lock(Lock(BACKEND, ("q",))))
    await asyncio.sleep(0)
    assert not again.done()  # held by the fourth: the first waits
    await fourth.close()
    async with asyncio.timeout(10):
        await again
    first.unlock(Unlock(BACKEND, ("q",)))
    assert not any(key[2] == "q" for key in _executor._key_locks)


async def test_a_key_lock_is_taken_in_turn_and_passed_on_by_cancelled_waiters() -> None:
    from acacheorm import _executor

    ident = _executor.lock_ident(BACKEND, "turns")
    order: list[str] = []

    async def holder(name: str) -> None:
        await _executor.acquire_key(ident)
        try:
            order.append(name)
            await asyncio.sleep(0)
        finally:
            _executor.release_key(ident)

    await _executor.acquire_key(ident)  # held here: the others queue in arrival order
    tasks = {name: asyncio.create_task(holder(name)) for name in ("a", "b", "c", "d")}
    for _ in range(3):
        await asyncio.sleep(0)  # all four waiting now
    _executor.release_key(ident)  # handed to "a", which has not run yet
    tasks["a"].cancel()  # cancelled holding it: passes it on to "b"
    tasks["c"].cancel()  # cancelled while waiting: gives up its place
    async with asyncio.timeout(10):
        await asyncio.gather(tasks["b"], tasks["d"])
    assert tasks["a"].cancelled() and tasks["c"].cancelled()
    assert order == ["b", "d"]
    assert ident not in _executor._key_locks  # freed with its last holder


class _Interfering(co.SimpleBackend):
    """An in-process store on which another writer changes a row right after each read
    of its version (``races`` times), so that the compare-and-swap after it loses."""

    races = 0

    async def _execute(self, batch: Batch) -> list[Any]:
        results = await super()._execute(batch)
        for command, result in zip(batch.commands, results, strict=True):
            if isinstance(command, Gets) and result is not None and self.races:
                self.races -= 1
                await super()._execute(Batch((Set(command.key, result[0] + b" ", 60),)))
        return results


class Counter(co.Model):
    id = co.IntegerField(primary_key=True)
    hits = co.IntegerField(default=0)

    class Meta:
        backend = _Interfering(namespace="plans-race")
        serializer = "json"  # a trailing space keeps the same row: only the version moves


async def test_update_of_one_row_retries_lost_races_then_gives_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from acacheorm import _executor, _query

    store: Any = Counter._schema.backend
    await Counter.create(id=1, hits=1)
    events: list[co.BatchEvent] = []
    co.add_batch_hook(events.append)
    try:
        store.races = 2
        assert (await Counter.update(id=1, hits=Counter.hits + 1)).hits == 2
        rounds = [type(e.batch.commands[0]).__name__ for e in events]
        assert rounds == ["Gets", "Cas"] * 3  # two lost races, then the write lands
        assert (await Counter.get(id=1)).hits == 2  # computed from the row read last
        assert 0 < (await Counter.remaining_ttl(id=1) or 0) <= 60  # the racer's TTL, kept
        events.clear()
        monkeypatch.setattr(_query, "MAX_UPDATE_ATTEMPTS", 3)
        store.races = 10
        with pytest.raises(co.ConflictError, match="gave up after 3 attempts"):
            await Counter.update(id=1, hits=Counter.hits + 1)
        assert [type(e.batch.commands[0]).__name__ for e in events] == ["Gets", "Cas"] * 3
    finally:
        co.remove_batch_hook(events.append)
    assert not any(key[1] == id(store) for key in _executor._key_locks)  # lock released
    store.races = 0
    assert (await Counter.get(id=1)).hits == 2
    assert await Counter.update_many({"id": 1, "hits": 5}) == [Counter(id=1, hits=5)]
    assert await Counter.update(id=9, hits=1) is None
    with pytest.raises(Counter.DoesNotExist):
        await Counter.set_by_id(9, {"hits": 1})


class Indexed(co.Model):
    id = co.IntegerField(primary_key=True)
    group = co.IntegerField(index=True)

    class Meta:
        backend = BACKEND
        serializer = "json"


def test_an_index_source_pages_its_keys_with_the_rows_read_along() -> None:
    """The keys an index read lists, in bucket order, a key listed twice in its first place
    (with the first row read for it), in pages of 500, each page with the rows the backend
    read along (`NOT_READ` where it read none, as for items without a row)."""
    from acacheorm._commands import NOT_READ
    from acacheorm._index import spec_of
    from acacheorm._indexplan import PAGE, IndexSource, read_for
    from acacheorm._lookups import parse_lookup

    spec = spec_of(Indexed._schema)
    assert spec is not None
    got = read_for(spec, parse_lookup(Indexed, "group__in", [1, 2]))
    assert got is not None

    def pages(result: list[Any]) -> list[tuple[list[str], list[Any]]]:
        source = IndexSource(Indexed._schema, spec, got[0], got[2])

        def plan() -> Any:
            out = []
            while keys := (yield from source.next_keys(None)):
                out.append((keys, source.prefetched(keys)))
            return out

        return drive(plan(), [[result]]).value  # type: ignore[no-any-return]

    listed = [("a", None, b"1"), ("b", None, NOT_READ), ("a", None, b"2"), ("c", None, None)]
    assert pages(listed) == [(["a", "b", "c"], [b"1", NOT_READ, None])]
    late = [("a", None, NOT_READ), ("b", None, b"2"), ("a", None, b"1")]
    assert pages(late) == [(["a", "b"], [b"1", b"2"])]
    assert pages([("a", None), ("b", None)]) == [(["a", "b"], [NOT_READ, NOT_READ])]
    assert pages([]) == []
    many = [(f"k{i}", None, b"%d" % i if i < 600 else NOT_READ) for i in range(1200)]
    got_pages = pages(many)
    assert [len(keys) for keys, _ in got_pages] == [PAGE, PAGE, 200]
    for keys, payloads in got_pages:
        for key, payload in zip(keys, payloads, strict=True):
            i = int(key[1:])
            assert payload == (b"%d" % i if i < 600 else NOT_READ)
