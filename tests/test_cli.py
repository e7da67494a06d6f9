"""``python -m acacheorm``: demo, inspect, stats and migrate, on real stores.

The command line runs in a worker thread (it calls ``asyncio.run`` itself), against URLs of
the stores the suite starts; the test prepares and checks the data through its own backend
on the same URL. ``ACACHEORM_TEST_BACKENDS`` limits the stores, as for the other suites.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import acacheorm as co
from acacheorm.__main__ import main
from acacheorm._commands import KEEP_TTL, Batch, Cas, Gets, Set
from acacheorm.backends.base import Backend
from acacheorm.cli import _ops, cli
from tests.cli_models import Computed, Keyed, Person, old_person_model
from tests.conftest import BACKENDS, unique_namespace

STORES = [s for s in ("filesystem", "memcached", "redis", "redis-cluster") if s in BACKENDS]


async def run(*args: str) -> Result:
    """Invoke the CLI like a shell would, in a thread (it runs its own event loop), with a
    wide terminal so that rich does not wrap the lines the tests look for."""
    runner = CliRunner(env={"COLUMNS": "250"})
    return await asyncio.to_thread(runner.invoke, cli, list(args), catch_exceptions=False)


def url_for(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    ns = unique_namespace("cli")
    if kind == "filesystem":
        return f"file://{tmp_path}/store?namespace={ns}"
    if kind == "memcached":
        nodes = request.getfixturevalue("memcached_servers")
        return "memcached://" + ",".join(f"{h}:{p}" for h, p in nodes) + f"?namespace={ns}"
    if kind == "redis":
        return f"{request.getfixturevalue('redis_url')}?namespace={ns}"
    if kind == "redis-cluster":
        url = str(request.getfixturevalue("redis_cluster_url"))
        return url.replace("redis://", "redis+cluster://", 1) + f"?namespace={ns}"
    raise ValueError(kind)


@pytest.fixture(params=STORES)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, Backend]]:
    """A URL, and a backend of the test's own on that URL (cleared afterwards)."""
    url = url_for(str(request.param), request, tmp_path)
    backend = co.backend_from_url(url)
    try:
        yield url, backend
    finally:
        try:
            await backend.clear()
        finally:
            await backend.close()


async def needs_scan(backend: Backend) -> None:
    try:
        async for _ in backend.scan("no-such-prefix:"):
            break
    except NotImplementedError as exc:
        pytest.skip(f"{type(backend).__name__} does not implement scan yet: {exc}")


async def write_old_people(backend: Backend, n: int = 25, **kw: Any) -> Any:
    old = old_person_model(backend, **kw)
    await old.insert_many(*({"id": i, "name": f"p{i}", "height": 1.5 + i / 100} for i in range(n)))
    return old


# -- demo and usage --------------------------------------------------------------------------


async def test_demo_runs_through_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert await asyncio.to_thread(main, ["demo"]) == 0
    out = capsys.readouterr().out
    assert "demo on <SimpleBackend namespace='acacheorm-demo'> with msgpack" in out
    assert "select_related" in out
    assert out.rstrip().endswith("done.")


async def test_demo_on_a_directory_with_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["demo", "--url", f"file://{tmp_path}/demo", "--serializer", "json"]
    assert await asyncio.to_thread(main, args) == 0
    assert "FileSystemBackend" in capsys.readouterr().out


@pytest.mark.skipif("redis" not in BACKENDS, reason="redis not in ACACHEORM_TEST_BACKENDS")
async def test_demo_on_redis(redis_url: str) -> None:
    result = await run("demo", "--url", redis_url)
    assert result.exit_code == 0, result.output
    assert "RedisBackend" in result.output
    assert "done." in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--url", "redis://127.0.0.1:1/0"],  # nothing listens on port 1
        ["demo", "--serializer", "pickle"],  # no ACACHEORM_PICKLE_KEY
        ["demo", "--url", "gopher://nowhere"],
    ],
)
async def test_demo_failures_are_one_line(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACACHEORM_PICKLE_KEY", raising=False)
    result = await run(*args)
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    assert "create two users" not in result.output  # refused before the walk-through
    if "pickle" in args:
        assert "ACACHEORM_PICKLE_KEY" in errors[0]
    elif "redis://127.0.0.1:1/0" in args:
        assert "BackendUnavailable" in errors[0]


async def test_demo_serializer_is_a_choice() -> None:
    result = await run("demo", "--serializer", "xml")
    assert result.exit_code == 2
    assert "'xml' is not one of 'json', 'msgpack', 'pickle'" in result.output
    help_text = (await run("demo", "--help")).output
    assert "[json|msgpack|pickle]" in help_text
    assert "--keep" in help_text


async def test_demo_keep_leaves_rows_to_inspect(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/demo"
    result = await run("demo", "--url", url, "--keep")
    assert result.exit_code == 0, result.output
    assert f"python -m acacheorm inspect '{url}?namespace=acacheorm-demo' user:1" in result.output
    found = await run("inspect", f"{url}?namespace=acacheorm-demo", "user:1")
    assert found.exit_code == 0, found.output
    assert re.search(r"name\s+│\s+'Sam'", found.output), found.output
    assert re.search(r"time to live\s+│\s+3,\d{3} s", found.output), found.output
    # without --keep the demo leaves nothing behind
    other = f"file://{tmp_path}/demo2"
    assert (await run("demo", "--url", other)).exit_code == 0
    gone = await run("inspect", f"{other}?namespace=acacheorm-demo", "user:1")
    assert gone.exit_code == 1 and "no value is stored" in gone.output


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--bogus"],
        ["nothing-like-this"],
        ["inspect", "memory://"],
        ["stats", "gopher://x"],
        ["migrate", "memory://", "no_colon_here"],
        ["migrate", "memory://", "tests.cli_models:Nope"],
        ["migrate", "memory://", "no_such_module_xyz:User"],
        ["migrate", "memory://", "tests.cli_models:old_person_model"],
        ["migrate", "memory://", "tests.cli_models:Person", "--batch-size", "0"],
    ],
)
async def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert await asyncio.to_thread(main, args) == 2
    assert "Error" in capsys.readouterr().err


async def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert await asyncio.to_thread(main, ["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "inspect", "stats", "migrate"):
        assert command in out
    assert await asyncio.to_thread(main, ["--version"]) == 0
    assert co.__version__ in capsys.readouterr().out


# -- inspect ---------------------------------------------------------------------------------


async def test_inspect_shows_envelope_and_fields(store: tuple[str, Backend]) -> None:
    url, backend = store
    await write_old_people(backend, 3)
    result = await run("inspect", url, "person:2")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "json (tag 0x0001)" in out
    assert "magic 0xAC, version 1" in out
    fingerprint = old_person_model(backend)._schema.fingerprint
    assert f"{fingerprint:#06x}" in out
    assert re.search(r"name\s+│\s+'p2'\s+│\s+str", out), out
    assert re.search(r"height\s+│\s+1\.52\s+│\s+float", out), out


async def test_inspect_shows_the_remaining_ttl(store: tuple[str, Backend]) -> None:
    url, backend = store
    old = old_person_model(backend)
    await old.create(id=1, name="a", height=1.0, ttl=300)
    await old.create(id=2, name="b", height=1.0, ttl=None)
    result = await run("inspect", url, "person:1")
    assert result.exit_code == 0, result.output
    match = re.search(r"time to live\s+│\s+([\d.]+) s \((\d+)m", result.output)
    assert match, result.output
    assert 240 < float(match.group(1)) <= 300
    result = await run("inspect", url, "person:2")
    assert re.search(r"time to live\s+│\s+never expires", result.output), result.output


async def test_inspect_through_the_current_model(store: tuple[str, Backend]) -> None:
    url, backend = store
    await write_old_people(backend, 3)
    result = await run("inspect", url, "person:1", "--model", "tests.cli_models:Person")
    assert result.exit_code == 0, result.output
    assert "written with another serializer and schema: migrate rewrites it" in result.output
    assert re.search(r"nickname\s+│\s+''", result.output), result.output  # default filled in


async def test_inspect_missing_key(store: tuple[str, Backend]) -> None:
    url, _ = store
    result = await run("inspect", url, "person:404")
    assert result.exit_code == 1
    assert "no value is stored under 'person:404'" in result.output


async def test_inspect_value_that_is_not_an_envelope(store: tuple[str, Backend]) -> None:
    url, backend = store
    await backend.set("raw", b"hello world")
    result = await run("inspect", url, "raw")
    assert result.exit_code == 1
    assert "is not an acacheorm envelope" in result.output
    assert "68 65 6c 6c 6f" in result.output  # the first bytes, to recognise it


async def test_inspect_unregistered_serializer(store: tuple[str, Backend]) -> None:
    url, backend = store
    await backend.set("odd", bytes([0xAC, 1, 0x99, 0x99, 0, 0]) + b"body")
    result = await run("inspect", url, "odd")
    assert result.exit_code == 1
    assert "serializer tag 0x9999, which is not registered" in result.output
    assert "--import" in result.output


# -- stats -----------------------------------------------------------------------------------


async def test_stats_counts_keys_and_bytes_per_prefix(store: tuple[str, Backend]) -> None:
    url, backend = store
    await needs_scan(backend)
    await write_old_people(backend, 12)
    await backend.set_many({"session:a": b"12345", "session:b": b"123", "loose": b"x"})
    result = await run("stats", url, "--batch-size", "5")
    assert result.exit_code == 0, result.output
    people = [await backend.get(f"person:{i}") for i in range(12)]
    person_bytes = sum(len(p) for p in people if p is not None)
    assert re.search(rf"│ person\s+│\s+12 │\s+{person_bytes} │.*json 12", result.output), (
        result.output
    )
    assert re.search(r"│ session\s+│\s+2 │\s+8 │\s+4 │ not an envelope 2", result.output)
    assert re.search(r"│ \(no ':'\)\s+│\s+1 │\s+1 │", result.output)
    assert re.search(rf"│ total\s+│\s+15 │\s+{person_bytes + 9} │", result.output)


async def test_stats_prefix_and_depth(store: tuple[str, Backend]) -> None:
    url, backend = store
    await needs_scan(backend)
    await backend.set_many({"a:x:1": b"1", "a:x:2": b"2", "a:y:1": b"3", "b:1": b"4"})
    result = await run("stats", url, "--depth", "1")
    assert result.exit_code == 0, result.output
    assert re.search(r"│ a\s+│\s+3 │", result.output), result.output
    assert re.search(r"│ b\s+│\s+1 │", result.output), result.output
    result = await run("stats", url, "--prefix", "a:x:")
    assert re.search(r"│ a:x\s+│\s+2 │", result.output), result.output
    assert "a:y" not in result.output and "│ b " not in result.output


async def test_stats_of_an_empty_namespace(store: tuple[str, Backend]) -> None:
    url, backend = store
    await needs_scan(backend)
    result = await run("stats", url)
    assert result.exit_code == 0
    assert "no keys under ''" in result.output


def test_group_of() -> None:
    assert _ops.group_of("app:user:1") == "app:user"
    assert _ops.group_of("user:1") == "user"
    assert _ops.group_of("plain") == ""
    assert _ops.group_of("a:b:c:d", depth=1) == "a"
    assert _ops.group_of("a:b:c:d", depth=2) == "a:b"
    assert _ops.group_of("a:b", depth=5) == "a"
    assert _ops.group_of("t:a\\:b") == "t"  # an escaped ':' inside a primary key
    assert _ops.group_of("shop:c:x\\:y:2", depth=2) == "shop:c"


# -- migrate ---------------------------------------------------------------------------------


async def test_migrate_rewrites_json_rows_as_msgpack(store: tuple[str, Backend]) -> None:
    url, backend = store
    await needs_scan(backend)
    await write_old_people(backend, 25)
    await backend.set("pet:1", b"not a person")  # another model's key: never touched
    result = await run("migrate", url, "tests.cli_models:Person", "--batch-size", "10")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "migrating" in out and "25/25" in out  # the progress bar, finished
    assert re.search(r"rows found\s+│\s+25", out), out
    assert re.search(r"rewritten\s+│\s+25", out), out
    assert re.search(r"failed\s+│\s+0", out), out
    schema = Person._schema
    for i in range(25):
        payload = await backend.get(f"person:{i}")
        assert payload is not None
        assert payload.startswith(schema.row_header)  # msgpack tag, current layout
        person = schema.decode(f"person:{i}", payload)
        assert person.to_dict() == {
            "id": i,
            "name": f"p{i}",
            "height": 1.5 + i / 100,
            "nickname": "",
        }
    assert await backend.get("pet:1") == b"not a person"

    again = await run("migrate", url, "tests.cli_models:Person")
    assert again.exit_code == 0
    assert re.search(r"already current\s+│\s+25", again.output), again.output
    assert re.search(r"rewritten\s+│\s+0", again.output), again.output


async def test_stats_and_migrate_show_the_listing_too(store: tuple[str, Backend]) -> None:
    url, backend = store
    await needs_scan(backend)
    await write_old_people(backend, 12)
    result = await run("stats", url, "--batch-size", "5")
    assert result.exit_code == 0, result.output
    assert re.search(r"listing keys.*12/12", result.output), result.output
    assert re.search(r"reading.*12/12", result.output), result.output
    assert "eta" in result.output
    result = await run("migrate", url, "tests.cli_models:Person", "--batch-size", "5")
    assert result.exit_code == 0, result.output
    assert re.search(r"listing keys.*12/12", result.output), result.output
    assert re.search(r"migrating.*12/12", result.output), result.output


async def test_migrate_streams_keys_a_batch_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library pulls keys from an async iterator only as batches need them."""
    backend = co.SimpleBackend()
    old = old_person_model(backend)
    await old.insert_many(*({"id": i, "name": "x", "height": 1.0} for i in range(25)))
    pulled: list[int] = []
    seen_at_read: list[int] = []

    async def keys() -> AsyncIterator[str]:
        async for key in backend.scan("person:"):
            pulled.append(1)
            yield key

    real_execute = co.SimpleBackend.execute

    async def counting_execute(self: Backend, batch: Batch) -> list[Any]:
        if any(isinstance(c, Gets) for c in batch.commands):
            seen_at_read.append(len(pulled))
        return await real_execute(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(co.SimpleBackend, "execute", counting_execute)
    report = await _ops.migrate(backend, Person, keys(), batch_size=10)
    assert report.scanned == 25 and report.migrated == 25
    assert seen_at_read == [10, 20, 25]  # never more than a batch ahead


async def test_migrate_dry_run_changes_nothing(store: tuple[str, Backend]) -> None:
    url, backend = store
    await needs_scan(backend)
    await write_old_people(backend, 7)
    before = await backend.get_many(*(f"person:{i}" for i in range(7)))
    result = await run("migrate", url, "tests.cli_models:Person", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run: nothing is written" in result.output
    assert "checking" in result.output and "7/7" in result.output
    assert re.search(r"would be rewritten\s+│\s+7", result.output), result.output
    assert await backend.get_many(*(f"person:{i}" for i in range(7))) == before


async def test_migrate_skips_a_row_changed_meanwhile(
    store: tuple[str, Backend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the migration's read of a batch and its write, another client rewrites one
    row: that row keeps the other client's value, and is reported as skipped."""
    url, backend = store
    await needs_scan(backend)
    old = await write_old_people(backend, 5)
    theirs = old._schema.encode(old(id=3, name="changed by someone else", height=2.0))
    real_execute = Backend.execute
    raced: list[str] = []

    async def racing_execute(self: Backend, batch: Batch) -> list[Any]:
        results = await real_execute(self, batch)
        if not raced and any(isinstance(c, Gets) for c in batch.commands):
            raced.append("person:3")
            await real_execute(self, Batch((Set("person:3", theirs),)))
        return results

    monkeypatch.setattr(Backend, "execute", racing_execute)
    result = await run("migrate", url, "tests.cli_models:Person")
    monkeypatch.undo()
    assert raced, "the concurrent write did not happen"
    assert result.exit_code == 0, result.output
    assert re.search(r"rewritten\s+│\s+4", result.output), result.output
    assert re.search(r"changed meanwhile \(skipped\)\s+│\s+1", result.output), result.output
    assert "run migrate again" in result.output
    assert await backend.get("person:3") == theirs  # not overwritten
    again = await run("migrate", url, "tests.cli_models:Person")
    assert re.search(r"rewritten\s+│\s+1", again.output), again.output
    row = Person._schema.decode("person:3", await backend.get("person:3") or b"")
    assert row.to_dict()["name"] == "changed by someone else"


async def test_migrate_reports_unreadable_rows(store: tuple[str, Backend]) -> None:
    url, backend = store
    await needs_scan(backend)
    await write_old_people(backend, 2)
    await backend.set("person:99", b"garbage, not an envelope")
    result = await run("migrate", url, "tests.cli_models:Person")
    assert result.exit_code == 1
    assert re.search(r"rewritten\s+│\s+2", result.output), result.output
    assert re.search(r"failed\s+│\s+1", result.output), result.output
    assert "failed 'person:99'" in result.output
    assert await backend.get("person:99") == b"garbage, not an envelope"


def test_migrate_plan_reads_then_swaps_only_what_needs_it() -> None:
    """The migration of one batch, as a plan walked with canned results (no server): one
    read with tokens, then compare-and-swap writes keeping the TTL, for the stale rows only."""
    backend = co.SimpleBackend()
    old = old_person_model(backend)
    schema = Person._schema
    keys = [f"person:{i}" for i in range(1, 7)]
    stale = {
        k: old._schema.encode(old(id=i, name=f"p{i}", height=1.0))
        for i, k in [(1, keys[0]), (2, keys[1]), (6, keys[5])]
    }
    fresh = {k: schema.encode(schema.decode(k, v)) for k, v in stale.items()}
    current = schema.encode(Person(id=3, name="new", height=2.0))

    plan = _ops.migrate_plan(backend, Person, keys)
    [(target, batch)] = next(plan)
    assert target is backend and batch.commands == tuple(Gets(k) for k in keys)
    [(target, batch)] = plan.send(
        [
            [
                (stale[keys[0]], "t1"),
                (stale[keys[1]], "t2"),
                (current, "t3"),
                None,  # deleted since it was listed
                co.BackendError("node down"),
                (stale[keys[5]], "t6"),
            ]
        ]
    )
    assert target is backend
    assert batch.commands == (
        Cas(keys[0], fresh[keys[0]], "t1", KEEP_TTL),
        Cas(keys[1], fresh[keys[1]], "t2", KEEP_TTL),
        Cas(keys[5], fresh[keys[5]], "t6", KEEP_TTL),
    )
    with pytest.raises(StopIteration) as stop:
        plan.send([[True, False, co.BackendError("too slow")]])
    assert stop.value.value == _ops.MigrationReport(
        scanned=6,
        migrated=1,
        current=1,
        changed=1,
        vanished=1,
        failed=[(keys[4], "read failed: node down"), (keys[5], "write failed: too slow")],
        dry_run=False,
    )

    dry = _ops.migrate_plan(backend, Person, keys[:2], dry_run=True)
    next(dry)
    with pytest.raises(StopIteration) as stop:  # no write step at all
        dry.send([[(stale[keys[0]], "t1"), (current, "t3")]])
    assert stop.value.value == _ops.MigrationReport(2, 1, 1, 0, 0, [], True)


async def test_cli_round_trips_reach_batch_hooks(memory: co.SimpleBackend) -> None:
    """inspect, stats and migrate send their batches through the executor: a batch hook
    sees each of their round trips."""
    await write_old_people(memory, 12)
    events: list[co.BatchEvent] = []

    def hook(event: co.BatchEvent) -> None:
        if event.backend is memory:
            events.append(event)

    def batches() -> list[tuple[str, int]]:
        out = []
        for event in events:
            [kind] = {type(c).__name__ for c in event.batch.commands} or {"-"}
            out.append((kind, len(event.batch.commands)))
        events.clear()
        return out

    co.add_batch_hook(hook)
    try:
        assert (
            await run("migrate", "memory://", "tests.cli_models:Person", "--batch-size", "5")
        ).exit_code == 0
        assert batches() == [
            ("Gets", 5),
            ("Cas", 5),
            ("Gets", 5),
            ("Cas", 5),
            ("Gets", 2),
            ("Cas", 2),
        ]
        assert (await run("migrate", "memory://", "tests.cli_models:Person")).exit_code == 0
        assert batches() == [("Gets", 12)]  # every row current: nothing to write
        assert (await run("stats", "memory://", "--batch-size", "5")).exit_code == 0
        assert batches() == [("Get", 5), ("Get", 5), ("Get", 2)]
        result = await run("inspect", "memory://", "person:0")
        assert result.exit_code == 0
        [event] = events
        assert [type(c).__name__ for c in event.batch.commands] == ["Get", "Ttl"]
        assert event.hits == 1
    finally:
        co.remove_batch_hook(hook)


# -- the in-process store, through a shared backend ------------------------------------------


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> co.SimpleBackend:
    """memory:// URLs of the CLI all reach this one in-process store."""
    backend = co.SimpleBackend(namespace="mem")

    def builder(url: str, **options: Any) -> Backend:
        return backend

    monkeypatch.setattr("acacheorm.cli.backend_from_url", builder)
    return backend


async def test_migrate_keeps_each_rows_remaining_ttl(memory: co.SimpleBackend) -> None:
    old = old_person_model(memory)
    await old.insert_many(*({"id": i, "name": "x", "height": 1.0} for i in range(3)), ttl=300)
    await old.create(id=3, name="forever", height=1.0, ttl=None)
    expiry = {k: entry[1] for k, entry in memory._data.items()}
    await asyncio.sleep(0.01)  # a rewrite that set a new TTL of the same length would move expiry
    result = await run("migrate", "memory://", "tests.cli_models:Person")
    assert result.exit_code == 0, result.output
    assert re.search(r"rewritten\s+│\s+4", result.output), result.output
    assert {k: entry[1] for k, entry in memory._data.items()} == expiry
    assert expiry["mem:person:3"] is None


async def test_inspect_and_stats_on_memory(memory: co.SimpleBackend) -> None:
    await write_old_people(memory, 4)
    result = await run("inspect", "memory://", "person:0")
    assert result.exit_code == 0 and "json (tag 0x0001)" in result.output
    result = await run("stats", "memory://")
    assert re.search(r"│ person\s+│\s+4 │", result.output), result.output


def test_model_key_prefix() -> None:
    assert _ops.model_key_prefix(Person) == "person:"
    assert _ops.model_key_prefix(Keyed) == "keyed."
    with pytest.raises(_ops.OperationError, match="--prefix"):
        _ops.model_key_prefix(Computed)


async def test_migrate_needs_a_prefix_for_computed_keys(memory: co.SimpleBackend) -> None:
    result = await run("migrate", "memory://", "tests.cli_models:Computed")
    assert result.exit_code == 2
    assert "--prefix" in result.output
    await memory.set("c1", Computed._schema.encode(Computed(id=1)))
    result = await run("migrate", "memory://", "tests.cli_models:Computed", "--prefix", "c")
    assert result.exit_code == 0, result.output
    assert re.search(r"already current\s+│\s+1", result.output), result.output


async def test_migrate_bad_batch_size_in_the_library() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        await _ops.migrate(co.SimpleBackend(), Person, [], batch_size=0)


async def test_migrate_takes_the_typed_models_of_the_fastapi_example(tmp_path: Path) -> None:
    from examples.fastapi_app.models import User

    url = f"file://{tmp_path}/store?namespace=blog"
    backend = co.backend_from_url(url)
    async with backend, co.backends.override(blog=backend):  # the name the models use
        await User.create(id=1, name="Sam", height=1.8)
        await User.create(id=2, name="Kim", height=1.6)
    result = await run("migrate", url, "examples.fastapi_app.models:User")
    assert result.exit_code == 0, result.output
    assert re.search(r"already current\s+│\s+2", result.output), result.output
