"""The backend interface: bytes, keys and TTLs in batches; never models.

A concrete backend implements `Backend._execute` (one round trip for a whole `Batch`),
`Backend._clear` and `Backend._close`. Everything else, the raw byte API included, is built
here on top of those, so every backend behaves alike.
"""

from __future__ import annotations

import abc
import datetime
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any, ClassVar, Self

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

TTLArg = int | float | datetime.timedelta | None

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


def _pairs(mapping: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    items = mapping.items() if isinstance(mapping, Mapping) else mapping
    return [(_check_key(k), _check_value(v)) for k, v in items]


class Backend(abc.ABC):
    """Base class of every backend.

    Subclasses set `capabilities` and implement `_execute`, `_clear` and `_close`.
    ``namespace`` is a prefix applied to every key this backend stores; `clear` removes only
    keys under it. ``auto_batch`` lets the executor merge concurrent queries into one batch.

    Example::

        async with co.SimpleBackend(namespace="app") as backend:
            await backend.set("greeting", b"hello", ttl=60)
            assert await backend.get("greeting") == b"hello"
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    #: URL schemes this backend is built from by `backend_from_url`.
    url_schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        namespace: str = "",
        timeout: float | None = DEFAULT_TIMEOUT,
        auto_batch: bool = True,
    ) -> None:
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise ValueError(f"timeout must be a positive number of seconds or None: {timeout!r}")
        self.namespace = namespace
        self.timeout = timeout
        self.auto_batch = auto_batch
        self._prefix = f"{namespace}:" if namespace else ""

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
        """Run a batch; returns one result per command, a `BackendError` in a failed slot."""
        if not batch.commands:
            return []
        prefix = self._prefix
        if prefix:
            new = tuple.__new__  # a command is a NamedTuple whose first item is its key
            batch = Batch(
                tuple(new(type(c), (prefix + c[0], *c[1:])) for c in batch.commands),
                batch.atomic,
            )
        return await self._execute(batch)

    async def _one(self, cmd: Command) -> Any:
        result = (await self.execute(Batch((cmd,))))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def _many(self, cmds: tuple[Command, ...]) -> list[Any]:
        results = await self.execute(Batch(cmds))
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
        await self._clear()

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
