"""Connections to one memcached node: a small pool of its own, and the reads the protocol
asks for (`_protocol` says what to read; this module reads it).

A connection goes back to the pool only after a clean exchange: a request that fails, times
out or is cancelled closes its connection, so a late reply can never reach the next caller.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import NamedTuple

from ..base import PerLoop
from ._protocol import _Reply, reply_head, strip_line, value_head, with_value


class Connection(NamedTuple):
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class Pool:
    """At most ``size`` connections to ``host:port``, opened when first needed.

    `acquire` waits while all are in use; `release` keeps a connection for the next caller
    only when told it is clean, and closes it otherwise.
    """

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host = host
        self.port = port
        self._slots = asyncio.Semaphore(size)
        self._idle: deque[Connection] = deque()
        self._busy = 0

    def size(self) -> int:
        """Connections open now: idle plus in use."""
        return len(self._idle) + self._busy

    async def acquire(self) -> Connection:
        await self._slots.acquire()
        try:
            while self._idle:
                conn = self._idle.pop()
                if not conn.writer.is_closing() and not conn.reader.at_eof():
                    self._busy += 1
                    return conn
                conn.writer.close()  # the server closed it while it was idle
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except BaseException:
            self._slots.release()
            raise
        self._busy += 1
        return Connection(reader, writer)

    def release(self, conn: Connection, clean: bool) -> None:
        self._busy -= 1
        if clean and not conn.writer.is_closing():
            self._idle.append(conn)
        else:
            conn.writer.close()
        self._slots.release()

    async def clear(self) -> None:
        """Close the idle connections (those in use close when they come back dirty)."""
        while self._idle:
            self._idle.pop().writer.close()


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


async def read_line(reader: asyncio.StreamReader) -> bytes:
    return strip_line(await reader.readline())


async def read_dump_line(reader: asyncio.StreamReader) -> bytes:
    """A line of ``lru_crawler metadump`` output: those end in a bare LF, END in CRLF."""
    line = await reader.readline()
    if not line.endswith(b"\n"):
        raise ConnectionResetError("memcached closed the connection")
    return line.rstrip(b"\r\n")


async def read_reply(reader: asyncio.StreamReader) -> _Reply:
    reply, more = reply_head(await read_line(reader))
    if more:
        return with_value(reply, await reader.readexactly(more))
    return reply


async def read_values(reader: asyncio.StreamReader) -> dict[bytes, bytes]:
    """The reply to a classic multi-key ``get``."""
    values: dict[bytes, bytes] = {}
    while True:
        head = value_head(await read_line(reader))
        if head is None:
            return values
        key, more = head
        values[key] = (await reader.readexactly(more))[:-2]
