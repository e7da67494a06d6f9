"""Batch to wire commands and replies to result slots, for `RedisBackend`: no I/O here.

`Planner.plan` turns the commands of a batch into `_Wire` commands (runs of ``Get`` become
``MGET``, runs of ``Set`` one ``MSET`` or one call of the set-many script, ...); `assemble`
fills the batch's result slots from their replies, an error reply as a `BackendError` in the
slots it concerns. Sending is `RedisBackend`'s job (and `_cluster`'s on Redis Cluster).
"""

from __future__ import annotations

import functools
import math
from binascii import crc_hqx
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from ..._commands import (
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
    IndexedWrite,
    IndexRead,
    Replace,
    Set,
    Touch,
    Ttl,
)
from ..._exceptions import BackendError, BackendUnavailable
from ..base import unknown_outcome
from . import _index_lua

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.commands.core import AsyncScript

_CHUNK = 1000  # keys per MGET / MSET / set-many script call
_GLOB_SPECIAL = frozenset(b"*?[]\\")
#: Wire commands that only read: the only ones a client may send again after a lost reply.
_IDEMPOTENT = frozenset({"GET", "MGET", "EXISTS"})
#: The deadline of the running Cluster batch: each node's part is bounded by it on its own,

# KEYS[i] gets ARGV[2i-1]; ARGV[2i] is its PX in milliseconds, "0" for no expiry.
_SET_MANY_LUA = """\
for i = 1, #KEYS do
  local px = ARGV[2 * i]
  if px == '0' then
    redis.call('SET', KEYS[i], ARGV[2 * i - 1])
  else
    redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'PX', px)
  end
end
return #KEYS
"""

# Write ARGV[2] only if the key still holds ARGV[1] (the value read by Gets). ARGV[3] is
# "K" (keep the remaining TTL), "N" (no expiry) or a PX in milliseconds.
_CAS_LUA = """\
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[3] == 'K' then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
elseif ARGV[3] == 'N' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""

# INCRBY ARGV[1]; the TTL (PX ARGV[2]) applies only if this call created the key.
_INCR_TTL_LUA = """\
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""

#: A reply slot not (yet) filled: None is a reply (a missing key).
_NO_REPLY: Any = object()

# How a wire command's reply fills the batch's result slots.
_ONE = 0  # one slot: conv(reply)
_EACH = 1  # MGET: one slot per element of the reply
_ALL_TRUE = 2  # MSET / set-many script: True in every slot
_IGNORE = 3  # a helper command (PERSIST after EXISTS): no slot of its own
_EACH_CONV = 4  # one slot per element of the reply: conv(element)


def _identity(reply: Any) -> Any:
    return reply


def _to_bool(reply: Any) -> bool:
    return bool(reply)


def _to_int(reply: Any) -> int:
    return int(reply)


def _to_ttl(reply: Any) -> Any:
    # PTTL: -2 for a missing key, -1 for a key without expiry, else milliseconds left.
    ms = int(reply)
    if ms == -2:
        return MISSING
    return None if ms < 0 else ms / 1000


def _to_gets(reply: Any) -> tuple[bytes, bytes] | None:
    # The token is the value itself: the Cas script compares it with what is stored.
    return None if reply is None else (reply, reply)


class _Wire:
    """One Redis command of a batch and the result slots its reply fills."""

    __slots__ = ("args", "conv", "mode", "script", "targets")

    def __init__(
        self,
        args: list[Any],
        targets: Sequence[int],
        mode: int = _ONE,
        conv: Callable[[Any], Any] = _identity,
        script: AsyncScript | None = None,
    ) -> None:
        self.args = args
        self.targets = targets
        self.mode = mode
        self.conv = conv
        self.script = script

    def as_eval(self) -> list[Any]:
        """The same script call with its body (``EVAL``) instead of its digest."""
        assert self.script is not None
        return ["EVAL", self.script.script, *self.args[2:]]


class _LazyWire(_Wire):
    """A wire command whose arguments are built when first read: when it is sent, so that
    the server runs the large script calls sent before it while the client builds it (see
    `_cluster._send_all`; `args_of` reads them one by one)."""

    __slots__ = ("_build", "_built")

    def __init__(
        self,
        build: Callable[[], list[Any]],
        targets: Sequence[int],
        mode: int,
        conv: Callable[[Any], Any],
        script: AsyncScript | None,
    ) -> None:
        self._build: Callable[[], list[Any]] | None = build
        self._built: list[Any] = []
        self.targets = targets
        self.mode = mode
        self.conv = conv
        self.script = script

    @property
    def args(self) -> list[Any]:
        build = self._build
        if build is not None:
            self._built = build()
            self._build = None
        return self._built

    @args.setter
    def args(self, value: list[Any]) -> None:
        self._built = value
        self._build = None


class _ArgsOf(Sequence[list[Any]]):
    """The arguments of wire commands, each read when it is reached (`_LazyWire`)."""

    __slots__ = ("_wires",)

    def __init__(self, wires: list[_Wire]) -> None:
        self._wires = wires

    def __len__(self) -> int:
        return len(self._wires)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [w.args for w in self._wires[i]]
        return self._wires[i].args


class PackedCalls(list[list[Any]]):
    """Commands (argument lists) that come packed too: ``packed[k]`` is ``self[k]`` as
    hiredis' ``pack_command`` packs it (`Planner.fan_out`)."""

    __slots__ = ("packed",)

    def __init__(self, calls: list[list[Any]], packed: list[bytes]) -> None:
        super().__init__(calls)
        self.packed = packed


@functools.cache
def _pack_command() -> Callable[[tuple[Any, ...]], bytes] | None:
    try:
        from hiredis import pack_command
    except ImportError:  # pragma: no cover - hiredis comes with the redis extra
        return None
    return pack_command


def args_of(wires: list[_Wire]) -> Sequence[list[Any]]:
    """The arguments of ``wires``: a list, or when one is built late, a sequence that
    reads each as it is reached."""
    for wire in wires:
        if type(wire) is _LazyWire:
            return _ArgsOf(wires)
    return [w.args for w in wires]


def _px(ttl: float) -> int:
    # Milliseconds, rounded up (a TTL never gets shorter); round() first so that binary
    # noise such as 1.1 * 1000 == 1100.0000000000002 does not add a millisecond.
    # At least 1: PX 0 is an error for SET, a delete for PEXPIRE and "no expiry" in the
    # set-many script.
    return max(1, math.ceil(round(ttl * 1000, 6)))


def _encode_key(key: str) -> bytes:
    # surrogatepass: every Python str maps to distinct bytes, even lone surrogates.
    return key.encode("utf-8", "surrogatepass")


def key_slot(key: bytes) -> int:
    """The Cluster hash slot of ``key``: CRC16 of its ``{hash tag}`` if it has a non-empty
    one, else of the whole key, mod 16384 (what redis-py's ``redis.crc.key_slot`` computes,
    without its call when there is no ``{``)."""
    start = key.find(b"{")
    if start > -1:
        end = key.find(b"}", start + 1)
        if end > -1 and end != start + 1:
            key = key[start + 1 : end]
    return crc_hqx(key, 0) & 16383


#: Commands never planned to a script call (`Planner._script_wire`).
_UNSCRIPTED = frozenset({Get, Gets, Has, Delete, Touch, Ttl, Add, Replace})


def _repeated_keys(commands: Sequence[Command]) -> frozenset[int]:
    """Indices of the commands whose key another command of the batch touches too."""
    if len(commands) < 2 or _UNSCRIPTED.issuperset(map(type, commands)):
        return frozenset()  # what it is for: which script calls go as EVAL; here there is none
    if len({cmd.key for cmd in commands}) == len(commands):
        return frozenset()  # no key twice (an insert_many): one set, no index per key
    first: dict[str, int] = {}
    repeated: set[int] = set()
    for i, cmd in enumerate(commands):
        j = first.setdefault(cmd.key, i)
        if j != i:
            repeated.add(i)
            repeated.add(j)
    return frozenset(repeated)


def _glob_escape(raw: bytes) -> bytes:
    out = bytearray()
    for byte in raw:
        if byte in _GLOB_SPECIAL:
            out.append(0x5C)  # backslash
        out.append(byte)
    return bytes(out)


@functools.cache
def _unavailable_types() -> tuple[type[BaseException], ...]:
    from redis import exceptions as rx

    return (
        rx.ConnectionError,
        rx.TimeoutError,
        rx.ClusterDownError,
        rx.SlotNotCoveredError,
        TimeoutError,
        OSError,
    )


def _translate(exc: BaseException, timeout: float | None) -> BackendError | None:
    """The acacheorm error for a driver/OS error, or None if ``exc`` is not one."""
    from redis import exceptions as rx

    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
        # Not "unavailable": retrying or falling back silently would hide a bad config.
        return BackendError(f"redis refused the credentials: {exc}")
    if isinstance(exc, TimeoutError) and not isinstance(exc, rx.RedisError):
        return BackendUnavailable(f"redis did not answer within {timeout}s")
    cause: BaseException | None = exc
    for _ in range(4):  # "Redis Cluster cannot be connected" is raised from a ConnectionError
        if isinstance(cause, _unavailable_types()):
            return BackendUnavailable(f"redis is unavailable: {str(exc) or type(exc).__name__}")
        cause = cause.__cause__ if cause is not None else None
    if isinstance(exc, rx.RedisError | rx.RedisClusterException):
        return BackendError(f"redis error: {exc}")
    return None


def _never_sent(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) says no connection could be made: nothing was sent."""
    cause: BaseException | None = exc
    for _ in range(4):
        if cause is None:
            return False
        if isinstance(cause, ConnectionRefusedError) or " connecting to " in str(cause):
            return True
        cause = cause.__cause__
    return False


def _slot_error(wire: _Wire, reply: Exception, timeout: float | None) -> BackendError:
    """The error for the result slots of ``wire`` whose reply is ``reply``."""
    from redis.exceptions import ResponseError

    if isinstance(reply, BackendError):
        return reply
    err: BackendError
    if isinstance(reply, _unavailable_types()):
        if isinstance(reply, ResponseError):  # CLUSTERDOWN, ...: the command did not run
            err = BackendUnavailable(f"redis {wire.args[0]}: {reply}")
        else:  # its node failed (connection lost, no answer in time)
            err = _translate(reply, timeout) or BackendUnavailable(str(reply))
            if wire.args[0] not in _IDEMPOTENT and not _never_sent(reply):
                err = unknown_outcome(err)
    else:
        err = BackendError(f"redis {wire.args[0]}: {reply}")
    err.__cause__ = reply
    return err


class Planner:
    """Plans the wire commands of a batch; holds the scripts they call (registered once)."""

    def __init__(self, client: Redis | RedisCluster, prefix: str) -> None:
        self._prefix = prefix
        self._set_many = client.register_script(_SET_MANY_LUA)
        self._cas = client.register_script(_CAS_LUA)
        self._incr_ttl = client.register_script(_INCR_TTL_LUA)
        self._index_write = client.register_script(_index_lua.WRITE_LUA)
        self._index_read = client.register_script(_index_lua.READ_LUA)
        self._last_read: tuple[tuple[Any, ...], list[Any], Callable[[Any], Any]] | None = None
        #: per index bucket key (as sent): its bytes, hash slot and packed form, for `fan_out`
        self._buckets: dict[str, tuple[bytes, int, bytes]] = {}

    def plan(
        self,
        commands: Sequence[Command],
        indices: Sequence[int],
        inline: bool | AbstractSet[int],
    ) -> list[_Wire]:
        """Wire commands for ``commands[i] for i in indices`` (on Cluster: one hash slot).

        ``inline`` says which script calls carry the script body (``EVAL``) rather than its
        digest: all of them (True, for MULTI), or those of the commands at these indices.
        """
        wires: list[_Wire] = []
        n = len(indices)
        if n > 1 and indices == range(len(commands)):  # a whole batch, as standalone plans it
            kind = type(commands[0])
            if (kind is Get or kind is Set or kind is IndexedWrite) and [
                *map(type, commands)
            ].count(kind) == n:  # of one kind (a multi-get): no scan command by command
                return [
                    self._run_wire(kind, commands, indices[start : start + _CHUNK], inline)
                    for start in range(0, n, _CHUNK)
                ]
        pos = 0
        while pos < n:
            i = indices[pos]
            cmd = commands[i]
            kind = type(cmd)
            if kind is Get or kind is Set or kind is IndexedWrite:
                end = pos + 1
                while end < n and type(commands[indices[end]]) is kind:
                    end += 1
                if end - pos > 1:
                    for start in range(pos, end, _CHUNK):
                        run = indices[start : min(end, start + _CHUNK)]
                        wires.append(self._run_wire(kind, commands, run, inline))
                    pos = end
                    continue
            if kind is IndexRead:  # one per bucket of a filter: no isinstance chain
                wires.append(self._index_read_wire(cmd, i, inline))  # type: ignore[arg-type]
            else:
                wires.extend(self.single(cmd, i, inline))
            pos += 1
        return wires

    def _run_wire(
        self,
        kind: type,
        commands: Sequence[Command],
        run: Sequence[int],
        inline: bool | AbstractSet[int],
    ) -> _Wire:
        """One wire command for a run of commands of ``kind`` (Get, Set or IndexedWrite)."""
        if kind is Get:
            return self._mget(commands, run)
        if kind is Set:
            return self._mset(commands, run, inline)
        return self._index_writes(commands, run, inline)

    def _index_read_wire(self, cmd: IndexRead, i: int, inline: bool | AbstractSet[int]) -> _Wire:
        # A filter reads every bucket with the same arguments: those of the previous read
        # are taken again when only the key differs (the reply converter ignores the key).
        argv, conv = self._read_argv(cmd)
        key = _encode_key(cmd.key)
        return self._script_wire(self._index_read, [key], argv, (i,), _ONE, inline, conv)

    def fan_out(
        self, commands: Sequence[Command]
    ) -> tuple[list[list[Any]], list[int], Callable[[Any], Any]] | None:
        """The script calls, their hash slots and their reply converter for a filter's read
        of each of its buckets on Cluster: `IndexRead`\\ s that differ only in their key,
        each key once (what `_indexplan.fan_out` makes); None for any other batch.

        What `plan` makes of each of them (`wires_of` makes the wire commands when a reply
        needs them), without a wire command each: the script calls take the same
        arguments after the key, and a bucket's key bytes and slot are worked out once.
        """
        first = commands[0]
        if type(first) is not IndexRead:
            return None
        rest = first[1:]
        argv, conv = self._read_argv(first)
        buckets = self._buckets
        sha = self._index_read.sha
        calls: list[list[Any]] = []
        slots: list[int] = []
        for cmd in commands:
            if type(cmd) is not IndexRead or cmd[1:] != rest:
                return None
            got = buckets.get(cmd[0])
            if got is None:
                if len(buckets) >= 4096:  # bounded: a few bucket keys per indexed model
                    buckets.clear()
                key = _encode_key(cmd[0])
                packed_key = b"$%d\r\n%b\r\n" % (len(key), key)
                got = buckets[cmd[0]] = (key, key_slot(key), packed_key)
            calls.append(["EVALSHA", sha, 1, got[0], *argv])
            slots.append(got[1])
        if len({c[3] for c in calls}) < len(calls):
            return None  # a bucket read twice (filters merged in one batch): `plan` does it
        pack = _pack_command()
        if pack is None:  # pragma: no cover - hiredis comes with the redis extra
            return calls, slots, conv
        # Each call packed as hiredis packs it, from parts packed once: the array header and
        # the digest, the bucket's key, the arguments after it (without their own header).
        tail = pack(tuple(argv))
        tail = tail[tail.index(b"\r\n") + 2 :]
        head = b"*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%b\r\n$1\r\n1\r\n" % (
            4 + len(argv),
            len(sha),
            sha.encode(),
        )
        packed = [head + buckets[cmd[0]][2] + tail for cmd in commands]
        return PackedCalls(calls, packed), slots, conv

    def wires_of(self, calls: list[list[Any]], conv: Callable[[Any], Any]) -> list[_Wire]:
        """The wire commands of the script calls of `fan_out`, one result slot each."""
        script = self._index_read
        return [_Wire(args, (k,), _ONE, conv, script) for k, args in enumerate(calls)]

    def _read_argv(self, cmd: IndexRead) -> tuple[list[Any], Callable[[Any], Any]]:
        """The script arguments after the key of index read ``cmd``, and its reply
        converter (those of the previous read when only the key differs)."""
        rest = cmd[1:]
        last = self._last_read
        if last is not None and last[0] == rest:
            return last[1], last[2]
        argv = _index_lua.read_args(cmd)
        conv = _index_lua.read_result(cmd, len(self._prefix))
        self._last_read = (rest, argv, conv)
        return argv, conv

    @staticmethod
    def _mget(commands: Sequence[Command], run: Sequence[int]) -> _Wire:
        # _encode_key inlined (a call per key is most of the planning of a multi-get)
        keys = [commands[i][0].encode("utf-8", "surrogatepass") for i in run]
        return _Wire(["MGET", *keys], run, _EACH)

    def _mset(
        self, commands: Sequence[Command], run: Sequence[int], inline: bool | AbstractSet[int]
    ) -> _Wire:
        keys: list[bytes] = []
        argv: list[Any] = []
        with_ttl = False
        for i in run:
            cmd = commands[i]
            assert isinstance(cmd, Set)
            keys.append(_encode_key(cmd.key))
            if cmd.ttl is None:
                argv += (cmd.value, 0)
            else:
                argv += (cmd.value, _px(cmd.ttl))
                with_ttl = True
        if not with_ttl:
            args: list[Any] = ["MSET"]
            for key, value in zip(keys, argv[::2], strict=True):
                args += (key, value)
            return _Wire(args, run, _ALL_TRUE)
        return self._script_wire(self._set_many, keys, argv, run, _ALL_TRUE, inline)

    def single(self, cmd: Command, i: int, inline: bool | AbstractSet[int]) -> list[_Wire]:
        key = _encode_key(cmd.key)
        slot = (i,)
        if isinstance(cmd, Get):
            return [_Wire(["GET", key], slot)]
        if isinstance(cmd, Set | Add | Replace):
            args: list[Any] = ["SET", key, cmd.value]
            if isinstance(cmd, Add):
                args.append("NX")
            elif isinstance(cmd, Replace):
                args.append("XX")
            if cmd.ttl is KEEP_TTL:
                args.append("KEEPTTL")
            elif cmd.ttl is not None:
                args += ("PX", _px(cmd.ttl))
            return [_Wire(args, slot, conv=_to_bool)]
        if isinstance(cmd, Gets):
            return [_Wire(["GET", key], slot, conv=_to_gets)]
        if isinstance(cmd, Has):
            return [_Wire(["EXISTS", key], slot, conv=_to_bool)]
        if isinstance(cmd, Delete):
            return [_Wire(["UNLINK", key], slot, conv=_to_bool)]
        if isinstance(cmd, Incr):
            if cmd.ttl is None:
                return [_Wire(["INCRBY", key, cmd.delta], slot, conv=_to_int)]
            argv: list[Any] = [cmd.delta, _px(cmd.ttl)]
            return [self._script_wire(self._incr_ttl, [key], argv, slot, _ONE, inline, _to_int)]
        if isinstance(cmd, Touch):
            if cmd.ttl is None:
                # PERSIST answers 0 for a key without a TTL too: EXISTS says whether it was there.
                return [
                    _Wire(["EXISTS", key], slot, conv=_to_bool),
                    _Wire(["PERSIST", key], (), _IGNORE),
                ]
            return [_Wire(["PEXPIRE", key, _px(cmd.ttl)], slot, conv=_to_bool)]
        if isinstance(cmd, Ttl):
            return [_Wire(["PTTL", key], slot, conv=_to_ttl)]
        if isinstance(cmd, Cas):
            if not isinstance(cmd.token, bytes):
                raise TypeError(f"a Redis CAS token is the bytes read by Gets, not {cmd.token!r}")
            ttl = cmd.ttl
            mode: Any = "K" if ttl is KEEP_TTL else "N" if ttl is None else _px(ttl)
            argv = [cmd.token, cmd.value, mode]
            return [self._script_wire(self._cas, [key], argv, slot, _ONE, inline, _to_bool)]
        if isinstance(cmd, IndexedWrite):
            return [self._index_writes([cmd], [0], inline, slot)]
        if isinstance(cmd, IndexRead):
            return [self._index_read_wire(cmd, i, inline)]
        raise TypeError(f"unknown command {cmd!r}")  # pragma: no cover - closed union

    def _index_writes(
        self,
        commands: Sequence[Command],
        run: Sequence[int],
        inline: bool | AbstractSet[int],
        targets: Sequence[int] | None = None,
    ) -> _Wire:
        """Rows of indexed models (one slot): one call of the index write script, its
        arguments built when it is sent (`_LazyWire`)."""
        cmds: list[Any] = [commands[i] for i in run]
        if targets is None:
            targets = run
        script = self._index_write
        prefix = self._prefix
        as_eval = inline is True or bool(inline and not inline.isdisjoint(targets))

        def build() -> list[Any]:
            keys = [cmd.key.encode("utf-8", "surrogatepass") for cmd in cmds]
            argv = _index_lua.write_argv(cmds, prefix)
            if as_eval:
                return ["EVAL", script.script, len(keys), *keys, *argv]
            return ["EVALSHA", script.sha, len(keys), *keys, *argv]

        return _LazyWire(build, targets, _EACH_CONV, _index_lua.write_result, script)

    @staticmethod
    def _script_wire(
        script: AsyncScript,
        keys: list[bytes],
        argv: list[Any],
        targets: Sequence[int],
        mode: int,
        inline: bool | AbstractSet[int],
        conv: Callable[[Any], Any] = _identity,
    ) -> _Wire:
        wire = _Wire(["EVALSHA", script.sha, len(keys), *keys, *argv], targets, mode, conv, script)
        if inline is True or (inline and not inline.isdisjoint(targets)):
            wire.args = wire.as_eval()
        return wire


def assemble(n: int, wires: list[_Wire], replies: list[Any], timeout: float | None) -> list[Any]:
    """The batch's ``n`` result slots, filled from the replies to ``wires``."""
    results: list[Any] = [None] * n
    for wire, reply in zip(wires, replies, strict=True):
        mode = wire.mode
        if isinstance(reply, Exception):
            if mode == _IGNORE:
                continue
            err = _slot_error(wire, reply, timeout)
            for t in wire.targets:
                results[t] = err
        elif mode == _ONE:
            results[wire.targets[0]] = wire.conv(reply)
        elif mode == _EACH:
            for t, value in zip(wire.targets, reply, strict=True):
                results[t] = value
        elif mode == _ALL_TRUE:
            for t in wire.targets:
                results[t] = True
        elif mode == _EACH_CONV:
            targets = wire.targets
            if (
                wire.conv is _index_lua.write_result
                and len(reply) == len(targets)
                and reply.count(1) == len(reply)
            ):  # index writes that all wrote (1 each): True in every slot
                for t in targets:
                    results[t] = True
                continue
            for t, value in zip(targets, reply, strict=True):
                results[t] = wire.conv(value)
    return results


# -- Cluster --------------------------------------------------------------------------
