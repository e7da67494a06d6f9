"""What each command does to a key's entry, without a store (backends/_semantics.py)."""

from __future__ import annotations

import pytest

from acacheorm._commands import (
    KEEP_TTL,
    MISSING,
    Add,
    Cas,
    Delete,
    Get,
    Gets,
    Has,
    Incr,
    Replace,
    Set,
    Touch,
    Ttl,
)
from acacheorm._exceptions import BackendError
from acacheorm.backends._semantics import UNCHANGED, Entry, Semantics

NOW = 100.0


@pytest.fixture(params=[None, 0.0], ids=["never=None", "never=0.0"])
def sem(request: pytest.FixtureRequest) -> Semantics:
    """As the in-process backend (no expiry: None) and the filesystem (0.0) use it."""
    return Semantics(lambda: 10, never=request.param)  # every new token: 10


def test_reads_leave_the_entry_alone(sem: Semantics) -> None:
    entry = Entry(b"v", NOW + 5, 3)
    assert sem.apply(Get("k"), entry, NOW) == (b"v", UNCHANGED)
    assert sem.apply(Get("k"), None, NOW) == (None, UNCHANGED)
    assert sem.apply(Gets("k"), entry, NOW) == ((b"v", 3), UNCHANGED)
    assert sem.apply(Has("k"), None, NOW) == (False, UNCHANGED)
    assert sem.apply(Ttl("k"), entry, NOW) == (5.0, UNCHANGED)
    assert sem.apply(Ttl("k"), Entry(b"v", sem.never, 3), NOW) == (None, UNCHANGED)
    assert sem.apply(Ttl("k"), None, NOW) == (MISSING, UNCHANGED)


def test_writes_give_a_new_token_and_expiry(sem: Semantics) -> None:
    entry = Entry(b"v", NOW + 5, 3)
    assert sem.apply(Set("k", b"w", 2), entry, NOW) == (True, Entry(b"w", NOW + 2, 10))
    assert sem.apply(Set("k", b"w", None), None, NOW) == (True, Entry(b"w", sem.never, 10))
    assert sem.apply(Add("k", b"w", None), entry, NOW) == (False, UNCHANGED)
    assert sem.apply(Replace("k", b"w", None), None, NOW) == (False, UNCHANGED)
    # KEEP_TTL keeps the entry's expiry
    assert sem.apply(Replace("k", b"w", KEEP_TTL), entry, NOW) == (
        True,
        Entry(b"w", NOW + 5, 10),
    )


def test_cas_needs_the_token_read(sem: Semantics) -> None:
    entry = Entry(b"v", None, 3)
    assert sem.apply(Cas("k", b"w", 2, None), entry, NOW) == (False, UNCHANGED)
    assert sem.apply(Cas("k", b"w", 3, None), entry, NOW)[0] is True
    assert sem.apply(Cas("k", b"w", 3, None), None, NOW) == (False, UNCHANGED)


def test_incr_creates_counts_and_refuses_non_integers(sem: Semantics) -> None:
    assert sem.apply(Incr("n", 4, 9), None, NOW) == (4, Entry(b"4", NOW + 9, 10))
    # an existing counter keeps its expiry, whatever the ttl given
    assert sem.apply(Incr("n", -7, 9), Entry(b"5", NOW + 1, 1), NOW) == (
        -2,
        Entry(b"-2", NOW + 1, 10),
    )
    for bad in (b"", b"-", b"1.5", b" 5", b"5\n", b"\xd9\xa1"):  # the last: an Arabic one
        result, new = sem.apply(Incr("n", 1, None), Entry(bad, None, 1), NOW)
        assert isinstance(result, BackendError) and new is UNCHANGED, bad


def test_touch_keeps_the_token_and_delete_removes(sem: Semantics) -> None:
    entry = Entry(b"v", None, 3)
    assert sem.apply(Touch("k", 7), entry, NOW) == (True, Entry(b"v", NOW + 7, 3))
    assert sem.apply(Touch("k", 7), None, NOW) == (False, UNCHANGED)
    assert sem.apply(Delete("k"), entry, NOW) == (True, None)
    assert sem.apply(Delete("k"), None, NOW) == (False, UNCHANGED)


def test_an_entry_may_be_any_sequence(sem: Semantics) -> None:
    """The in-process backend passes its own [value, expires, token] lists."""
    assert sem.apply(Gets("k"), [b"v", None, 3], NOW) == ((b"v", 3), UNCHANGED)
