"""What each command does to one key's entry, given a clock: written once, without I/O.

The in-process and filesystem backends store entries their own way (a dict in memory,
one file per key) but give every command the same meaning; `Semantics.apply` is that
meaning, and each backend only loads the key's live entry and stores what comes back.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from .. import _commands as _c
from .._commands import (
    KEEP_TTL,
    MISSING,
    Add,
    Cas,
    Command,
    Incr,
    Replace,
    Set,
    Touch,
)
from .._exceptions import BackendError

__all__ = ["UNCHANGED", "Entry", "Semantics", "Unchanged"]

_new: Final = tuple.__new__


class Entry(NamedTuple):
    """A live entry: its value, when it expires (on the backend's clock; the backend's
    ``never`` value for no expiry) and the token `Gets` hands out for it."""

    value: bytes
    expires: float | None
    token: int


#: What `Semantics.apply` reads an entry as: (value, expires, token), by position.
Stored = Entry | Sequence[Any]


class Unchanged(enum.Enum):
    UNCHANGED = 0


#: What `Semantics.apply` returns as the new entry when the command left the key alone.
UNCHANGED: Final = Unchanged.UNCHANGED


class Semantics:
    """The commands' meaning for a backend whose clock reads ``now`` as a float.

    ``never`` is how the backend writes "no expiry" in `Entry.expires` (None in memory,
    0.0 in a file header); ``new_token`` draws the token of a new value (a `Touch` keeps
    the token: the value is the same).

    Example::

        semantics = Semantics(lambda: next(counter), never=None)
        result, new = semantics.apply(Incr("n", 1, None), None, now=0.0)
        # result == 1, new == Entry(b"1", None, <token>)
    """

    def __init__(self, new_token: Callable[[], int], never: float | None = None) -> None:
        self.new_token = new_token
        self.never = never

    def expires_at(self, ttl: float | None, now: float) -> float | None:
        return self.never if ttl is None else now + ttl

    def apply(self, cmd: Command, entry: Stored | None, now: float) -> tuple[Any, Any]:
        """``cmd`` against the key's live ``entry`` (None: absent) at time ``now``: its
        result, and the key's new `Entry` (None: deleted; `UNCHANGED`: left as it was).

        ``entry`` is read by position (value, expires, token), so a backend may pass what
        it keeps (an `Entry`, a list) without building one. This runs once per command of
        a batch: entries are built with ``tuple.__new__`` (a NamedTuple's own ``__new__``
        is Python code), and the cases come in the order the in-process backend needs
        them most (it answers ``Get`` and ``Set`` before calling this).
        """
        # On the command's type, by identity: twice as fast as class patterns here. Each
        # case names the command under its own type for the checker (no cost at run time).
        match type(cmd):
            case _c.Gets:
                return (None if entry is None else (entry[0], entry[2])), UNCHANGED
            case _c.Replace | _c.Cas:
                rc: Replace | Cas = cmd  # type: ignore[assignment]
                if entry is None or (type(rc) is Cas and entry[2] != rc.token):
                    return False, UNCHANGED
                ttl = rc.ttl
                if ttl is KEEP_TTL:
                    expires = entry[1]
                else:
                    expires = self.never if ttl is None else now + ttl
                return True, _new(Entry, (rc.value, expires, self.new_token()))
            case _c.Add:
                add: Add = cmd  # type: ignore[assignment]
                if entry is not None:
                    return False, UNCHANGED
                expires = self.never if add.ttl is None else now + add.ttl
                return True, _new(Entry, (add.value, expires, self.new_token()))
            case _c.Incr:
                incr: Incr = cmd  # type: ignore[assignment]
                delta = incr.delta
                if entry is None:
                    expires = self.never if incr.ttl is None else now + incr.ttl
                    return delta, _new(Entry, (str(delta).encode(), expires, self.new_token()))
                old = entry[0]
                if not (old.isdigit() or (old[:1] == b"-" and old[1:].isdigit())):
                    error = BackendError(f"incr: the value under {cmd.key!r} is not an integer")
                    return error, UNCHANGED
                new = int(old) + delta
                return new, _new(Entry, (str(new).encode(), entry[1], self.new_token()))
            case _c.Delete:
                return (False, UNCHANGED) if entry is None else (True, None)
            case _c.Touch:
                touch: Touch = cmd  # type: ignore[assignment]
                if entry is None:
                    return False, UNCHANGED
                # The value is unchanged, so the token (which names its version) is kept.
                expires = self.never if touch.ttl is None else now + touch.ttl
                return True, _new(Entry, (entry[0], expires, entry[2]))
            case _c.Has:
                return entry is not None, UNCHANGED
            case _c.Ttl:
                if entry is None:
                    return MISSING, UNCHANGED
                expires = entry[1]
                if expires is None or expires == self.never:
                    return None, UNCHANGED
                return max(0.0, expires - now), UNCHANGED
            case _c.Get:
                return (None if entry is None else entry[0]), UNCHANGED
            case _c.Set:
                put: Set = cmd  # type: ignore[assignment]
                expires = self.never if put.ttl is None else now + put.ttl
                return True, _new(Entry, (put.value, expires, self.new_token()))
        raise TypeError(f"unknown command {cmd!r}")  # pragma: no cover - the union is closed
