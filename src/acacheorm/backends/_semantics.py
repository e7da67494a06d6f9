"""What each command does to one key's entry, given a clock: written once, without I/O.

The in-process and filesystem backends store entries their own way (a dict in memory,
one file per key) but give every command the same meaning; `Semantics.apply` is that
meaning, and each backend only loads the key's live entry and stores what comes back.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from .._commands import (
    KEEP_TTL,
    MISSING,
    Add,
    Cas,
    Command,
    Delete,
    Get,
    Gets,
    Has,
    Incr,
    Replace,
    Set,
    Touch,
    Ttl,
    WriteTTL,
)
from .._exceptions import BackendError

__all__ = ["UNCHANGED", "Entry", "Semantics", "Unchanged"]

_INTEGER: Final = re.compile(rb"-?[0-9]+")


class Entry(NamedTuple):
    """A live entry: its value, when it expires (on the backend's clock; the backend's
    ``never`` value for no expiry) and the token `Gets` hands out for it."""

    value: bytes
    expires: float | None
    token: int


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

    def _keep_or(self, ttl: WriteTTL, entry: Entry, now: float) -> float | None:
        return entry.expires if ttl is KEEP_TTL else self.expires_at(ttl, now)

    def apply(self, cmd: Command, entry: Entry | None, now: float) -> tuple[Any, Any]:
        """``cmd`` against the key's live ``entry`` (None: absent) at time ``now``: its
        result, and the key's new entry (None: deleted; `UNCHANGED`: left as it was)."""
        match cmd:
            case Get():
                return (None if entry is None else entry.value), UNCHANGED
            case Set(value=value, ttl=ttl):
                return True, Entry(value, self.expires_at(ttl, now), self.new_token())
            case Gets():
                return (None if entry is None else (entry.value, entry.token)), UNCHANGED
            case Has():
                return entry is not None, UNCHANGED
            case Add(value=value, ttl=ttl):
                if entry is not None:
                    return False, UNCHANGED
                return True, Entry(value, self.expires_at(ttl, now), self.new_token())
            case Replace(value=value, ttl=ttl) | Cas(value=value, ttl=ttl):
                if entry is None or (isinstance(cmd, Cas) and entry.token != cmd.token):
                    return False, UNCHANGED
                return True, Entry(value, self._keep_or(ttl, entry, now), self.new_token())
            case Delete():
                return (False, UNCHANGED) if entry is None else (True, None)
            case Incr(delta=delta, ttl=ttl):
                if entry is None:
                    expires = self.expires_at(ttl, now)
                    return delta, Entry(str(delta).encode(), expires, self.new_token())
                if not _INTEGER.fullmatch(entry.value):
                    error = BackendError(f"incr: the value under {cmd.key!r} is not an integer")
                    return error, UNCHANGED
                new = int(entry.value) + delta
                return new, Entry(str(new).encode(), entry.expires, self.new_token())
            case Touch(ttl=ttl):
                if entry is None:
                    return False, UNCHANGED
                # The value is unchanged, so the token (which names its version) is kept.
                return True, entry._replace(expires=self.expires_at(ttl, now))
            case Ttl():
                if entry is None:
                    return MISSING, UNCHANGED
                expires = entry.expires
                if expires is None or expires == self.never:
                    return None, UNCHANGED
                return max(0.0, expires - now), UNCHANGED
        raise TypeError(f"unknown command {cmd!r}")  # pragma: no cover - the union is closed
