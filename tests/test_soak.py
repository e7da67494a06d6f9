"""A bounded soak: mixed model operations from 200 concurrent tasks against a real Redis and a
real memcached, with one server restart (stop, start on the same port) in the middle.

- Calls that fail with `co.BackendUnavailable` while the server is down or coming back are
  expected and counted; any other error, or a BackendUnavailable long after the restart,
  fails the test.
- Each task owns its rows, so the test knows what every row must hold. A write that failed
  may or may not have landed (both outcomes are accepted until the row is read or written
  again); a row written before the restart may be gone after it (a cache restart loses
  data). Every row written after the server came back must read back equal: the
  "rows lost" count must be 0.
- Memory is flat: after a warm-up, the traced Python memory, RSS, live objects, asyncio tasks
  and open sockets are taken before the soak and compared after it, and closing the backend
  gives back every socket it opened.

``ACACHEORM_SOAK_SECONDS`` sets the length of each soak (default 20 s per server; the issue
asks for 120: ``ACACHEORM_SOAK_SECONDS=120 pytest tests/test_soak.py``).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import random
import shutil
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import acacheorm as co
from acacheorm.backends.base import Backend
from acacheorm.backends.memcached import MemcachedBackend
from acacheorm.backends.redis import RedisBackend
from acacheorm.cli._demo import define_models
from tests import servers
from tests.conftest import BACKENDS

SECONDS = float(os.environ.get("ACACHEORM_SOAK_SECONDS", "20"))
TASKS = 200
ROWS_PER_TASK = 8
TIMEOUT = 1.0  # the backends' timeout=
DOWN_FOR = 1.5  # how long the server stays down
GRACE = 5.0  # after the restart, BackendUnavailable is still expected this long
WARMUP_OPS = 15  # per task, before the baseline is taken

# Tolerances for "memory is flat" (growth from the baseline to the end of the soak).
MAX_TRACED_GROWTH = 4 * 1024 * 1024
MAX_RSS_GROWTH = 32 * 1024 * 1024
MAX_OBJECT_GROWTH = 20_000
# Client pools keep the connections that concurrent batches opened (redis-py grows its pool
# to the number of batches in flight at once); a leak would be one per failed call: thousands.
MAX_SOCKET_GROWTH = 32

ABSENT = object()  # a row known not to exist


@dataclass
class Row:
    """What one row must hold: a value (a name) or ABSENT; ``maybe`` lists the other
    outcomes still possible (a failed write, a restart since the write)."""

    value: Any = ABSENT
    maybe: dict[Any, float] = field(default_factory=dict)  # value -> start of its write
    written_at: float = 0.0  # monotonic start of the write that set ``value``


@dataclass
class Soak:
    kind: str
    user: Any
    rng: random.Random
    rows: dict[int, Row] = field(default_factory=dict)
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    restart_began: float | None = None
    restart_done: float | None = None
    stop_at: float = 0.0
    errors: list[str] = field(default_factory=list)
    version: int = 0

    def name(self, pk: int) -> str:
        self.version += 1
        return f"{self.kind}-{pk}-{self.version}"

    def in_restart_window(self, started: float) -> bool:
        began, done = self.restart_began, self.restart_done
        return began is not None and (done is None or started <= done + GRACE)

    def seen(self, pk: int, got: Any, read_started: float) -> None:
        """Check a value read for ``pk`` against what the row may hold, and settle it."""
        row = self.rows[pk]
        got_value = ABSENT if got is None else got.name
        if got is not None:
            if got.id != pk or got.height != pk + 0.5:
                self.fail(f"{pk}: read {got!r}, another row's data")
                return
        if got_value == row.value:
            row.maybe.clear()
            self.counts["reads checked"] += 1
            return
        if got_value in row.maybe:
            row.value, row.written_at = got_value, row.maybe[got_value]
            row.maybe.clear()
            self.counts["reads checked"] += 1
            return
        # Only a restart may take a row away, and only one written before it.
        began = self.restart_began
        if (
            got_value is ABSENT
            and began is not None
            and row.written_at < (self.restart_done or read_started)
        ):
            row.value = ABSENT
            row.maybe.clear()
            self.counts["rows lost to the restart (expected)"] += 1
            return
        self.fail(f"row {pk} read {got_value!r}, expected {row.value!r} or one of {set(row.maybe)}")

    def wrote(self, pk: int, value: Any, started: float) -> None:
        row = self.rows[pk]
        row.value, row.written_at = value, started
        row.maybe.clear()

    def unsure(self, pk: int, value: Any, started: float) -> None:
        """A write to ``pk`` failed: it may or may not have landed."""
        self.rows[pk].maybe[value] = started

    def fail(self, message: str) -> None:
        self.counts["wrong values"] += 1
        if len(self.errors) < 20:
            self.errors.append(message)


async def one_op(s: Soak, pks: list[int]) -> None:
    """One random operation on this task's rows."""
    rng = s.rng
    user = s.user
    op = rng.choices(
        ["get", "query_many", "insert_many", "update", "delete"], [30, 20, 15, 25, 10]
    )[0]
    started = time.monotonic()
    pending: list[tuple[int, Any]] = []  # writes whose outcome a failure leaves open
    try:
        if op == "get":
            pk = rng.choice(pks)
            s.seen(pk, await user.get_or_none(id=pk), started)
        elif op == "query_many":
            chosen = rng.sample(pks, rng.randint(1, len(pks)))
            for pk, got in zip(chosen, await user.query_many(*chosen), strict=True):
                s.seen(pk, got, started)
        elif op == "insert_many":
            chosen = rng.sample(pks, rng.randint(1, 3))
            values = {pk: s.name(pk) for pk in chosen}
            pending = list(values.items())
            await user.insert_many(
                *({"id": pk, "name": v, "height": pk + 0.5} for pk, v in values.items())
            )
            for pk, v in values.items():
                s.wrote(pk, v, started)
        elif op == "update":
            pk = rng.choice(pks)
            new = s.name(pk)
            pending = [(pk, new)]
            got = await user.update(id=pk, name=new)
            if got is None:
                s.seen(pk, None, started)
            else:
                assert got.id == pk and got.name == new
                s.wrote(pk, new, s.rows[pk].written_at)  # an update keeps the row's age
        else:
            pk = rng.choice(pks)
            pending = [(pk, ABSENT)]
            await user.delete(id=pk)
            s.wrote(pk, ABSENT, started)
        s.counts["ops ok"] += 1
    except co.BackendUnavailable:
        for pk, value in pending:
            s.unsure(pk, value, started)
        if s.in_restart_window(started):
            s.counts["BackendUnavailable during the restart (expected)"] += 1
        else:
            s.counts["BackendUnavailable outside the restart"] += 1
            s.fail(f"{op} failed with BackendUnavailable outside the restart window")
        await asyncio.sleep(0.01)  # as an application would, instead of spinning
    s.counts[f"op {op}"] += 1
    s.counts["ops"] += 1


async def worker(s: Soak, index: int, ops: int | None) -> None:
    pks = [index * 100 + j for j in range(ROWS_PER_TASK)]
    done = 0
    while (ops is not None and done < ops) or (ops is None and time.monotonic() < s.stop_at):
        await one_op(s, pks)
        done += 1


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass  # closed meanwhile
    return count


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure() -> dict[str, int]:
    gc.collect()
    return {
        "traced bytes": tracemalloc.get_traced_memory()[0],
        "rss bytes": rss(),
        "objects": len(gc.get_objects()),
        "asyncio tasks": len(asyncio.all_tasks()),
        "open sockets": open_sockets(),
    }


@dataclass
class Server:
    kind: str
    proc: servers.RedisServer | servers.Memcached

    def backend(self) -> Backend:
        if isinstance(self.proc, servers.RedisServer):
            return RedisBackend(self.proc.url, timeout=TIMEOUT, namespace="soak")
        return MemcachedBackend([self.proc.address], timeout=TIMEOUT, namespace="soak")


@pytest.fixture(params=["redis", "memcached"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    """A server of this test's own, to restart."""
    kind = str(request.param)
    if kind not in BACKENDS:
        pytest.skip(f"{kind} is not in ACACHEORM_TEST_BACKENDS")
    proc = servers.RedisServer() if kind == "redis" else servers.Memcached()
    await asyncio.to_thread(proc.start)
    try:
        yield Server(kind, proc)
    finally:
        proc.stop()
        if isinstance(proc, servers.RedisServer):
            shutil.rmtree(proc.workdir, ignore_errors=True)


@pytest.mark.slow
async def test_soak_with_a_restart(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start(1)
    try:
        await _soak(server, capsys)
    finally:
        if not tracing:
            tracemalloc.stop()


async def _soak(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    sockets_at_start = open_sockets()
    tasks_at_start = len(asyncio.all_tasks())
    backend = server.backend()
    user, _, _ = define_models(backend, "msgpack")
    s = Soak(server.kind, user, random.Random(20240611))
    for index in range(TASKS):
        for j in range(ROWS_PER_TASK):
            s.rows[index * 100 + j] = Row()
    try:
        # Warm-up: fill the connection pools and every cache, then take the baseline.
        async with asyncio.timeout(120):
            await asyncio.gather(*(worker(s, i, WARMUP_OPS) for i in range(TASKS)))
        assert s.counts["ops ok"] == s.counts["ops"] == TASKS * WARMUP_OPS, s.errors
        before = measure()

        loop_started = time.monotonic()
        s.stop_at = loop_started + SECONDS
        workers = [asyncio.create_task(worker(s, i, None)) for i in range(TASKS)]
        try:
            async with asyncio.timeout(SECONDS + 120):
                await asyncio.sleep(SECONDS / 2)
                s.restart_began = time.monotonic()
                await asyncio.to_thread(server.proc.stop)
                await asyncio.sleep(DOWN_FOR)  # the outage itself
                await asyncio.to_thread(server.proc.start)  # same port, empty
                s.restart_done = time.monotonic()
                await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        elapsed = time.monotonic() - loop_started

        # Every row written after the server came back reads back equal.
        assert s.restart_done is not None
        durable = {pk: row for pk, row in s.rows.items() if row.written_at > s.restart_done}
        verified = lost = absent_ok = unsure = 0
        pks = sorted(s.rows)
        async with asyncio.timeout(60):
            got_all = await user.query_many(*pks)
        for pk, got in zip(pks, got_all, strict=True):
            row = s.rows[pk]
            value = ABSENT if got is None else got.name
            if row.maybe:
                unsure += 1
                if value != row.value and value not in row.maybe:
                    s.seen(pk, got, time.monotonic())  # records a wrong value if it is one
                continue
            if pk not in durable:
                s.seen(pk, got, time.monotonic())
                continue
            if value == row.value and (got is None or got.height == pk + 0.5):
                verified += 1
                absent_ok += got is None
            else:
                lost += 1
                s.fail(f"row {pk} written after recovery reads {value!r}, not {row.value!r}")
        del got_all, got  # the rows read back are the test's, not a leak

        after = measure()
    finally:
        await backend.close()
    await asyncio.sleep(0)
    sockets_after_close = open_sockets()

    counts = s.counts
    report = [
        f"soak on {server.kind}: {SECONDS:.0f}s requested, {elapsed:.1f}s run, {TASKS} tasks, "
        f"server down {DOWN_FOR}s in the middle",
        f"  ops: {counts['ops']} ({counts['ops'] / elapsed:.0f}/s), ok {counts['ops ok']}",
        "  ops by kind: "
        + ", ".join(f"{k[3:]} {v}" for k, v in sorted(counts.items()) if k.startswith("op ")),
        "  BackendUnavailable during the restart (expected): "
        f"{counts['BackendUnavailable during the restart (expected)']}",
        "  BackendUnavailable outside the restart: "
        f"{counts['BackendUnavailable outside the restart']}",
        f"  reads checked during the soak: {counts['reads checked']}",
        "  rows lost to the restart (written before it, expected): "
        f"{counts['rows lost to the restart (expected)']}",
        f"  rows written after recovery: {len(durable)}; verified equal: {verified} "
        f"(of which deleted and absent: {absent_ok}); rows lost: {lost}",
        f"  rows left undecided by a failed write (either outcome accepted): {unsure}",
        f"  wrong values: {counts['wrong values']}",
    ]
    for name in before:
        report.append(f"  {name}: before {before[name]:,}, after {after[name]:,}")
    report.append(
        f"  open sockets: {sockets_at_start} before the backend, {sockets_after_close} after close"
    )
    with capsys.disabled():
        print("\n" + "\n".join(report))

    assert not s.errors, s.errors
    assert counts["wrong values"] == 0
    assert lost == 0
    assert verified > TASKS  # the run did write many rows after the restart
    assert counts["BackendUnavailable during the restart (expected)"] > 0  # the restart bit
    assert counts["BackendUnavailable outside the restart"] == 0
    assert after["traced bytes"] - before["traced bytes"] <= MAX_TRACED_GROWTH, report
    assert after["rss bytes"] - before["rss bytes"] <= MAX_RSS_GROWTH, report
    assert after["objects"] - before["objects"] <= MAX_OBJECT_GROWTH, report
    assert after["asyncio tasks"] <= before["asyncio tasks"], report
    assert after["open sockets"] - before["open sockets"] <= MAX_SOCKET_GROWTH, report
    assert len(asyncio.all_tasks()) == tasks_at_start
    assert sockets_after_close <= sockets_at_start, report
