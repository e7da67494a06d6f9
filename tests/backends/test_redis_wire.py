"""A batch planned into Redis commands and their replies put into result slots, without a
server (backends/redis/_wire.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("redis")

import redis.asyncio as aredis
from redis.exceptions import ResponseError

from acacheorm._commands import KEEP_TTL, MISSING, Get, Incr, Set, Touch, Ttl
from acacheorm._exceptions import BackendError
from acacheorm.backends.redis._wire import _CHUNK, Planner, _repeated_keys, assemble


@pytest.fixture
def planner() -> Planner:
    return Planner(aredis.Redis(), "")  # a client that never connects: scripts only


def test_runs_become_multi_key_commands(planner: Planner) -> None:
    cmds = (Get("a"), Get("b"), Set("c", b"1", None), Set("d", b"2", None), Incr("e", 3, None))
    wires = planner.plan(cmds, range(len(cmds)), frozenset())
    assert [w.args for w in wires] == [
        ["MGET", b"a", b"b"],
        ["MSET", b"c", b"1", b"d", b"2"],
        ["INCRBY", b"e", 3],
    ]
    assert [list(w.targets) for w in wires] == [[0, 1], [2, 3], [4]]


def test_a_whole_batch_of_one_kind_is_planned_as_a_scan_would(planner: Planner) -> None:
    """The whole-batch shortcut (standalone) gives the wires the command-by-command scan
    gives (a list of indices takes the scan), chunked alike; surrogates survive."""
    n = 2 * _CHUNK + 3
    for cmds in (
        tuple(Get(f"k{i}\udc80") for i in range(n)),
        tuple(Set(f"k{i}", b"v", 60 if i % 2 else None) for i in range(n)),
    ):
        fast = planner.plan(cmds, range(n), frozenset({5}))
        scan = planner.plan(cmds, list(range(n)), frozenset({5}))
        assert [w.args for w in fast] == [w.args for w in scan]
        assert [list(w.targets) for w in fast] == [list(w.targets) for w in scan]
        assert [len(w.targets) for w in fast] == [_CHUNK, _CHUNK, 3]
        if isinstance(cmds[0], Get):
            assert fast[2].args == ["MGET"] + [
                f"k{i}\udc80".encode("utf-8", "surrogatepass") for i in range(2 * _CHUNK, n)
            ]
    assert fast[0].args[0] == "EVAL"  # command 5 is in the first chunk: inline
    assert planner.plan((Get("a"), Set("b", b"1", None)), range(2), frozenset())[0].args == [
        "GET",
        b"a",
    ]


def test_repeated_keys_matter_only_to_script_calls() -> None:
    assert _repeated_keys((Get("a"), Get("a"), Get("b"))) == frozenset()
    assert _repeated_keys((Incr("a", 1, 5.0), Get("a"), Get("b"))) == {0, 1}
    assert _repeated_keys((Set("a", b"1", None), Set("a", b"2", None))) == {0, 1}


def test_sets_with_a_ttl_call_the_script_by_digest_unless_inline(planner: Planner) -> None:
    cmds = (Set("a", b"1", 1.5), Set("b", b"2", None))
    [wire] = planner.plan(cmds, range(2), frozenset())
    assert wire.args[0] == "EVALSHA" and wire.args[2:] == [2, b"a", b"b", b"1", 1500, b"2", 0]
    [wire] = planner.plan(cmds, range(2), True)  # in MULTI: the body, never NOSCRIPT
    assert wire.args[0] == "EVAL" and wire.args[2:] == [2, b"a", b"b", b"1", 1500, b"2", 0]


def test_single_commands(planner: Planner) -> None:
    assert [w.args for w in planner.single(Set("k", b"v", KEEP_TTL), 0, False)] == [
        ["SET", b"k", b"v", "KEEPTTL"]
    ]
    # PERSIST says 0 for a key without a TTL too: EXISTS gives the result
    assert [w.args for w in planner.single(Touch("k", None), 0, False)] == [
        ["EXISTS", b"k"],
        ["PERSIST", b"k"],
    ]


def test_assemble_fills_slots_and_spreads_an_error(planner: Planner) -> None:
    cmds = (Get("a"), Get("b"), Ttl("c"), Touch("d", None))
    wires = planner.plan(cmds, range(len(cmds)), frozenset())
    replies = [ResponseError("WRONGTYPE"), -2, 1, 0]
    results = assemble(len(cmds), wires, replies, timeout=1.0)
    assert isinstance(results[0], BackendError) and results[0] is results[1]
    assert "redis MGET: WRONGTYPE" in str(results[0])
    assert results[2:] == [MISSING, True]


def test_a_filters_reads_of_its_buckets_are_planned_as_plan_plans_each(planner: Planner) -> None:
    """`Planner.fan_out` gives each bucket read the script call `plan` gives it, packed as
    hiredis packs it, with its hash slot; batches that are not one read per bucket (another
    command, other arguments, a bucket twice) are left to `plan`."""
    from hiredis import pack_command

    from acacheorm._commands import IndexRead
    from acacheorm.backends.redis._wire import PackedCalls, key_slot

    reads = [
        IndexRead("", "eq", "group", ("i7", "s\u00e9x"), "num", rows=500),
        IndexRead("", "range", "rating", (), "num", 1.5, None, True, False, True, 3, 20, rows=20),
        IndexRead("", "prefix", "name", ("ab\x00",), "lex"),
        IndexRead("", "eq", "tag", ("sa",), "eq", count_only=True, limit=7),
    ]
    for read in reads:
        cmds = tuple(read._replace(key=f"~ix:m:{{m.{b}}}\u00e9") for b in range(16))
        got = planner.fan_out(cmds)
        assert got is not None
        calls, slots, conv = got
        wires = planner.plan(cmds, range(len(cmds)), frozenset())
        assert calls == [w.args for w in wires]
        assert isinstance(calls, PackedCalls)
        assert calls.packed == [pack_command(tuple(args)) for args in calls]
        assert slots == [key_slot(args[3]) for args in calls]
        assert conv is wires[0].conv
        other = read._replace(key="x", field="other")
        assert planner.fan_out((*cmds, other)) is None
        assert planner.fan_out((*cmds, cmds[3])) is None
        assert planner.fan_out((*cmds, Get("x"))) is None
    assert planner.fan_out((Get("x"), reads[0])) is None
