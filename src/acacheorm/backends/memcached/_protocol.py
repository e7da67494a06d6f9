"""memcached's text and meta protocol without I/O: request bytes, reply parsing, and one
generator per command that yields requests and receives replies (see `Steps`).

The connection side (`_pool`) reads lines and value bytes as these functions ask and sends
what the generators yield, so everything here can be tested with canned bytes.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Generator
from typing import Any, NamedTuple

from ..._commands import (
    KEEP_TTL,
    MISSING,
    Add,
    Cas,
    Command,
    Delete,
    Gets,
    Has,
    Incr,
    NotNative,
    Replace,
    Set,
    Touch,
    Ttl,
    WriteTTL,
)
from ..._exceptions import BackendError, ValueTooLargeError

#: memcached's default item size limit (``memcached -I``); key and value share it.
DEFAULT_ITEM_SIZE = 1024 * 1024
#: Bytes memcached adds to every item besides key and value (header, cas, terminators);
#: 59 on a 64-bit build, rounded up.
ITEM_OVERHEAD = 64
MAX_KEY_LENGTH = 250
#: Relative TTLs longer than this are read by memcached as unix timestamps.
MAX_RELATIVE_EXPTIME = 60 * 60 * 24 * 30
#: The latest expiry memcached can keep: its exptime is a signed 32-bit unix time
#: (2038-01-19 03:14:07 UTC). It drops an item given a later one at once, while answering
#: that it stored it, so a longer TTL is cut to end then.
MAX_EXPTIME = 2**31 - 1
MIN_SERVER_VERSION = (1, 6, 10)
#: How many times a gets/cas loop (incr emulation, replace keeping the TTL) retries.


_INTEGER = re.compile(rb" *(-?[0-9]+) *")  # memcached pads in-place increments with spaces
_VERSION = re.compile(rb"VERSION (\d+)\.(\d+)\.(\d+)")

# -- TTLs -----------------------------------------------------------------------------------


def _absolute_if_long(seconds: int) -> int:
    if seconds > MAX_RELATIVE_EXPTIME:
        return min(int(time.time()) + seconds, MAX_EXPTIME)
    return seconds


def exptime(ttl: float | None) -> int:
    """memcached's exptime for a TTL in seconds (``None``: never expires).

    memcached counts time in whole seconds on a clock that ticks once a second, and an item
    stored with exptime ``n`` lives between ``n - 1`` and ``n`` seconds. The TTL is rounded
    up and one tick added, so an item never expires before its TTL (it may outlive it by up
    to a second). Thirty days or more are sent as a unix time, because memcached reads
    larger relative values as timestamps; a TTL reaching past `MAX_EXPTIME` (January 2038)
    ends then, the latest memcached can keep (it would drop the item at once otherwise).
    """
    if ttl is None:
        return 0
    return _absolute_if_long(math.ceil(ttl) + 1)


def _exptime_remaining(remaining: float) -> int:
    """exptime that keeps ``remaining`` seconds (as memcached reports them) to live."""
    return _absolute_if_long(max(1, math.ceil(remaining)))


class _CasToken(NamedTuple):
    """What `Gets` hands out: the cas unique plus the TTL left when it was read."""

    cas: int
    ttl: int  # seconds left as memcached reported them; -1: never expires
    read_at: float  # time.monotonic() of the read

    def keep_exptime(self) -> int:
        if self.ttl < 0:
            return 0
        return _exptime_remaining(self.ttl - (time.monotonic() - self.read_at))

    def ttl_moved(self, left: int) -> bool:
        """Whether ``left`` (seconds, -1: never expires), read later, says the TTL was set
        since this token was read (by more than memcached's one-second clock)."""
        if (left < 0) != (self.ttl < 0):
            return True
        return left >= 0 and abs(left - (self.ttl - (time.monotonic() - self.read_at))) > 1.5


# -- wire protocol --------------------------------------------------------------------------


class _ProtocolError(Exception):
    """memcached answered something this client does not understand."""


class _Request(NamedTuple):
    data: bytes
    #: True when the command's reply settles it; False when another step may follow (later
    #: commands on the same key then wait for the next round).
    final: bool = True
    #: With ``final=False``: the value is settled and a follow-up can only set the TTL, so
    #: later plain gets of the key need not wait (other commands still do).
    value_final: bool = False


class _Reply(NamedTuple):
    code: bytes  # b"HD", b"VA", b"EN", b"NS", b"EX", b"NF", b"TOUCHED", ..., or the error word
    flags: tuple[bytes, ...]  # returned meta flags such as b"c12", b"t-1"
    value: bytes | None
    line: bytes

    def flag(self, name: bytes) -> int:
        for item in self.flags:
            if item[:1] == name:
                return int(item[1:])
        raise _ProtocolError(f"flag {name!r} missing from {self.line!r}")


_Step = Generator[_Request, _Reply, Any]


def _parse_int(value: bytes | None) -> int | None:
    if value is None:
        return None
    match = _INTEGER.fullmatch(value)
    return int(match.group(1)) if match else None


_GET = _Request(b"")
#: Yielded by a step whose request holds two commands: "send me the second reply too".
_MORE = _Request(b"", final=False)


# -- replies: parsed in bulk from what has been received -------------------------------------


def parse_values(data: bytes, pos: int, values: dict[bytes, bytes]) -> tuple[int, int]:
    """Read the reply to a classic ``get`` in ``data`` from ``pos`` on, as far as it has
    arrived, putting each complete ``VALUE`` item in ``values`` (key -> value).

    Returns where the items read end and, for what follows, 0 once ``END`` was read, or
    else the length ``data`` must reach before the next item can be read. One loop over the
    buffer, whatever the number of items.
    """
    find = data.find
    while True:
        eol = find(b"\r\n", pos)
        if eol < 0:
            return pos, len(data) + 1
        words = data[pos:eol].split(b" ")
        if len(words) != 4 or words[0] != b"VALUE":
            if eol - pos == 3 and data.startswith(b"END", pos):
                return eol + 2, 0
            raise _ProtocolError(f"unexpected reply to get: {data[pos:eol]!r}")
        start = eol + 2
        end = start + int(words[3])
        if end < start:
            raise _ProtocolError(f"unexpected reply to get: {data[pos:eol]!r}")
        if end + 2 > len(data):
            return pos, end + 2
        if data[end : end + 2] != b"\r\n":
            raise _ProtocolError(f"value of {end - start} bytes not terminated by CRLF")
        values[words[1]] = data[start:end]
        pos = end + 2


def parse_reply(data: bytes, pos: int) -> tuple[_Reply | None, int]:
    """The meta reply in ``data`` at ``pos`` and where it ends; or, when it has not all
    arrived, ``None`` and the length ``data`` must reach first."""
    eol = data.find(b"\r\n", pos)
    if eol < 0:
        return None, len(data) + 1
    line = data[pos:eol]
    words = line.split()
    if not words or b"\n" in line:
        raise _ProtocolError(f"bad reply from memcached: {line!r}")
    if words[0] != b"VA":
        return _Reply(words[0], tuple(words[1:]), None, line), eol + 2
    start = eol + 2
    end = start + int(words[1])
    if end < start:
        raise _ProtocolError(f"bad reply from memcached: {line!r}")
    if end + 2 > len(data):
        return None, end + 2
    if data[end : end + 2] != b"\r\n":
        raise _ProtocolError(f"value of {end - start} bytes not terminated by CRLF")
    return _Reply(b"VA", tuple(words[2:]), data[start:end], line), end + 2


def server_version(line: bytes) -> tuple[int, ...]:
    """The version in the reply to ``version``."""
    match = _VERSION.match(line)
    if match is None:
        raise _ProtocolError(f"unexpected reply to version: {line!r}")
    return tuple(int(part) for part in match.groups())


def get_request(keys: list[bytes]) -> bytes:
    """One classic multi-key ``get``, each key once."""
    return b"get " + b" ".join(dict.fromkeys(keys)) + b"\r\n"


def set_line(key: bytes, value: bytes, flags: bytes) -> bytes:
    """A meta set (``ms``) of ``value`` with meta ``flags`` (each preceded by a space)."""
    return b"".join((b"ms %b %d%b\r\n" % (key, len(value), flags), value, b"\r\n"))


# -- one generator per command: yields requests, receives replies, returns the result -------


class Steps:
    """Makes the step generator of each command, for items of at most ``max_value_size``."""

    def __init__(self, max_value_size: int) -> None:
        self.max_value_size = max_value_size

    def of(self, cmd: Command, key: bytes, name: str) -> _Step:
        """The steps of ``cmd`` on wire key ``key``; ``name`` is the key errors show."""
        if isinstance(cmd, Set):
            return self._store(name, key, cmd.value, b"", cmd.ttl)
        if isinstance(cmd, Add):
            return self._store(name, key, cmd.value, b" ME", cmd.ttl)
        if isinstance(cmd, Replace):
            if cmd.ttl is KEEP_TTL:  # not native: the executor runs it as gets/cas
                return self._not_native(
                    f"replace of {name!r} keeping its TTL", Replace(name, cmd.value, KEEP_TTL)
                )
            return self._store(name, key, cmd.value, b" MR", cmd.ttl)
        if isinstance(cmd, Gets):
            return self._gets(name, key)
        if isinstance(cmd, Cas):
            return self._cas(name, key, cmd.value, cmd.token, cmd.ttl)
        if isinstance(cmd, Has):
            return self._simple(name, b"mg %b\r\n" % key, b"HD", b"EN")
        if isinstance(cmd, Delete):
            return self._simple(name, b"md %b\r\n" % key, b"HD", b"NF")
        if isinstance(cmd, Touch):
            line = b"touch %b %d\r\n" % (key, exptime(cmd.ttl))
            return self._simple(name, line, b"TOUCHED", b"NOT_FOUND")
        if isinstance(cmd, Incr):
            return self._incr(name, key, cmd.delta, cmd.ttl)
        if isinstance(cmd, Ttl):
            return self._ttl(name, key)
        raise TypeError(f"unknown command {cmd!r}")  # pragma: no cover - closed union

    def _too_large(self, name: str, key: bytes, value: bytes) -> ValueTooLargeError | None:
        if len(value) + len(key) + ITEM_OVERHEAD <= self.max_value_size:
            return None
        return ValueTooLargeError(
            f"value of {len(value)} bytes for key {name!r} does not fit memcached's item size "
            f"limit of {self.max_value_size} bytes (key and {ITEM_OVERHEAD} bytes of overhead "
            "included); nothing was written"
        )

    @staticmethod
    def _refused(name: str, reply: _Reply) -> BackendError:
        text = reply.line.decode("ascii", "replace")
        if reply.line.startswith(b"SERVER_ERROR object too large"):
            return ValueTooLargeError(f"memcached refused the value for key {name!r}: {text}")
        return BackendError(f"memcached refused a command on key {name!r}: {text}")

    def _simple(self, name: str, line: bytes, yes: bytes, no: bytes) -> _Step:
        reply = yield _Request(line)
        if reply.code == yes:
            return True
        if reply.code == no:
            return False
        return self._refused(name, reply)

    def _store(self, name: str, key: bytes, value: bytes, mode: bytes, ttl: float | None) -> _Step:
        error = self._too_large(name, key, value)
        if error is not None:
            return error
        reply = yield _Request(set_line(key, value, b" T%d%b" % (exptime(ttl), mode)))
        if reply.code == b"HD":
            return True
        if reply.code == b"NS" and mode:  # add: present; replace: absent
            return False
        return self._refused(name, reply)

    def _ttl(self, name: str, key: bytes) -> _Step:
        reply = yield _Request(b"mg %b t\r\n" % key)
        if reply.code == b"EN":
            return MISSING
        if reply.code != b"HD":
            return self._refused(name, reply)
        left = reply.flag(b"t")
        # Whole seconds on a clock that ticks once a second, and `exptime` adds one tick:
        # report the lower bound (the item lives at least this long, at most a second more).
        return None if left < 0 else float(max(0, left - 1))

    def _gets(self, name: str, key: bytes) -> _Step:
        return self.gets_result(name, (yield _Request(b"mg %b v c t\r\n" % key)))

    @staticmethod
    def gets_result(name: str, reply: _Reply) -> Any:
        """What a `Gets` of key ``name`` answers for ``reply`` to its ``mg <key> v c t``."""
        code = reply.code
        if code == b"VA":
            return reply.value, _CasToken(reply.flag(b"c"), reply.flag(b"t"), time.monotonic())
        if code == b"EN":
            return None
        return Steps._refused(name, reply)

    def _cas(self, name: str, key: bytes, value: bytes, token: Any, ttl: WriteTTL) -> _Step:
        if not isinstance(token, _CasToken):
            return BackendError(f"cas on {name!r}: {token!r} is not a MemcachedBackend token")
        error = self._too_large(name, key, value)
        if error is not None:
            return error
        if ttl is not KEEP_TTL:
            line = set_line(key, value, b" C%d T%d" % (token.cas, exptime(ttl)))
            reply = yield _Request(line)
            if reply.code == b"HD":
                return True
            if reply.code in (b"EX", b"NF", b"NS"):  # changed, gone, or not stored
                return False
            return self._refused(name, reply)
        # A touch does not change the cas unique, so the write below succeeds after one and
        # would put back the TTL read by Gets. The row's TTL is read again just before it,
        # in the same write; if it moved, the row, if it still holds what was written, is
        # written again with that TTL. What is left is a touch landing between the two
        # commands of one write.
        when = token.keep_exptime()
        line = set_line(key, value, b" C%d T%d" % (token.cas, when))
        seen = yield _Request(b"mg %b t\r\n%b" % (key, line), final=False, value_final=True)
        reply = yield _MORE
        if reply.code in (b"EX", b"NF", b"NS"):
            return False
        if reply.code != b"HD":
            return self._refused(name, reply)
        if seen.code != b"HD" or not token.ttl_moved(seen.flag(b"t")):
            return True
        left = seen.flag(b"t")
        now = yield _Request(b"mg %b v c\r\n" % key, final=False)
        if now.code == b"VA" and now.value == value:  # else another write came: its TTL stands
            flags = b" C%d T%d" % (now.flag(b"c"), 0 if left < 0 else _exptime_remaining(left))
            yield _Request(set_line(key, value, flags), final=False)
        return True  # written either way

    @staticmethod
    def _not_native(what: str, redo: Command) -> _Step:
        """A slot for the executor to run as gets/cas round trips (nothing was sent)."""
        return NotNative(f"{what}: not native on memcached", redo)
        yield  # pragma: no cover - a step, for the same protocol as the others

    def _incr(self, name: str, key: bytes, delta: int, ttl: float | None) -> _Step:
        if not 0 <= delta < 2**64:  # memcached's numbers are unsigned 64-bit
            return NotNative(f"incr of {name!r} by {delta}", Incr(name, delta, ttl))
        # Native and atomic: creates a missing key holding delta (N: TTL on creation).
        line = b"ma %b N%d J%d D%d v\r\n" % (key, exptime(ttl), delta, delta)
        reply = yield _Request(line, final=False)
        if reply.code == b"VA":
            new = _parse_int(reply.value)
            if new is None:
                raise _ProtocolError(f"ma returned {reply.value!r}")
            if new >= delta:
                return new
            # memcached wrapped past 2**64 - 1: the executor puts the lost 2**64 back.
            return NotNative(
                f"incr of {name!r} wrapped", Incr(name, 2**64), result=new + 2**64, create=False
            )
        if reply.line.startswith(b"CLIENT_ERROR cannot increment"):
            # a negative, too large or non-numeric value, left as it was
            return NotNative(f"incr of {name!r}", Incr(name, delta, ttl))
        return self._refused(name, reply)
