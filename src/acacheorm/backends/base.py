"""The backend interface: bytes, keys and TTLs in batches; never models.

A concrete backend implements `Backend._execute` (one round trip for a whole `Batch`),
`Backend._clear` and `Backend._close`. Everything else is built here on top of those, so
every backend behaves alike; the raw byte API sends its batches through the executor, as
queries do, so batch hooks, logging and automatic batching see that traffic too.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from itertools import repeat
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

from .. import _exceptions
from .._commands import (
    KEEP_TTL,
    READ_COMMANDS,
    Add,
    Batch,
    Capabilities,
    Command,
    Delete,
    Get,
    Has,
    Incr,
    Replace,
    Set,
    Touch,
)
from .._exceptions import BackendUnavailable
from .._keys import namespace_prefix
from .._types import collector_paused

if TYPE_CHECKING:
    from .near import NearCache, _Tracker

TTLArg = int | float | datetime.timedelta | None

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0


#: The shortest TTL kept: shorter positive TTLs are rounded up to it (Redis counts in
#: milliseconds, and a TTL that rounds down to 0 would mean "never" or an error there).
MIN_TTL = 0.001
#: The longest TTL accepted, in seconds (100 years); longer is a `ValueError` (use
#: ``ttl=None`` for rows that never expire). memcached cannot keep items past January 2038:
#: there a TTL reaching past it ends then (see `MemcachedBackend`).
MAX_TTL = 100 * 365.25 * 24 * 3600


def normalize_ttl(ttl: Any) -> float | None:
    """Turn a user TTL (seconds, timedelta, None) into float seconds or None.

    Zero or negative is a `ValueError`: a write that expires at once is a bug, not a delete.
    A positive TTL below a millisecond is rounded up to one (`MIN_TTL`), the same on every
    backend; one above `MAX_TTL` (100 years) is a `ValueError`, raised before any I/O.

    Example::

        assert normalize_ttl(datetime.timedelta(minutes=1)) == 60.0
        assert normalize_ttl(1e-9) == 0.001
    """
    if ttl is None:
        return None
    if ttl is KEEP_TTL:
        raise ValueError("KEEP_TTL is not valid here")
    if isinstance(ttl, datetime.timedelta):
        ttl = ttl.total_seconds()
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be seconds (int/float), a timedelta or None, not {ttl!r}")
    if ttl != ttl or ttl <= 0:  # NaN, zero, negative
        raise ValueError(f"ttl must be a positive number of seconds or None, not {ttl!r}")
    if ttl > MAX_TTL:  # infinity and huge ints too
        raise ValueError(
            f"ttl must be at most {MAX_TTL:.0f} seconds (100 years), not {ttl!r}; "
            "use ttl=None for no expiry"
        )
    return max(float(ttl), MIN_TTL)


#: What a `BackendUnavailable` adds when writes were sent and no reply came back.
OUTCOME_UNKNOWN = (
    "the outcome of the writes is unknown: they may or may not have been applied "
    "(they were not sent again)"
)


class NothingRan(Exception):
    """Mixed into an error a backend raises for a whole batch before running any of it.

    When such a batch was several callers' batches merged by automatic batching, the
    executor runs each caller's batch on its own instead (safe: nothing ran), so the error
    reaches only the callers it concerns.
    """


#: The most a backend's socket transport reads at once (see `read_less`).
READ_SIZE = 64 * 1024


def read_less(transport: Any) -> None:
    """Make an asyncio socket ``transport`` read at most `READ_SIZE` bytes at a time.

    asyncio's selector transports read 256 KiB: a new bytes object that large, which the C
    allocator (glibc, until its mapping threshold has grown in this process) maps and
    unmaps for each read, three system calls and a page fault per reply, more than a small
    reply's whole exchange costs. 64 KiB come from the heap. Transports of other kinds (TLS,
    other event loops, which read into buffers of their own) are left as they are.
    """
    if (
        _SOCKET_TRANSPORT is not None
        and getattr(transport, "max_size", 0) > READ_SIZE
        and isinstance(transport, _SOCKET_TRANSPORT)
    ):
        transport.max_size = READ_SIZE


#: asyncio's plain socket transport class (a private name: None where it is gone, and then
#: transports keep their own read size).
_SOCKET_TRANSPORT: Any = getattr(
    getattr(asyncio, "selector_events", None), "_SelectorSocketTransport", None
)


def has_writes(commands: Iterable[Command]) -> bool:
    """Whether any of ``commands`` changes the store (anything but Get, Gets and Has)."""
    return any(type(c) not in READ_COMMANDS for c in commands)


def unknown_outcome(exc: BaseException) -> BackendUnavailable:
    """``exc`` (a connection lost or a reply not received after writes were sent) as the
    `BackendUnavailable` that says their outcome is unknown.

    A command whose reply was lost may have run, so it is never sent again blindly: the
    caller decides (read the key back, or treat the write as possibly applied).
    """
    if OUTCOME_UNKNOWN in str(exc):
        return exc if isinstance(exc, BackendUnavailable) else BackendUnavailable(str(exc))
    err = BackendUnavailable(f"{exc}; {OUTCOME_UNKNOWN}")
    err.__cause__ = exc
    return err


def name_slot_errors(commands: Sequence[Command], results: list[Any], cut: int = 0) -> list[Any]:
    """``results`` with each `BackendError` in a slot replaced by one that names the command
    and where it stands in the batch, as redis-py names a failed pipeline command:
    ``command #3 (Incr 'user:1') of the batch: <what went wrong>`` (counted from 1; the key
    without its first ``cut`` characters, the namespace). Same type, same cause.

    `Backend.execute` applies it to every backend's results, so a backend just puts the
    error it has in the slot.
    """
    error = _exceptions.BackendError
    for result in results:  # the common case first, checked fast: no error at all
        if isinstance(result, error):
            break
    else:
        return results
    for i, result in enumerate(results):
        if isinstance(result, error) and not str(result).startswith("command #"):
            cmd = commands[i]
            what = f"command #{i + 1} ({type(cmd).__name__} {cmd.key[cut:]!r}) of the batch"
            try:
                named = type(result)(f"{what}: {result}")
            except TypeError:  # pragma: no cover - an error type with its own __init__
                continue
            named.__dict__.update(result.__dict__)
            named.__cause__ = result.__cause__ if result.__cause__ is not None else result
            named.__suppress_context__ = True
            results[i] = named
    return results


class PerLoop(Generic[T]):
    """One value per event loop (a client, a pool): made on first use in a loop, and closed
    when that loop shuts down.

    Connections belong to the loop that opened them, so a backend made at import time and
    used from a second ``asyncio.run`` (or pytest-asyncio's loop per test) needs new ones
    there. A watcher task per loop closes that loop's value when the loop cancels its
    remaining tasks at shutdown (``asyncio.run``, ``asyncio.Runner`` and pytest-asyncio do),
    so nothing is left attached to a closed loop. ``first`` is the value the first loop
    uses (made before any loop runs).

    Example::

        clients = PerLoop(lambda: make_client(), lambda c: c.aclose())
        client = clients.get()          # inside a coroutine: this loop's client
    """

    def __init__(
        self,
        make: Callable[[], T],
        close: Callable[[T], Awaitable[None]],
        first: T | None = None,
    ) -> None:
        self._make = make
        self._close = close
        self._spare = first
        # (loop, value) of the loop used last, read and replaced as one object.
        self._current: tuple[asyncio.AbstractEventLoop | None, T | None] = (None, None)
        self._by_loop: dict[asyncio.AbstractEventLoop, tuple[T, asyncio.Task[None]]] = {}

    def get(self) -> T:
        """The running loop's value (made now if this loop has none yet)."""
        loop = asyncio.get_running_loop()
        current = self._current
        if current[0] is loop:
            return current[1]  # type: ignore[return-value]
        return self._switch(loop)

    def _switch(self, loop: asyncio.AbstractEventLoop) -> T:
        for old in [lp for lp in self._by_loop if lp.is_closed()]:
            del self._by_loop[old]  # closed without cancelling its tasks: nothing to await
        entry = self._by_loop.get(loop)
        if entry is None:
            value = self._spare if self._spare is not None else self._make()
            self._spare = None
            watcher = loop.create_task(self._watch(loop, value))
            entry = self._by_loop[loop] = (value, watcher)
        self._current = (loop, entry[0])
        return entry[0]

    def _forget(self, loop: asyncio.AbstractEventLoop) -> tuple[T, asyncio.Task[None]] | None:
        entry = self._by_loop.pop(loop, None)
        if self._current[0] is loop:
            self._current = (None, None)
        return entry

    async def _watch(self, loop: asyncio.AbstractEventLoop, value: T) -> None:
        try:
            await loop.create_future()  # until the loop cancels its tasks at shutdown
        except asyncio.CancelledError:
            entry = self._by_loop.get(loop)
            if entry is not None and entry[0] is value:
                self._forget(loop)
                with contextlib.suppress(Exception):
                    await self._close(value)
            raise

    async def close(self) -> None:
        """Close the running loop's value (if it has one); the next use makes a new one."""
        loop = asyncio.get_running_loop()
        entry = self._forget(loop)
        if entry is None:
            return
        value, watcher = entry
        watcher.cancel()
        try:
            await self._close(value)
        finally:
            await asyncio.wait({watcher})


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"keys are str, not {type(key).__name__}: {key!r}")
    return key


def _check_value(value: Any) -> bytes:
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if not isinstance(value, bytes):
        raise TypeError(f"values are bytes, not {type(value).__name__}")
    return value


def check_scan_args(prefix: Any, count: Any) -> None:
    """Validate the arguments of `Backend.scan` (shared by the implementations)."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int, not {count!r}")


# The executor's entry point, which the raw byte API sends its batches through. The executor
# imports this module, so it is looked up on first use (then it costs a global read).
_run_batch: Callable[[Backend, Batch], Awaitable[list[Any]]] | None = None


def _load_executor() -> Callable[[Backend, Batch], Awaitable[list[Any]]]:
    global _run_batch
    from .._executor import execute_batch

    _run_batch = execute_batch
    return execute_batch


def _pairs(mapping: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    items = mapping.items() if isinstance(mapping, Mapping) else mapping
    return [(_check_key(k), _check_value(v)) for k, v in items]


class Backend(abc.ABC):
    """Base class of every backend.

    Subclasses set `capabilities` and implement `_execute`, `_clear` and `_close`.
    ``namespace`` is a prefix applied to every key this backend stores (``app:``; a ``:``
    or ``\\`` inside it is escaped with ``\\``, so no two namespaces overlap); `clear`
    removes only keys under it. ``auto_batch`` lets the executor merge concurrent queries
    into one batch. ``near_cache`` (a `NearCache`) answers reads of keys held in the process.

    Example::

        async with co.SimpleBackend(namespace="app") as backend:
            await backend.set("greeting", b"hello", ttl=60)
            assert await backend.get("greeting") == b"hello"
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    #: URL schemes this backend is built from by `backend_from_url`.
    url_schemes: ClassVar[tuple[str, ...]] = ()
    #: The `NearCache` in front of this backend, if it was given one.
    near_cache: NearCache | None = None

    def __init__(
        self,
        *,
        namespace: str = "",
        timeout: float | None = DEFAULT_TIMEOUT,
        auto_batch: bool = True,
        near_cache: NearCache | None = None,
    ) -> None:
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise ValueError(f"timeout must be a positive number of seconds or None: {timeout!r}")
        self.namespace = namespace
        self.timeout = timeout
        self.auto_batch = auto_batch
        self._prefix = namespace_prefix(namespace)
        if near_cache is not None:
            from .near import NearCache

            if not isinstance(near_cache, NearCache):
                raise TypeError(f"near_cache must be a NearCache, not {type(near_cache).__name__}")
            # The tracker only keeps a reference to the backend: it may be made before the
            # subclass has set up its connections.
            near_cache._bind(self, self._near_tracker(), local=self._near_local)
            self.near_cache = near_cache

    #: Whether this backend's storage belongs to this object alone (its own writes are then
    #: every change a near cache must follow).
    _near_local: ClassVar[bool] = False

    #: Whether a lone `Get` is answered in the process, without I/O, by `_read_now` (the
    #: executor then reads at once, without a batch, when nothing else is pending).
    _reads_now: ClassVar[bool] = False

    def _read_now(self, key: str) -> bytes | None:
        """The value of ``key`` (without the namespace) read at once, for a backend whose
        `_reads_now` is true; what `execute` of a batch of one `Get` would answer."""
        raise NotImplementedError

    #: Whether a lone command has a path of its own, `_read_one` for a `Get` and `_run_lone`
    #: for a read or a plain write (the executor awaits them instead of a batch of one
    #: command when nothing else is pending). A subclass that wraps `execute` or `_execute`
    #: sees every command: it does not take the path of the class it extends.
    _runs_one: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "_runs_one" not in own and ("execute" in own or "_execute" in own):
            cls._runs_one = False

    async def _read_one(self, key: str) -> bytes | None:
        """The value of ``key`` (without the namespace), for a backend whose `_runs_one` is
        true: what `execute` of a batch of one `Get` would answer (or raise)."""
        raise NotImplementedError

    async def _run_lone(self, command: Command) -> Any:
        """The result of ``command`` (its key without the namespace; never an `Incr` or a
        `Replace`), for a backend whose `_runs_one` is true: what `execute` of a batch of
        that one command would answer in its slot (or raise)."""
        raise NotImplementedError

    def _near_tracker(self) -> _Tracker | None:
        """The invalidation channel a near cache follows (None: there is none)."""
        return None

    async def _near_get(self, keys: list[str]) -> list[tuple[Any, float | None]]:
        """Read full ``keys`` for a near cache: per key ``(value, remaining)``, the value (or
        None, or a `BackendError`) and its remaining time to live in seconds (None: never
        expires; 0: unknown, not to be held). One round trip."""
        results = await self._execute(Batch(tuple(Get(k) for k in keys)))
        return [(r, 0.0) for r in results]

    # -- what a concrete backend implements ------------------------------------------------

    @abc.abstractmethod
    async def _execute(self, batch: Batch) -> list[Any]:
        """Run every command of ``batch`` in one round trip; keys are already prefixed."""

    @abc.abstractmethod
    async def _clear(self) -> None:
        """Remove every key under this backend's namespace (or everything without one)."""

    async def _close(self) -> None:  # noqa: B027 - optional hook
        """Release connections this backend created."""

    # -- the batch entry point --------------------------------------------------------------

    def full_key(self, key: str) -> str:
        """The key as stored: the namespace prefix plus ``key``."""
        return self._prefix + key

    async def execute(self, batch: Batch) -> list[Any]:
        """Run a batch; returns one result per command, a `BackendError` in a failed slot.

        This is the transport: the executor calls it for every round trip of queries and of
        the raw byte API. Called directly, a batch skips batch hooks, logging and automatic
        batching (backend tests and tools that need exactly one round trip do that).
        """
        if not batch.commands:
            return []
        prefix = self._prefix
        if prefix:
            batch = collector_paused(len(batch.commands), self._prefixed, batch, prefix)
        near = self.near_cache
        if near is not None:
            results = (await near.run(self, batch, self._execute))[0]
        else:
            results = await self._execute(batch)
        return name_slot_errors(batch.commands, results, len(prefix))

    async def _execute_near(self, batch: Batch) -> tuple[list[Any], int]:
        """`execute` through the near cache; also how many reads it answered."""
        near = self.near_cache
        if near is None or not batch.commands:
            return await self.execute(batch), 0
        prefix = self._prefix
        if prefix:
            batch = self._prefixed(batch, prefix)
        results, hits = await near.run(self, batch, self._execute)
        return name_slot_errors(batch.commands, results, len(prefix)), hits

    @staticmethod
    def _prefixed(batch: Batch, prefix: str) -> Batch:
        """``batch`` with ``prefix`` (the namespace) before every key."""
        new = tuple.__new__  # a command is a NamedTuple whose first item is its key
        commands = batch.commands
        if len(commands) == 1:  # the common lone command, without a generator
            c = commands[0]
            return new(Batch, ((new(type(c), (prefix + c[0], *c[1:])),), batch.atomic))
        kind = type(commands[0])
        if len(commands[0]) == 1 and {*map(type, commands)} == {kind}:
            # Commands of one kind that hold only their key (a multi-get): built in C.
            keys = zip([prefix + c[0] for c in commands])
            return new(Batch, (tuple(map(new, repeat(kind), keys)), batch.atomic))
        return new(
            Batch, (tuple([new(type(c), (prefix + c[0], *c[1:])) for c in commands]), batch.atomic)
        )

    async def _one(self, cmd: Command) -> Any:
        result = (await (_run_batch or _load_executor())(self, Batch((cmd,))))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def _many(self, cmds: tuple[Command, ...]) -> list[Any]:
        results = await (_run_batch or _load_executor())(self, Batch(cmds))
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    # -- raw byte API ---------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or ``None``."""
        result: bytes | None = await self._one(Get(_check_key(key)))
        return result

    async def has(self, key: str) -> bool:
        """Whether ``key`` is stored (and not expired)."""
        return bool(await self._one(Has(_check_key(key))))

    async def set(self, key: str, value: bytes, ttl: TTLArg = None) -> None:
        """Store ``value`` under ``key``, overwriting; ``ttl=None`` never expires."""
        await self._one(Set(_check_key(key), _check_value(value), normalize_ttl(ttl)))

    async def add(self, key: str, value: bytes, ttl: TTLArg = None) -> bool:
        """Store only if ``key`` is absent; returns whether it was written."""
        return bool(await self._one(Add(_check_key(key), _check_value(value), normalize_ttl(ttl))))

    async def replace(self, key: str, value: bytes, ttl: TTLArg = None) -> bool:
        """Store only if ``key`` is present; returns whether it was written."""
        cmd = Replace(_check_key(key), _check_value(value), normalize_ttl(ttl))
        return bool(await self._one(cmd))

    async def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it existed."""
        return bool(await self._one(Delete(_check_key(key))))

    async def incr(self, key: str, delta: int = 1, ttl: TTLArg = None) -> int:
        """Add ``delta`` to the integer under ``key`` (missing counts as 0); the new value.

        ``ttl`` applies only when the key is created by this call.
        """
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError(f"delta must be an int, not {delta!r}")
        result: int = await self._one(Incr(_check_key(key), delta, normalize_ttl(ttl)))
        return result

    async def decr(self, key: str, delta: int = 1, ttl: TTLArg = None) -> int:
        """Subtract ``delta`` from the integer under ``key`` (missing counts as 0)."""
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError(f"delta must be an int, not {delta!r}")
        return await self.incr(key, -delta, ttl)

    async def touch(self, key: str, ttl: TTLArg = None) -> bool:
        """Set the TTL of an existing key (``None`` removes expiry); whether it existed."""
        return bool(await self._one(Touch(_check_key(key), normalize_ttl(ttl))))

    async def set_many(
        self, mapping: Mapping[str, bytes] | Iterable[tuple[str, bytes]], ttl: TTLArg = None
    ) -> None:
        """Store every pair in one round trip."""
        t = normalize_ttl(ttl)
        await self._many(tuple(Set(k, v, t) for k, v in _pairs(mapping)))

    async def add_many(
        self, mapping: Mapping[str, bytes] | Iterable[tuple[str, bytes]], ttl: TTLArg = None
    ) -> list[bool]:
        """`add` for every pair in one round trip; a list of bools in order."""
        t = normalize_ttl(ttl)
        return [bool(r) for r in await self._many(tuple(Add(k, v, t) for k, v in _pairs(mapping)))]

    async def replace_many(
        self, mapping: Mapping[str, bytes] | Iterable[tuple[str, bytes]], ttl: TTLArg = None
    ) -> list[bool]:
        """`replace` for every pair in one round trip; a list of bools in order."""
        t = normalize_ttl(ttl)
        cmds = tuple(Replace(k, v, t) for k, v in _pairs(mapping))
        return [bool(r) for r in await self._many(cmds)]

    async def get_many(self, *keys: str) -> list[bytes | None]:
        """Values in key order, ``None`` for a miss, in one round trip."""
        return await self._many(tuple(Get(_check_key(k)) for k in keys))

    async def delete_many(self, *keys: str) -> int:
        """Remove every key; the number of keys that existed."""
        # The same key twice counts once: it existed once.
        unique = tuple(dict.fromkeys(_check_key(k) for k in keys))
        return sum(1 for r in await self._many(tuple(Delete(k) for k in unique)) if r)

    async def clear(self) -> None:
        """Remove every key under this backend's namespace (everything without one)."""
        near = self.near_cache
        if near is not None:
            near.clear()
        try:
            await self._clear()
        finally:
            if near is not None:
                near.clear()

    async def scan(self, prefix: str = "", count: int = 500) -> AsyncIterator[str]:
        """Every stored key that starts with ``prefix``, without the namespace prefix.

        Keys are yielded as given to `get` (``backend.get(key)`` reads them), only keys
        under this backend's namespace (every key of the store without one), and not
        those already expired. ``count`` is a hint of how many keys are fetched per step.
        Like Redis ``SCAN``, a key stored for the whole scan is yielded exactly once; a key
        written or deleted meanwhile may or may not be. Meant for operations tooling
        (``python -m acacheorm stats``/``migrate``), not for the request path: it walks
        the whole keyspace.

        Backends that cannot list their keys raise `NotImplementedError` when iterated.

        Example::

            async for key in backend.scan("user:"):
                print(key, await backend.get(key))
        """
        check_scan_args(prefix, count)
        raise NotImplementedError(
            f"{type(self).__name__} cannot enumerate its keys: scan() is not implemented "
            "for this backend"
        )
        yield ""  # pragma: no cover - makes this an async generator, like the overrides

    # -- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        """Close connections this backend created (never a client it was given)."""
        near = self.near_cache
        try:
            if near is not None:
                await near._close()
        finally:
            await self._close()

    aclose = close

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        ns = f" namespace={self.namespace!r}" if self.namespace else ""
        return f"<{type(self).__name__}{ns}>"
