"""A fault-injecting TCP proxy for the test suite: client ⇄ proxy (127.0.0.1, free port) ⇄ a
real server, with faults switched on and off while connections are open.

Faults (one at a time; `clear` ends any of them):

- `latency` — every reply chunk from the server reaches the client ``seconds`` later (a
  delay line: chunks keep their order and their spacing, they are not serialised behind
  each other's delays).
- `drop` — every open connection is cut (RST) and every new one is accepted and cut at once.
- `half_send` — the next reply chunk on each connection is forwarded only in part (its
  first half), then the connection is closed (``then="close"``) or held (``then="hold"``):
  nothing more reaches the client until the fault clears, and then the rest of that reply
  and everything after it arrive late, as from a server that stalled mid-write.
- `pause` — connections are accepted but nothing is forwarded in either direction until the
  fault clears; then everything held flows on (late replies included), as after SIGCONT.
- `lose_reply` — once: the next request chunk that contains ``match`` is forwarded (the
  server runs it), and the reply that follows on that connection is dropped and the
  connection cut, as when a link fails after the server ran a command and before its reply
  arrived. The fault then clears itself, so a client that sends the request again (on a new
  connection) reaches the server.

Late bytes after `clear` are the point: a client that timed out and kept using the same
connection would read them as the reply to its next request.

The proxy is bounded: it closes itself ``lifetime`` seconds after `start` (every wait inside
it ends then), and `close` (or leaving ``async with``) aborts every connection and awaits
every task it started. Nothing in it sleeps to synchronise; the only timed waits are the
latency fault itself and the lifetime bound.

Example::

    async with FaultProxy(("127.0.0.1", 6379)) as proxy:
        backend = co.RedisBackend(f"redis://127.0.0.1:{proxy.port}/0", timeout=0.5)
        proxy.pause()
        ...  # calls fail with BackendUnavailable
        proxy.clear()
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

HOST = "127.0.0.1"
CHUNK = 65536

Mode = Literal["none", "latency", "drop", "half_close", "half_hold", "pause", "lose_reply"]


@dataclass
class ProxyStats:
    """What the proxy did, so a test can check that a fault really bit."""

    accepted: int = 0  # client connections accepted
    dropped: int = 0  # connections cut by `drop`
    cut: int = 0  # replies forwarded only in part by `half_send`
    held: int = 0  # chunks held back by `pause` or a held `half_send`
    delayed: int = 0  # chunks delayed by `latency`
    late: int = 0  # held chunks forwarded after the fault cleared
    lost: int = 0  # replies dropped by `lose_reply` (their request was forwarded)
    faults: list[str] = field(default_factory=list)  # every fault switched on, in order


class _Link:
    """One proxied connection: the client side, the server side, and their pumps."""

    __slots__ = (
        "client_r",
        "client_w",
        "cut",
        "delay_line",
        "delay_wake",
        "lose_next",
        "server_r",
        "server_w",
    )

    def __init__(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        server_r: asyncio.StreamReader,
        server_w: asyncio.StreamWriter,
    ) -> None:
        self.client_r = client_r
        self.client_w = client_w
        self.server_r = server_r
        self.server_w = server_w
        self.cut = False  # this connection already had a reply cut by half_send
        self.lose_next = False  # lose_reply armed: the next reply chunk is dropped
        self.delay_line: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.delay_wake = asyncio.Event()

    def abort(self) -> None:
        for w in (self.client_w, self.server_w):
            w.transport.abort()


class FaultProxy:
    """A TCP proxy in front of ``upstream`` (host, port) with switchable faults."""

    def __init__(
        self, upstream: tuple[str, int], *, lifetime: float = 600.0, name: str = "proxy"
    ) -> None:
        self.upstream = upstream
        self.lifetime = lifetime
        self.name = name
        self.port = 0
        self.mode: Mode = "none"
        self.latency_seconds = 0.0
        self.lose_match = b""
        self.stats = ProxyStats()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()  # set whenever nothing is held back
        self._flowing.set()
        self._closed = False
        self._expiry: asyncio.TimerHandle | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(self.lifetime, self._expire)

    def _expire(self) -> None:
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self.close())
        self._tasks.add(task)  # close() skips awaiting itself
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop listening, cut every connection, await every task (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        self._flowing.set()  # release every held pump; they see _closed and stop
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        me = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0)  # aborted transports finish closing on the next iteration

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- faults -------------------------------------------------------------------------------

    def latency(self, seconds: float) -> None:
        """Delay every reply chunk by ``seconds``."""
        self._switch("latency")
        self.latency_seconds = seconds

    def drop(self) -> None:
        """Cut every connection now and every new one as it comes."""
        self._switch("drop")
        for link in list(self._links):
            self.stats.dropped += 1
            self._close_link(link, abort=True)

    def half_send(self, then: Literal["close", "hold"] = "close") -> None:
        """Forward only the first half of the next reply chunk of each connection, then
        close the connection or hold it until `clear`."""
        self._switch("half_close" if then == "close" else "half_hold")
        for link in self._links:
            link.cut = False
        self._flowing.clear()

    def lose_reply(self, match: bytes) -> None:
        """Once: forward the next request chunk containing ``match``, then drop the reply to
        it and cut that connection (the request ran; its reply never arrives)."""
        self._switch("lose_reply")
        self.lose_match = match

    def pause(self) -> None:
        """Hold everything, both ways, until `clear`."""
        self._switch("pause")
        self._flowing.clear()

    def clear(self) -> None:
        """End the fault: held data flows on, new chunks are not delayed."""
        self.mode = "none"
        self.latency_seconds = 0.0
        self._flowing.set()

    @contextlib.contextmanager
    def fault(self, kind: str, **params: float) -> Iterator[FaultProxy]:
        """``with proxy.fault("pause"): ...`` — switched on inside, cleared on the way out.

        ``kind`` is one of ``latency`` (``seconds=``), ``drop``, ``half_close``,
        ``half_hold`` or ``pause``.
        """
        if kind == "latency":
            self.latency(params["seconds"])
        elif kind == "drop":
            self.drop()
        elif kind == "half_close":
            self.half_send("close")
        elif kind == "half_hold":
            self.half_send("hold")
        elif kind == "pause":
            self.pause()
        else:
            raise ValueError(f"unknown fault {kind!r}")
        try:
            yield self
        finally:
            self.clear()

    def _switch(self, mode: Mode) -> None:
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        self.clear()
        self.mode = mode
        self.stats.faults.append(mode)

    # -- connections --------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._writers.add(client_w)
        self.stats.accepted += 1
        if self._closed or self.mode == "drop":
            self.stats.dropped += int(not self._closed)
            client_w.transport.abort()
            self._writers.discard(client_w)
            return
        # Connecting upstream is done in a tracked task, so close() can end it.
        self._spawn(self._connect(client_r, client_w))

    async def _connect(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        try:
            async with asyncio.timeout(10):
                server_r, server_w = await asyncio.open_connection(*self.upstream)
        except (OSError, TimeoutError):
            client_w.transport.abort()
            self._writers.discard(client_w)
            return
        self._writers.add(server_w)
        link = _Link(client_r, client_w, server_r, server_w)
        if self._closed or self.mode == "drop":
            self._close_link(link, abort=True)
            return
        self._links.add(link)
        self._spawn(self._pump_requests(link))
        self._spawn(self._pump_replies(link))
        self._spawn(self._deliver(link))

    def _close_link(self, link: _Link, *, abort: bool) -> None:
        self._links.discard(link)
        link.delay_wake.set()
        for w in (link.client_w, link.server_w):
            if abort:
                w.transport.abort()
            else:
                w.close()  # flushes what was written first
        # A closed transport needs no more tracking: asyncio finishes it on its own.
        self._writers.discard(link.client_w)
        self._writers.discard(link.server_w)

    async def _hold(self) -> bool:
        """Wait until nothing is held back; False if the proxy closed meanwhile."""
        if not self._flowing.is_set():
            await self._flowing.wait()  # set by clear() or close(), at the latest at expiry
        return not self._closed

    async def _pump_requests(self, link: _Link) -> None:
        """client → server; held while paused."""
        try:
            while True:
                data = await link.client_r.read(CHUNK)
                if not data or self._closed:
                    break
                if self.mode == "pause":
                    self.stats.held += 1
                    if not await self._hold():
                        break
                    self.stats.late += 1
                elif self.mode == "lose_reply" and self.lose_match in data:
                    self.clear()  # once
                    link.lose_next = True
                link.server_w.write(data)
                await link.server_w.drain()
        except OSError:
            pass
        finally:
            self._close_link(link, abort=True)

    async def _pump_replies(self, link: _Link) -> None:
        """server → client, through the faults, into the link's delay line."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await link.server_r.read(CHUNK)
                if not data or self._closed:
                    break
                if link.lose_next:
                    self.stats.lost += 1
                    link.abort()  # the reply never reaches the client
                    break
                mode = self.mode
                if mode == "pause":
                    self.stats.held += 1
                    if not await self._hold():
                        break
                    self.stats.late += 1
                elif mode in ("half_close", "half_hold") and not link.cut:
                    link.cut = True
                    self.stats.cut += 1
                    half = len(data) // 2
                    self._queue(link, loop.time(), data[:half])
                    if mode == "half_close":
                        break
                    self.stats.held += 1
                    if not await self._hold():
                        break
                    self.stats.late += 1
                    data = data[half:]
                if self.latency_seconds > 0:
                    self.stats.delayed += 1
                self._queue(link, loop.time() + self.latency_seconds, data)
        except OSError:
            pass
        # The deliverer closes the connection once it has written what came before.
        self._queue(link, loop.time(), None)

    @staticmethod
    def _queue(link: _Link, due: float, data: bytes | None) -> None:
        link.delay_line.append((due, data))
        link.delay_wake.set()

    async def _deliver(self, link: _Link) -> None:
        """The only writer to the client: each chunk when it is due, in order; ``None`` closes
        the connection after everything before it was written."""
        loop = asyncio.get_running_loop()
        try:
            while link in self._links and not self._closed:
                if not link.delay_line:
                    link.delay_wake.clear()
                    await link.delay_wake.wait()
                    continue
                due, data = link.delay_line[0]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)  # the latency fault itself
                    continue
                link.delay_line.popleft()
                if data is None:
                    break
                link.client_w.write(data)
                await link.client_w.drain()
        except OSError:
            pass
        finally:
            self._close_link(link, abort=False)
