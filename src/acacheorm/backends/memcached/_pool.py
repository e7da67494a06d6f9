"""Connections to one memcached node: a small pool of its own, and the reads the protocol
asks for (`_protocol` parses the bytes; this module waits for them).

A `Connection` is an asyncio protocol holding what the server sent and not yet read. A read
parses everything already received in one go (a multi-key ``get`` reply of ten thousand
values is one loop over the buffer, not a wait per line) and waits only when the bytes it
needs have not arrived. The socket is read 64 KiB at a time, not in asyncio's 256 KiB
(see `read_less`). The deadline of an exchange is the connection's own timer, armed
once and moved on lazily, rather than a timeout context per command.

A connection goes back to the pool only after a clean exchange: a request that fails, times
out or is cancelled closes its connection, so a late reply can never reach the next caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator

from ..base import PerLoop, read_less
from ._protocol import _Reply, parse_reply, parse_values

_NO_DEADLINE = math.inf


class Connection(asyncio.Protocol):
    """One connection to a memcached node: `write` requests, then read replies in order.

    ``deadline`` (event loop time) bounds every wait for bytes: past it the waiting read
    raises `TimeoutError` (the exchange's owner then closes the connection). It is set per
    exchange; `math.inf` means none.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._data = b""  # received bytes; those before `_pos` were read
        self._pos = 0
        self._chunks: list[bytes] = []  # received after `_data`, not joined yet
        self._chunked = 0  # bytes in `_chunks`
        self._want = 0  # the waiter wakes when this many unread bytes are in
        self._waiter: asyncio.Future[None] | None = None
        self._lost: BaseException | None = None  # why nothing more will arrive
        self.deadline = _NO_DEADLINE
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        read_less(transport)

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._chunked += len(data)
        waiter = self._waiter
        if (
            waiter is not None
            and not waiter.done()
            and len(self._data) - self._pos + self._chunked >= self._want
        ):
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self._end(None)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _end(self, exc: BaseException | None) -> None:
        if self._lost is None:
            self._lost = exc or ConnectionResetError("memcached closed the connection")
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(self._lost)

    # -- use --------------------------------------------------------------------------------

    def usable(self) -> bool:
        """Open, and the server has not closed its side."""
        transport = self._transport
        return transport is not None and not transport.is_closing() and self._lost is None

    def write(self, data: bytes) -> None:
        # No drain: memcached answers while we write, and waiting for the write buffer to
        # empty first could deadlock a large pipeline whose replies fill both socket buffers.
        assert self._transport is not None
        self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _read_to(self, pos: int) -> None:
        """Mark what is before ``pos`` (in the buffer `_buffer` returned) as read."""
        if pos == len(self._data):
            self._data = b""  # all read: do not keep a large reply alive
            self._pos = 0
        else:
            self._pos = pos

    def drained(self) -> bool:
        """Whether every byte received has been read (a clean exchange leaves none)."""
        return self._pos == len(self._data) and not self._chunks

    def _buffer(self) -> tuple[bytes, int]:
        """Every byte received and not read yet, as ``(data, start)``."""
        if self._chunks:
            chunks = self._chunks
            if self._pos < len(self._data):
                chunks.insert(0, self._data[self._pos :])
            self._data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._pos = 0
            self._chunks = []
            self._chunked = 0
        return self._data, self._pos

    async def _wait(self, want: int) -> None:
        """Until ``want`` unread bytes are in (the caller has seen fewer)."""
        if self._lost is not None:
            raise ConnectionResetError("memcached closed the connection") from self._lost
        self._want = want
        waiter = self._waiter = self._loop.create_future()
        deadline = self.deadline
        if deadline != _NO_DEADLINE:
            timer = self._timer
            if timer is None or deadline < self._timer_at:
                if timer is not None:
                    timer.cancel()
                self._timer_at = deadline
                self._timer = self._loop.call_at(deadline, self._on_timer)
        try:
            await waiter
        finally:
            self._waiter = None

    def _on_timer(self) -> None:
        """The deadline timer: it may have been armed for an earlier exchange, whose
        deadline came sooner; then it is armed again for the current one."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nothing waits: the next wait arms it again
        if self.deadline <= self._timer_at:
            waiter.set_exception(TimeoutError())
        elif self.deadline != _NO_DEADLINE:
            self._timer_at = self.deadline
            self._timer = self._loop.call_at(self.deadline, self._on_timer)

    async def read_values(self) -> dict[bytes, bytes]:
        """The reply to a classic multi-key ``get``: key -> value of each key found."""
        values: dict[bytes, bytes] = {}
        while True:
            data, pos = self._buffer()
            pos, need = parse_values(data, pos, values)
            self._read_to(pos)
            if not need:
                return values
            await self._wait(need - pos)

    async def read_value(self, key: bytes) -> bytes | None:
        """The reply to a one-key ``get`` of ``key``, sent just now: its value or None.
        Waits first, without parsing, for the shortest reply (``END``) to arrive."""
        values: dict[bytes, bytes] = {}
        want = 5  # unread bytes needed before parsing can get further
        while True:
            if len(self._data) - self._pos + self._chunked < want:
                await self._wait(want)
            data, pos = self._buffer()
            pos, need = parse_values(data, pos, values)
            self._read_to(pos)
            if not need:
                return values.get(key)
            want = need - pos

    def take_reply(self) -> _Reply | None:
        """The next meta reply if it has all arrived, else None (nothing is read then)."""
        data, pos = self._buffer()
        reply, end = parse_reply(data, pos)
        if reply is not None:
            self._read_to(end)
        return reply

    async def read_reply(self) -> _Reply:
        """One meta reply (with its value, if it has one)."""
        while True:
            data, pos = self._buffer()
            reply, end = parse_reply(data, pos)
            if reply is not None:
                self._read_to(end)
                return reply
            await self._wait(end - pos)

    async def read_replies(self, count: int) -> list[_Reply]:
        """The next ``count`` meta replies, parsed as they arrive, all at once."""
        replies: list[_Reply] = []
        if not count:
            return replies
        append = replies.append
        while True:
            data, pos = self._buffer()
            while True:
                reply, end = parse_reply(data, pos)
                if reply is None:
                    break
                append(reply)
                pos = end
                if len(replies) == count:
                    self._read_to(pos)
                    return replies
            self._read_to(pos)
            await self._wait(end - pos)

    async def readline(self) -> bytes:
        """One line, up to and including its LF."""
        while True:
            data, pos = self._buffer()
            end = data.find(b"\n", pos)
            if end >= 0:
                self._read_to(end + 1)
                return data[pos : end + 1]
            await self._wait(len(data) - pos + 1)


class Pool:
    """At most ``size`` connections to ``host:port``, opened when first needed.

    `take` hands out an idle connection at once when one is free; `acquire` also waits
    while all are in use, first come first served. `release` keeps a connection for the
    next caller only when told it is clean, and closes it otherwise.
    """

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host = host
        self.port = port
        self._free = size  # slots not in use
        self._waiters: deque[asyncio.Future[None]] = deque()  # for a slot, in order
        self._idle: deque[Connection] = deque()
        self._busy = 0

    def size(self) -> int:
        """Connections open now: idle plus in use."""
        return len(self._idle) + self._busy

    def take(self) -> Connection | None:
        """An idle connection, without waiting; None when there is none to take now."""
        if self._free and not self._waiters:
            idle = self._idle
            while idle:
                conn = idle.pop()
                if conn.usable():
                    self._free -= 1
                    self._busy += 1
                    return conn
                conn.close()  # the server closed it while it was idle
        return None

    async def acquire(self, deadline: float = _NO_DEADLINE) -> Connection:
        """A connection (idle, or opened now), waiting until ``deadline`` (loop time) at
        most; past it, `TimeoutError`."""
        if self._free and not self._waiters:
            self._free -= 1
        else:
            slot = asyncio.get_running_loop().create_future()
            self._waiters.append(slot)
            try:
                if deadline != _NO_DEADLINE:
                    async with asyncio.timeout_at(deadline):
                        await slot
                else:
                    await slot
            except BaseException:
                if slot.done() and not slot.cancelled():
                    self._hand_on()  # handed a slot while leaving: pass it on
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(slot)
                raise
        try:
            idle = self._idle
            while idle:
                conn = idle.pop()
                if conn.usable():
                    self._busy += 1
                    return conn
                conn.close()  # the server closed it while it was idle
            loop = asyncio.get_running_loop()
            if deadline != _NO_DEADLINE:
                async with asyncio.timeout_at(deadline):
                    _, conn = await loop.create_connection(
                        lambda: Connection(loop), self.host, self.port
                    )
            else:
                _, conn = await loop.create_connection(
                    lambda: Connection(loop), self.host, self.port
                )
        except BaseException:
            self._hand_on()
            raise
        self._busy += 1
        return conn

    def _hand_on(self) -> None:
        """A slot is free: to the first caller waiting for one, or back to the pool."""
        waiters = self._waiters
        while waiters:
            slot = waiters.popleft()
            if not slot.done():
                slot.set_result(None)
                return
        self._free += 1

    def release(self, conn: Connection, clean: bool) -> None:
        self._busy -= 1
        if clean and conn.usable() and conn.drained():
            conn.deadline = _NO_DEADLINE
            self._idle.append(conn)
        else:
            conn.close()
        self._hand_on()

    async def clear(self) -> None:
        """Close the idle connections (those in use close when they come back dirty)."""
        while self._idle:
            self._idle.pop().close()


class Node:
    """One memcached server: its address, its pools (one per event loop) and a round-trip
    counter."""

    def __init__(self, host: str, port: int, weight: int, pool_size: int) -> None:
        self.host = host
        self.port = port
        self.weight = weight
        self.pool_size = pool_size

        def make() -> Pool:
            return Pool(host, port, pool_size)

        # A pool per event loop (its connections belong to the loop that opened them).
        self._pools: PerLoop[Pool] = PerLoop(make, Pool.clear, make())
        self.round_trips = 0
        self.checked = False
        self._generation = 0

    @property
    def name(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def pool(self) -> Pool:
        """The running event loop's pool."""
        return self._pools.get()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection that goes back to the pool only after a clean exchange.

        Any exit but a normal one (an error, a timeout, a cancellation) closes it: it may
        have a request in flight, whose late reply the next caller would read.
        """
        generation = self._generation
        pool = self._pools.get()
        conn = await pool.acquire()
        clean = False
        try:
            yield conn
            clean = True
        finally:
            pool.release(conn, clean and generation == self._generation)

    async def close(self) -> None:
        self._generation += 1  # connections in use now are closed when they come back
        await self._pools.close()


def strip_line(line: bytes) -> bytes:
    """A line as `Connection.readline` returns it, without its CRLF."""
    if not line.endswith(b"\r\n"):
        raise ValueError(f"bad line from memcached: {line!r}")
    return line[:-2]


async def read_line(conn: Connection) -> bytes:
    return strip_line(await conn.readline())


async def read_dump_line(conn: Connection) -> bytes:
    """A line of ``lru_crawler metadump`` output: those end in a bare LF, END in CRLF."""
    return (await conn.readline()).rstrip(b"\r\n")
