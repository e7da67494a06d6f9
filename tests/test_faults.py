"""Faults between the client and the server (tests/faultproxy.py): added latency, dropped
connections, half-sent replies (then closed or held), a paused server.

For RedisBackend (standalone) and MemcachedBackend (one node behind the proxy, and two nodes
with only one faulted), under each fault, through the raw byte API and through models:

- every call fails with `co.BackendUnavailable` within the configured timeout (a latency
  below the timeout fails nothing and returns the right values); a hang fails the test;
- no call ever returns another key's value: every key holds values of its own, and a value
  read is one that was written to that key (a write cut off by a fault may or may not have
  landed, so both are accepted; nothing else is);
- the same backend object recovers by itself once the fault clears, while the late replies
  held by the proxy are delivered on the old connections.

`SUMMARY` counts faults injected and survived and the calls made under them; the last test
checks and prints it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

import acacheorm as co
from acacheorm.backends.base import Backend
from acacheorm.backends.memcached import MemcachedBackend
from acacheorm.backends.redis import RedisBackend
from acacheorm.cli._demo import define_models
from tests.conftest import BACKENDS, unique_namespace
from tests.faultproxy import FaultProxy

TIMEOUT = 0.5  # the backends' timeout= in this module
SLACK = 0.75  # scheduling noise on a busy machine, one reconnect with its short backoff
HANG = 5.0  # beyond budget + HANG a call counts as hung and fails the test
RECOVERY_LIMIT = 15.0  # the backend must work again this soon after a fault clears

ROWS = 24  # model rows per test
RAW = 24  # raw keys per test
BIG = 200_000  # some raw values are this large, so their replies span several TCP chunks

# name, proxy fault, parameters, whether calls must fail under it
FAULTS: list[tuple[str, str, dict[str, float], bool]] = [
    ("latency_below_timeout", "latency", {"seconds": TIMEOUT / 10}, False),
    ("latency_above_timeout", "latency", {"seconds": TIMEOUT * 4}, True),
    ("drop", "drop", {}, True),
    ("half_sent_then_closed", "half_close", {}, True),
    ("half_sent_then_held", "half_hold", {}, True),
    ("paused", "pause", {}, True),
]

#: Counts for the issue note, filled as the tests run and checked by the last one.
SUMMARY: collections.Counter[str] = collections.Counter()
MAX_FAIL_SECONDS: dict[str, float] = collections.defaultdict(float)
RECOVERY_SECONDS: list[float] = []


# -- helpers ----------------------------------------------------------------------------------


@dataclass
class Target:
    """A backend behind fault proxies, with what each of its keys may hold."""

    kind: str
    backend: Backend
    proxies: list[FaultProxy]
    user: Any
    raw: dict[str, set[bytes]] = field(default_factory=dict)
    names: dict[int, set[str]] = field(default_factory=dict)
    version: int = 0

    def raw_value(self, key: str) -> bytes:
        self.version += 1
        size = BIG if key.endswith("7") else 40 + len(key)
        head = f"{key}|v{self.version}|".encode()
        value = head + b"x" * (size - len(head))
        self.raw.setdefault(key, set()).add(value)
        return value

    def name(self, pk: int) -> str:
        self.version += 1
        name = f"user-{pk}-v{self.version}"
        self.names.setdefault(pk, set()).add(name)
        return name

    def check_raw(self, key: str, value: bytes | None) -> None:
        # A key written before the fault always holds something (no TTL on raw keys).
        assert value is not None, f"{key} lost its value"
        assert value in self.raw[key], f"{key} holds a value never written to it: {value[:40]!r}"
        SUMMARY["values checked"] += 1

    def check_user(self, pk: int, row: Any) -> None:
        assert row is not None, f"user {pk} lost"
        assert row.id == pk, f"asked for user {pk}, got user {row.id}"
        assert row.name in self.names[pk], f"user {pk} holds {row.name!r}"
        assert row.height == pk + 0.5
        SUMMARY["values checked"] += 1


async def seed(t: Target) -> None:
    await t.backend.set_many({f"raw{i}": t.raw_value(f"raw{i}") for i in range(RAW)})
    await t.user.insert_many(
        *({"id": i, "name": t.name(i), "height": i + 0.5} for i in range(ROWS))
    )


async def attempt(
    label: str,
    call: Callable[[], Awaitable[Any]],
    *,
    must_fail: bool,
    budget: float,
    check: Callable[[Any], None] = lambda _: None,
) -> None:
    """Run one call under a fault: it fails with BackendUnavailable within ``budget``
    (``must_fail``) or succeeds and passes ``check``; it never hangs."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(budget + HANG):
            result = await call()
    except co.BackendUnavailable:
        elapsed = time.monotonic() - started
        assert must_fail, f"{label} failed under a fault it should ride through"
        assert elapsed <= budget, f"{label} took {elapsed:.2f}s to fail (budget {budget}s)"
        SUMMARY["calls failed with BackendUnavailable in time"] += 1
        where = label[label.index("[") + 1 : -1]  # backend/fault
        MAX_FAIL_SECONDS[where] = max(MAX_FAIL_SECONDS[where], elapsed)
        return
    except TimeoutError:
        pytest.fail(f"{label} hung for {budget + HANG}s")
    assert not must_fail, f"{label} succeeded under a fault that leaves no way to succeed"
    check(result)
    SUMMARY["calls succeeded under a fault"] += 1


def operations(t: Target, keys: list[str], pks: list[int]) -> list[tuple[str, Any, int, Any]]:
    """(label, call, round trips, check) for raw and model calls on ``keys``/``pks``."""
    b, user = t.backend, t.user
    k0, k1 = keys[0], keys[-1]
    p0, p1 = pks[0], pks[-1]

    def set_one() -> Awaitable[Any]:
        return b.set(k0, t.raw_value(k0))

    def set_two() -> Awaitable[Any]:
        return b.set_many({k0: t.raw_value(k0), k1: t.raw_value(k1)})

    def update() -> Any:
        return user.update(id=p0, name=t.name(p0))

    def insert_many() -> Any:
        return user.insert_many(
            {"id": p0, "name": t.name(p0), "height": p0 + 0.5},
            {"id": p1, "name": t.name(p1), "height": p1 + 0.5},
        )

    def check_many(values: list[bytes | None]) -> None:
        for key, value in zip(keys, values, strict=True):
            t.check_raw(key, value)

    def check_users(rows: list[Any]) -> None:
        for pk, row in zip(pks, rows, strict=True):
            t.check_user(pk, row)

    def check_updated(row: Any) -> None:
        t.check_user(p0, row)

    return [
        ("get", lambda: b.get(k0), 1, lambda v: t.check_raw(k0, v)),
        ("get_many", lambda: b.get_many(*keys), 1, check_many),
        ("has", lambda: b.has(k1), 1, lambda v: v is True or pytest.fail("has lost a key")),
        ("set", set_one, 1, lambda _: None),
        ("set_many", set_two, 1, lambda _: None),
        ("User.get", lambda: user.get(id=p0), 1, lambda r: t.check_user(p0, r)),
        ("User.query_many", lambda: user.query_many(*pks), 1, check_users),
        ("User.update", update, 2, check_updated),
        ("User.insert_many", insert_many, 1, lambda _: None),
    ]


async def run_operations(
    t: Target, fault: str, keys: list[str], pks: list[int], must_fail: bool
) -> None:
    """Every operation alone, then all of them plus 60 gets at once."""
    for label, call, trips, check in operations(t, keys, pks):
        await attempt(
            f"{label}[{t.kind}/{fault}]",
            call,
            must_fail=must_fail,
            budget=trips * TIMEOUT + SLACK,
            check=check,
        )
    calls = []
    for label, call, trips, check in operations(t, keys, pks):
        calls.append((label, call, trips * TIMEOUT + SLACK, check))
    for i, key in enumerate(keys * 2):
        calls.append(("get", _bind(t.backend.get, key), TIMEOUT + SLACK, _checker(t, key)))
        pk = pks[i % len(pks)]
        calls.append(("User.get", _bind_user(t.user, pk), TIMEOUT + SLACK, _user_checker(t, pk)))
    started = time.monotonic()
    await asyncio.gather(
        *(
            attempt(
                f"concurrent {label}[{t.kind}/{fault}]", c, must_fail=must_fail, budget=b, check=k
            )
            for label, c, b, k in calls
        )
    )
    # all at once take no longer than the slowest one alone
    assert time.monotonic() - started <= 2 * TIMEOUT + SLACK + 1.0
    SUMMARY["concurrent bursts"] += 1


def _check_pair(t: Target, keys: tuple[str, str], values: list[bytes | None]) -> None:
    for key, value in zip(keys, values, strict=True):
        t.check_raw(key, value)


def _bind(fn: Callable[[str], Awaitable[Any]], key: str) -> Callable[[], Awaitable[Any]]:
    return lambda: fn(key)


def _bind_user(user: Any, pk: int) -> Callable[[], Awaitable[Any]]:
    return lambda: user.get(id=pk)


def _checker(t: Target, key: str) -> Callable[[Any], None]:
    return lambda v: t.check_raw(key, v)


def _user_checker(t: Target, pk: int) -> Callable[[Any], None]:
    return lambda r: t.check_user(pk, r)


async def recover(t: Target, probe: str) -> float:
    """Poll the same backend object until a call succeeds; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVERY_LIMIT:
        try:
            async with asyncio.timeout(TIMEOUT + HANG):
                t.check_raw(probe, await t.backend.get(probe))
            return time.monotonic() - started
        except co.BackendUnavailable:
            await asyncio.sleep(0.05)
    pytest.fail(f"{t.kind} did not recover within {RECOVERY_LIMIT}s")


async def verify_everything(t: Target) -> None:
    """Every key holds a value of its own, read many ways at once; then fresh writes read
    back exactly."""
    keys = sorted(t.raw)
    pks = sorted(t.names)
    async with asyncio.timeout(30):
        for key, value in zip(keys, await t.backend.get_many(*keys), strict=True):
            t.check_raw(key, value)
        singles = await asyncio.gather(*(t.backend.get(k) for k in keys * 3))
        for key, value in zip(keys * 3, singles, strict=True):
            t.check_raw(key, value)
        for pk, row in zip(pks, await t.user.query_many(*pks), strict=True):
            t.check_user(pk, row)
        rows = await asyncio.gather(*(t.user.get(id=pk) for pk in pks * 2))
        for pk, row in zip(pks * 2, rows, strict=True):
            t.check_user(pk, row)
        # Fresh writes: exactly these values come back.
        fresh = {k: t.raw_value(k) for k in keys}
        await t.backend.set_many(fresh)
        assert await t.backend.get_many(*keys) == [fresh[k] for k in keys]
        names = {pk: t.name(pk) for pk in pks}
        await t.user.insert_many(*({"id": pk, "name": names[pk], "height": pk + 0.5} for pk in pks))
        got = await t.user.query_many(*pks)
        assert [r.name for r in got] == [names[pk] for pk in pks]
        for pk in pks[:4]:
            updated = await t.user.update(id=pk, name=t.name(pk))
            assert (await t.user.get(id=pk)).name == updated.name
            names[pk] = updated.name
        # from now on each key may hold only what it holds now (or what is written later)
        t.raw = {k: {fresh[k]} for k in keys}
        t.names = {pk: {names[pk]} for pk in pks}


# -- fixtures ---------------------------------------------------------------------------------


def _needs(kind: str) -> None:
    if kind not in BACKENDS:
        pytest.skip(f"{kind} is not in ACACHEORM_TEST_BACKENDS")


def _proxied_redis_url(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return parts._replace(netloc=netloc).geturl()


async def _target(kind: str, backend: Backend, proxies: list[FaultProxy]) -> Target:
    user, _, _ = define_models(backend, "msgpack")
    return Target(kind, backend, proxies, user)


async def _teardown(t: Target) -> None:
    try:
        for proxy in t.proxies:
            proxy.clear()
        async with asyncio.timeout(30):
            await t.backend.clear()
    finally:
        await t.backend.close()
        for proxy in t.proxies:
            await proxy.close()


@pytest.fixture(params=["redis", "memcached"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    """One server behind one proxy, and a backend on the proxy."""
    kind = str(request.param)
    _needs(kind)
    backend: Backend
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        parts = urlsplit(url)
        proxy = FaultProxy((parts.hostname or "127.0.0.1", parts.port or 6379), name=kind)
        await proxy.start()
        backend = RedisBackend(
            _proxied_redis_url(url, proxy.port),
            timeout=TIMEOUT,
            namespace=unique_namespace("fault"),
        )
    else:
        address = request.getfixturevalue("memcached_servers")[0]
        proxy = FaultProxy(address, name=kind)
        await proxy.start()
        backend = MemcachedBackend([proxy.address], timeout=TIMEOUT, namespace=unique_namespace())
    t = await _target(kind, backend, [proxy])
    try:
        yield t
    finally:
        await _teardown(t)


@pytest.fixture
async def two_nodes(memcached_servers: list[tuple[str, int]]) -> AsyncIterator[Target]:
    """Two memcached nodes, each behind its own proxy, one backend over both proxies."""
    _needs("memcached")
    assert len(memcached_servers) >= 2, "this test needs two memcached nodes"
    proxies = [FaultProxy(a, name=f"node{i}") for i, a in enumerate(memcached_servers[:2])]
    for proxy in proxies:
        await proxy.start()
    backend = MemcachedBackend(
        [p.address for p in proxies], timeout=TIMEOUT, namespace=unique_namespace("two")
    )
    t = await _target("memcached-2-nodes", backend, proxies)
    try:
        yield t
    finally:
        await _teardown(t)


def _bit(proxy: FaultProxy, kind: str, before: dict[str, int]) -> bool:
    """Whether the fault really acted on traffic while it was on."""
    stats = vars(proxy.stats)
    what = {
        "latency": "delayed",
        "drop": "dropped",
        "half_close": "cut",
        "half_hold": "cut",
        "pause": "held",
    }[kind]
    return bool(stats[what] > before[what])


def _snapshot(proxy: FaultProxy) -> dict[str, int]:
    return {k: v for k, v in vars(proxy.stats).items() if isinstance(v, int)}


# -- tests ------------------------------------------------------------------------------------

KEYS = [f"raw{i}" for i in (0, 7, 3, 17, 11)]  # raw7 and raw17 are large (several chunks)
PKS = [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("name", "kind", "params", "must_fail"), FAULTS, ids=[f[0] for f in FAULTS]
)
async def test_one_node_under_fault(
    target: Target, name: str, kind: str, params: dict[str, float], must_fail: bool
) -> None:
    t = target
    proxy = t.proxies[0]
    await seed(t)
    client = getattr(t.backend, "client", None)
    before = _snapshot(proxy)
    SUMMARY["faults injected"] += 1
    SUMMARY[f"faults injected: {name}"] += 1
    with proxy.fault(kind, **params):
        await run_operations(t, name, KEYS, PKS, must_fail)
        assert _bit(proxy, kind, before), f"the {kind} fault never acted: {proxy.stats}"
    RECOVERY_SECONDS.append(await recover(t, "raw3"))
    SUMMARY["late chunks released after a fault"] += proxy.stats.late - before["late"]
    await verify_everything(t)
    # recovered by itself: the same backend object, the same client
    if client is not None:
        assert t.backend.client is client  # type: ignore[attr-defined]
    # and the next fault finds it just as ready
    await verify_everything(t)
    SUMMARY["faults survived"] += 1
    SUMMARY[f"faults survived: {name}"] += 1


@pytest.mark.parametrize(
    ("name", "kind", "params", "must_fail"), FAULTS, ids=[f[0] for f in FAULTS]
)
async def test_memcached_one_of_two_nodes_under_fault(
    two_nodes: Target, name: str, kind: str, params: dict[str, float], must_fail: bool
) -> None:
    t = two_nodes
    backend = t.backend
    assert isinstance(backend, MemcachedBackend)
    faulted, healthy = t.proxies
    await seed(t)

    def on(proxy: FaultProxy, key: str) -> bool:
        return backend.server_for(key) == proxy.address

    bad_keys = [k for k in sorted(t.raw) if on(faulted, k)]
    good_keys = [k for k in sorted(t.raw) if on(healthy, k)]
    bad_pks = [pk for pk in range(ROWS) if on(faulted, t.user._schema.key((pk,)))]
    good_pks = [pk for pk in range(ROWS) if on(healthy, t.user._schema.key((pk,)))]
    assert bad_keys and good_keys and bad_pks and good_pks
    before = _snapshot(faulted)
    healthy_before = _snapshot(healthy)
    SUMMARY["faults injected"] += 1
    SUMMARY[f"faults injected: {name} (1 of 2 memcached nodes)"] += 1
    with faulted.fault(kind, **params):
        # the healthy node's keys keep working, with their own values
        await run_operations(t, name + "/healthy node", good_keys, good_pks, must_fail=False)
        await run_operations(t, name + "/faulted node", bad_keys, bad_pks, must_fail)
        # a batch that spans both nodes reports the faulted one
        await attempt(
            f"get_many across nodes[{name}]",
            lambda: backend.get_many(good_keys[0], bad_keys[0]),
            must_fail=must_fail,
            budget=TIMEOUT + SLACK,
            check=lambda v: _check_pair(t, (good_keys[0], bad_keys[0]), v),
        )
        assert _bit(faulted, kind, before)
    assert _snapshot(healthy)["dropped"] == healthy_before["dropped"]
    RECOVERY_SECONDS.append(await recover(t, bad_keys[0]))
    SUMMARY["late chunks released after a fault"] += faulted.stats.late - before["late"]
    await verify_everything(t)
    SUMMARY["faults survived"] += 1
    SUMMARY[f"faults survived: {name} (1 of 2 memcached nodes)"] += 1


def test_zz_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Faults injected were all survived; print the counts (no -s needed)."""
    injected, survived = SUMMARY["faults injected"], SUMMARY["faults survived"]
    assert injected == survived, f"{injected - survived} fault(s) not survived: {dict(SUMMARY)}"
    lines = [f"fault summary: {injected} injected, {survived} survived"]
    lines += [f"  {k}: {v}" for k, v in sorted(SUMMARY.items()) if k.startswith("faults ")]
    lines += [
        f"  {k}: {SUMMARY[k]}"
        for k in (
            "calls failed with BackendUnavailable in time",
            "calls succeeded under a fault",
            "concurrent bursts",
            "values checked",
            "late chunks released after a fault",
        )
    ]
    if RECOVERY_SECONDS:
        lines.append(f"  slowest recovery after a fault cleared: {max(RECOVERY_SECONDS):.3f}s")
    lines += [f"  slowest failure under {k}: {v:.3f}s" for k, v in sorted(MAX_FAIL_SECONDS.items())]
    lines.append("  values from another key or never written: 0 (any would have failed a test)")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
