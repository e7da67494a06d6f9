"""The executor: the one place where batches meet backends.

A query's plan is a generator (sans-I/O): it yields a step, the executor runs it and sends
back the results, until the plan returns its value. A step is a list of ``(backend, Batch)``
pairs, run concurrently (one round trip per backend), an `Emit` of a signal, a `Scan` page
of a key listing, a `Lock`/`Unlock` of per-key locks or a `Backoff` before a retry. The
plan decides *what* happens; the executor decides *how*: it holds the locks (and releases
whatever a plan still holds when it ends, however it ends) and picks the backoff pauses.
`drive` walks a plan with canned results instead, for tests.

Automatic batching: with ``backend.auto_batch`` on, batches submitted to one backend in the
same event-loop iteration are merged into one batch (one round trip) and each caller gets its
own slice of the results, its own per-command errors. The merge is flushed with
``loop.call_soon``, so a lone await waits one loop iteration, not a timer.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import random
import time
from asyncio import _get_running_loop, get_running_loop
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Sized
from itertools import repeat
from typing import Any, NamedTuple

from ._commands import Batch, Command, Get, Gets, Has, Incr, NotNative, Replace
from ._exceptions import AtomicityError
from ._signals import Signal
from ._types import collector_paused
from .backends.base import Backend, NothingRan, name_slot_errors

_new = tuple.__new__

logger = logging.getLogger("acacheorm")

# The reads whose result says hit or miss (for BatchEvent.hits/misses).
_LOOKUPS: frozenset[type] = frozenset({Get, Gets, Has})

Step = list[tuple[Backend, Batch]]


class Emit(NamedTuple):
    """A plan step that sends a signal for each instance, in order."""

    signal: Signal
    sender: type
    instances: list[Any]
    kwargs: dict[str, Any]


class Backoff(NamedTuple):
    """A plan step before retry number ``attempt`` (1 for the first retry) of a
    compare-and-swap that lost a race; the executor picks the pause (`backoff_seconds`)."""

    attempt: int


def backoff_seconds(attempt: int) -> float:
    """The pause before retry ``attempt``: none for the first two, then a random one
    (jitter) growing with the attempt, at most 50 ms."""
    if attempt < 3:
        return 0.0
    return random.uniform(0, min(0.05, 0.001 * 2 ** min(attempt, 6)))


class Lock(NamedTuple):
    """A plan step that takes this process's lock of each of ``keys`` on ``backend`` (in
    sorted order), held until an `Unlock` of them or the plan's end. Updates of one row
    from one process take turns this way, instead of fighting each other's compare-and-swap.
    A plan that holds a key already (a nested plan of the same row) takes it again freely."""

    backend: Backend
    keys: tuple[str, ...]


class Unlock(NamedTuple):
    """A plan step that releases the locks a `Lock` of the same keys took."""

    backend: Backend
    keys: tuple[str, ...]


class KeyListing:
    """A `Backend.scan` in progress, read one page at a time by `Scan` steps.

    The listing is opened by its first page and closed by the executor when the plan
    ends, however it ends.
    """

    def __init__(self, backend: Backend, prefix: str, page_size: int = 500) -> None:
        self.backend = backend
        self.prefix = prefix
        self.page_size = page_size
        self._keys: AsyncIterator[str] | None = None
        self.done = False

    async def next_page(self) -> list[str]:
        """Up to ``page_size`` more keys; an empty list once every key was listed."""
        if self.done:
            return []
        if self._keys is None:
            self._keys = aiter(self.backend.scan(self.prefix, self.page_size))
        page: list[str] = []
        while len(page) < self.page_size:
            try:
                page.append(await anext(self._keys))
            except StopAsyncIteration:
                self.done = True
                break
        return page

    async def aclose(self) -> None:
        """Stop the listing (it may be abandoned before its end)."""
        self.done = True
        keys, self._keys = self._keys, None
        aclose = getattr(keys, "aclose", None)
        if aclose is not None:
            await aclose()


class Scan(NamedTuple):
    """A plan step that reads the next page of a key listing; the plan receives the list
    of keys, empty once the listing is over."""

    listing: KeyListing


Plan = Generator["Step | Emit | Backoff | Lock | Unlock | Scan", Any, Any]


class BatchEvent(NamedTuple):
    """What a metrics hook receives after each round trip.

    Example::

        def hook(event: co.BatchEvent) -> None:
            print(event.backend, len(event.batch.commands), event.duration, event.merged)

        co.add_batch_hook(hook)
    """

    backend: Backend
    batch: Batch
    duration: float
    error: BaseException | None
    merged: int
    #: One result per command (None when the round trip failed): count hits and misses
    #: from the ``Get`` slots that hold ``None``.
    results: list[Any] | None = None
    #: Reads answered by the backend's near cache, without a round trip (all of them, and
    #: ``duration`` about zero, for a batch answered entirely in the process).
    near_hits: int = 0

    @property
    def hits(self) -> int:
        """Reads (``Get``/``Gets``/``Has``) that found their key."""
        return sum(
            1
            for c, r in zip(self.batch.commands, self.results or (), strict=False)
            if type(c) in _LOOKUPS and r not in (None, False) and not isinstance(r, BaseException)
        )

    @property
    def misses(self) -> int:
        """Reads (``Get``/``Gets``/``Has``) that did not find their key."""
        return sum(
            1
            for c, r in zip(self.batch.commands, self.results or (), strict=False)
            if type(c) in _LOOKUPS and r in (None, False)
        )


_hooks: list[Callable[[BatchEvent], None]] = []


def add_batch_hook(hook: Callable[[BatchEvent], None]) -> Callable[[BatchEvent], None]:
    """Call ``hook(event)`` after every round trip (for metrics: OpenTelemetry, Prometheus).

    ``event`` has ``backend``, ``batch`` (its ``commands``), ``duration`` (seconds),
    ``error`` (or None), ``merged`` (how many queries shared the round trip), ``results``
    and the ``hits``/``misses`` among its reads (``near_hits``: those answered by a near
    cache, also for a batch that needed no round trip). A hook that raises is logged and ignored:
    metrics never fail a query.

    Example::

        co.add_batch_hook(lambda e: histogram.observe(e.duration))
    """
    _hooks.append(hook)
    return hook


def remove_batch_hook(hook: Callable[[BatchEvent], None]) -> None:
    """Remove a hook added with `add_batch_hook`.

    Example::

        co.remove_batch_hook(hook)
    """
    _hooks.remove(hook)


def _report(
    backend: Backend,
    batch: Batch,
    start: float,
    error: BaseException | None,
    merged: int,
    results: list[Any] | None,
    near_hits: int,
) -> None:
    duration = time.perf_counter() - start
    logger.debug(
        "%r %r: %d commands, %d merged, %.3f ms%s%s",
        backend,
        batch,
        len(batch.commands),
        merged,
        duration * 1000,
        f", {near_hits} from the near cache" if near_hits else "",
        f", failed: {error!r}" if error else "",
    )
    event = BatchEvent(backend, batch, duration, error, merged, results, near_hits)
    for hook in list(_hooks):
        try:
            hook(event)
        except Exception:
            logger.exception("acacheorm batch hook %r failed; ignored", hook)


async def _execute(backend: Backend, batch: Batch, merged: int = 1) -> list[Any]:
    if not _hooks and not logger.isEnabledFor(logging.DEBUG):
        return await backend.execute(batch)
    start = time.perf_counter()
    error: BaseException | None = None
    results: list[Any] | None = None
    near_hits = 0
    try:
        if backend.near_cache is not None:
            results, near_hits = await backend._execute_near(batch)
        else:
            results = await backend.execute(batch)
        return results
    except BaseException as exc:
        error = exc
        raise
    finally:
        _report(backend, batch, start, error, merged, results, near_hits)


class RowReads:
    """A batching window's entry for lone row reads joined one after the other
    (`read_joined`): the key of each row, its model's schema, the future its caller
    awaits, which answers the decoded row, and what a missing row answers (None, or the
    read whose ``_missing()`` error it raises). Each read is one ``Get(key)`` of the merged
    batch, built when the batch runs; the rows are decoded together, one `decode_many` per
    model. No object per read but its future, for the garbage collector's sake: a read is
    four items of one list (``items``, added with one call), taken apart once the window
    has closed."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        #: key, schema, future, missing, of each read in turn
        self.items: list[Any] = []

    @property
    def keys(self) -> list[str]:
        return self.items[0::4]

    @property
    def schemas(self) -> list[Any]:
        return self.items[1::4]

    @property
    def futures(self) -> list[asyncio.Future[Any]]:
        return self.items[2::4]

    @property
    def missing(self) -> list[Any]:
        return self.items[3::4]


#: A batching window's entry: a caller's batch and the future its caller awaits (None for
#: the first submitter, which runs the batch itself when alone), or `RowReads`.
_Entry = tuple[Batch, "asyncio.Future[Any] | None"] | RowReads


class _Coalescer:
    """Merges the batches submitted to one backend within one loop iteration.

    The first submitter opens a window and yields once (``sleep(0)``: one loop iteration,
    no timer); every batch submitted meanwhile joins it. Alone, the first submitter runs its
    batch itself (no task, no future). With company, the merged batch runs in its own task,
    so cancelling one caller never cancels the round trip the others wait for.
    """

    def __init__(self, backend: Backend, loop: asyncio.AbstractEventLoop) -> None:
        self.backend = backend
        self.loop = loop
        self.window: list[_Entry] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        #: The loop's queue of callbacks ready to run (asyncio's own loops), or None.
        self.ready: Sized | None = _ready_queue(loop)
        #: A new future of the loop: asyncio's Future class called directly where the loop's
        #: create_future is asyncio's own (the same future, without a Python frame per call).
        self.new_future: Callable[[], asyncio.Future[list[Any]]] = (
            functools.partial(asyncio.Future, loop=loop)
            if getattr(type(loop), "create_future", None) is asyncio.BaseEventLoop.create_future
            else loop.create_future
        )

    async def submit(self, batch: Batch) -> list[Any]:
        window = self.window
        if window is not None:
            fut: asyncio.Future[list[Any]] = self.new_future()
            window.append((batch, fut))
            return await fut
        window = self.window = [(batch, None)]
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            if self.window is window:
                self.window = None
            followers: list[_Entry] = [
                e
                for e in window[1:]
                if (
                    not all(f.cancelled() for f in e.futures)
                    if isinstance(e, RowReads)
                    else e[1] is not None and not e[1].cancelled()
                )
            ]
            if followers:
                self._spawn(followers)
            raise
        if self.window is window:
            self.window = None
        if len(window) == 1:
            return await _execute(self.backend, batch)
        own: asyncio.Future[list[Any]] = self.new_future()
        window[0] = (batch, own)
        self._spawn(window)
        return await own

    def close_window(self, window: list[_Entry]) -> None:
        """Close ``window`` (opened by `read_batched`, no task leading it) and run its
        merged batch in a task of its own, as `submit` does with company."""
        if self.window is window:
            self.window = None
        self._spawn(window)

    def _spawn(self, pending: list[_Entry]) -> None:
        task = self.loop.create_task(self._run(pending))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, pending: list[_Entry]) -> None:
        try:
            await self._run_merged(pending)
        finally:
            # A read answered on the query itself refers to its place in the window
            # (`_face_reads`): emptied, a window and its reads make no reference cycle, so
            # they and the rows they answered are freed as soon as their callers let go.
            for entry in pending:
                if isinstance(entry, RowReads):
                    entry.items.clear()

    async def _run_merged(self, pending: list[_Entry]) -> None:
        commands: list[Any] = []
        callers = len(pending)
        for entry in pending:
            if isinstance(entry, RowReads):
                keys = entry.keys
                commands.extend(map(_new, repeat(Get), zip(keys)))  # Get(key) each, in C
                callers += len(keys) - 1
            else:
                commands.extend(entry[0].commands)
        try:
            try:
                results = await _execute(self.backend, Batch(tuple(commands)), callers)
            except NothingRan:
                # Refused whole before any of it ran (SimpleBackend's max_entries): each
                # caller's batch on its own, so the refusal reaches only the one it concerns.
                await self._one_by_one(pending)
                return
        except BaseException as exc:
            for entry in pending:
                futs = entry.futures if isinstance(entry, RowReads) else (entry[1],)
                for fut in futs:
                    if fut is not None and not fut.done():
                        if isinstance(exc, asyncio.CancelledError):
                            fut.cancel()
                        else:
                            fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        # Row reads, by model: [futures, keys, payloads, missing], decoded together below.
        rows: dict[Any, tuple[list[Any], list[str], list[Any], list[Any]]] | None = None
        for entry in pending:
            if isinstance(entry, RowReads):
                keys, schemas, futs = entry.keys, entry.schemas, entry.futures
                end = start + len(keys)
                if rows is None:
                    rows = {}
                first = schemas[0]
                if schemas.count(first) == len(schemas):  # one model (the common case)
                    group = rows.get(first)
                    if group is None:
                        rows[first] = (futs, keys, results[start:end], entry.missing)
                    else:
                        group[0].extend(futs)
                        group[1].extend(keys)
                        group[2].extend(results[start:end])
                        group[3].extend(entry.missing)
                else:
                    reads = zip(schemas, keys, futs, results[start:end], entry.missing, strict=True)
                    for schema, key, fut, payload, missing in reads:
                        group = rows.get(schema)
                        if group is None:
                            group = rows[schema] = ([], [], [], [])
                        group[0].append(fut)
                        group[1].append(key)
                        group[2].append(payload)
                        group[3].append(missing)
                start = end
                continue
            batch, fut = entry
            end = start + len(batch.commands)
            if fut is not None and not fut.done():
                fut.set_result(results[start:end])
            start = end
        if rows is not None:
            for schema, (futs, keys, payloads, missing) in rows.items():
                _settle_rows(schema, futs, keys, payloads, missing)

    async def _one_by_one(self, pending: list[_Entry]) -> None:
        for entry in pending:
            if isinstance(entry, RowReads):
                reads = zip(entry.keys, entry.schemas, entry.futures, entry.missing, strict=True)
                for key, schema, waiter, missing in reads:
                    try:
                        results = await _execute(self.backend, Batch((Get(key),)))
                    except Exception as exc:
                        if not waiter.done():
                            waiter.set_exception(exc)
                        continue
                    _settle_rows(schema, [waiter], [key], results, [missing])
                continue
            batch, fut = entry
            try:
                results = await _execute(self.backend, batch)
            except Exception as exc:
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
                continue
            if fut is not None and not fut.done():
                fut.set_result(results)


def _settle_rows(
    schema: Any, futs: list[Any], keys: list[str], payloads: list[Any], missing: list[Any]
) -> None:
    """Answer the futures of row reads of one model: their rows decoded in one
    `decode_many`; a missing row answers None, or the error of its read's ``_missing()``
    where ``missing`` holds the read; where decoding fails (a slot's error, a payload that
    does not decode), each row on its own, so an error reaches only its own caller.

    Many rows are decoded and answered with the cyclic garbage collector paused, as
    `decode_many` pauses it for its own work: the instances and the callbacks the answers
    schedule (one per waiting task) make no reference cycles, and each would otherwise
    count towards a young collection that walks every object the waiting tasks hold
    (measured: fewer collections, less time per row). Nothing is awaited meanwhile."""
    collector_paused(len(futs), _answer_rows, schema, futs, keys, payloads, missing)


def _answer_rows(
    schema: Any, futs: list[Any], keys: list[str], payloads: list[Any], missing: list[Any]
) -> None:
    """`_settle_rows`, the collector left as it is."""
    try:
        decoded = schema.decode_many(keys, payloads)
    except Exception:
        for fut, key, payload, read in zip(futs, keys, payloads, missing, strict=True):
            if fut is None or fut.done():
                continue
            if payload is None:
                if read is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(read._missing())
            elif isinstance(payload, BaseException):
                fut.set_exception(payload)
            else:
                try:
                    row = schema.decode(key, payload)
                except Exception as exc:
                    fut.set_exception(exc)
                else:
                    fut.set_result(row)
        return
    for fut, row, read in zip(futs, decoded, missing, strict=True):
        if fut is not None and not fut.done():
            if row is None and read is not None:
                fut.set_exception(read._missing())
            else:
                fut.set_result(row)


def _ready_queue(loop: asyncio.AbstractEventLoop) -> Sized | None:
    """The queue of callbacks ready to run in this loop iteration, for asyncio's own loops
    (one object for the loop's life); None for any other loop (uvloop, ...), which keeps
    the batching window."""
    ready = getattr(loop, "_ready", None)
    return ready if isinstance(ready, collections.deque) else None


def _nothing_else_ready(loop: asyncio.AbstractEventLoop) -> bool:
    """True when no other callback is queued to run in this loop iteration, so no other task
    can submit a batch before this one's I/O: the batching window would only cost a loop
    iteration. Reads the ready queue of asyncio's own loops; any other loop (uvloop, ...)
    answers False, which keeps the window."""
    ready = _ready_queue(loop)
    return ready is not None and not ready


def _coalescer_of(backend: Backend, loop: asyncio.AbstractEventLoop) -> _Coalescer:
    """The backend's coalescer in ``loop``: one per backend and event loop, kept on the
    backend itself so it lives and dies with it."""
    coalescer: _Coalescer | None = backend.__dict__.get("_coalescer")
    if coalescer is None or coalescer.loop is not loop:
        coalescer = backend.__dict__["_coalescer"] = _Coalescer(backend, loop)
    return coalescer


async def execute_batch(backend: Backend, batch: Batch) -> list[Any]:
    """Run one batch on one backend, merged with concurrent ones where allowed. A batch
    with no command is no round trip: nothing is sent and no hook hears of it.

    Commands the backend's `Capabilities` say it cannot run natively (a negative `Incr`,
    a ``Replace(..., KEEP_TTL)``), and those it answers with `NotNative`, are run as plans
    of plain commands (`acacheorm._plans.emulation_plan`): each of their round trips is
    one more batch here, seen by hooks like any other."""
    if not batch.commands:
        return []
    caps = backend.capabilities
    if not (caps.negative_incr and caps.replace_keep_ttl) and _may_emulate(batch.commands):
        return await _emulating(backend, batch)
    # The hot path of every query, in one frame: no emulation to look for, then (unless a
    # near cache answers) straight to the transport, or through the batching window.
    if backend.near_cache is not None or batch.atomic or not backend.auto_batch:
        return await _execute_batch(backend, batch)
    loop = get_running_loop()
    # `_coalescer_of`, inlined (the hot path)
    coalescer: _Coalescer | None = backend.__dict__.get("_coalescer")
    if coalescer is None or coalescer.loop is not loop:
        coalescer = backend.__dict__["_coalescer"] = _Coalescer(backend, loop)
    window = coalescer.window
    if window is not None:  # join the open window (Coalescer.submit, inline)
        fut: asyncio.Future[list[Any]] = coalescer.new_future()
        window.append((batch, fut))
        return await fut
    ready = coalescer.ready
    if ready is None or ready:
        return await coalescer.submit(batch)
    # A lone await: nothing else is ready to run, so no other task can submit a batch
    # before this one's I/O, and a window would only cost a loop iteration.
    if _hooks or logger.isEnabledFor(logging.DEBUG):
        return await _execute(backend, batch)
    return await backend.execute(batch)


def _may_emulate(commands: tuple[Command, ...]) -> bool:
    """Whether ``commands`` hold a command a backend with partial `Capabilities` may not
    run natively: an `Incr` or a `Replace` (only they are emulated or answered with
    `NotNative`); a batch of reads and plain writes takes the hot path on every backend."""
    for command in commands:
        kind = type(command)
        if kind is Incr or kind is Replace:
            return True
    return False


def read_joined(
    backend: Backend, key: str, schema: Any, missing: Any = None
) -> asyncio.Future[Any] | None:
    """The future of a lone read of ``schema``'s row at ``key`` joined to the batching
    window open on ``backend`` in the running loop (in `RowReads`: ``Get(key)`` in the
    merged batch, as `execute_batch` would send it, without a coroutine); None when no
    window is open or the read would not join one (then run ``Batch((Get(key),))`` with
    `execute_batch`). Awaiting the future answers the decoded row, or raises the slot's
    error; a missing row answers None, or raises ``missing._missing()`` when ``missing``
    (the read) is given. Cancelling it leaves the merged round trip to the others."""
    coalescer: _Coalescer | None = backend.__dict__.get("_coalescer")
    if coalescer is None:
        return None
    window = coalescer.window
    if (
        window is None
        or backend.near_cache is not None
        or not backend.auto_batch
        or coalescer.loop is not _get_running_loop()
    ):
        return None
    fut: asyncio.Future[Any] = coalescer.new_future()
    # a row read joins the window's last entry when that is RowReads (reads keep their
    # place among the window's batches), else new RowReads at its end
    reads = window[-1] if window else None
    if reads.__class__ is not RowReads:
        reads = RowReads()
        window.append(reads)
    reads.items += (key, schema, fut, missing)
    return fut


def read_batched(backend: Backend, key: str, schema: Any, waiter: Any, missing: Any) -> bool:
    """Join a read of ``schema``'s row at ``key`` to the batching window open on
    ``backend`` in the running loop, or to one opened for it: that one closes at the next
    loop iteration (a callback, not a task waiting for it), when the merged batch runs in
    its own task, as the window of `_Coalescer.submit` does with company. The read is
    answered on ``waiter`` (an object with a future's ``done``, ``cancelled``, ``cancel``,
    ``set_result`` and ``set_exception``: the query itself), a missing row as in
    `read_joined` (``missing``). False where a read would not join a window (a near cache,
    ``auto_batch=False``): then the caller runs the read its usual way.

    This lets a read be answered with no task and no future of its own (`Query`'s future
    face, for ``asyncio.gather`` and friends): a thousand gathered reads cost one task, not
    a thousand."""
    if backend.near_cache is not None or not backend.auto_batch:
        return False
    loop = get_running_loop()
    # `_coalescer_of` and the joining of `read_joined`, inline (once per gathered read)
    coalescer: _Coalescer | None = backend.__dict__.get("_coalescer")
    if coalescer is None or coalescer.loop is not loop:
        coalescer = backend.__dict__["_coalescer"] = _Coalescer(backend, loop)
    window = coalescer.window
    if window is None:
        window = coalescer.window = []
        # Open through the next loop iteration, as a task's window is (its sleep(0)): the
        # tasks started along with this read (a gather of reads and coroutines) join it.
        loop.call_soon(loop.call_soon, coalescer.close_window, window)
    reads = window[-1] if window else None
    if reads.__class__ is not RowReads:
        reads = RowReads()
        window.append(reads)
    items = reads.items
    items += (key, schema, waiter, missing)
    # where it waits, so that a cancelled run can leave its place
    waiter._face_reads = items
    waiter._face_index = len(items) - 2  # its own: the third of the last four items
    return True


class _Gone:
    """What stands in a window's place of a read whose run was cancelled (`Query.cancel`):
    done, so the window answers nobody there."""

    @staticmethod
    def done() -> bool:
        return True

    cancelled = done

    @staticmethod
    def cancel(msg: Any = None) -> bool:
        return False

    @staticmethod
    def set_result(value: Any) -> None:
        pass

    @staticmethod
    def set_exception(exc: BaseException) -> None:
        pass


GONE = _Gone()


#: What `read_now` answers when the read must go through `execute_batch`.
LATER: Any = object()


def read_now(backend: Backend, key: str) -> Any:
    """The result of a lone ``Get(key)`` when the backend answers it in the process
    (`SimpleBackend`) and nothing else could join or see it: no other callback ready to
    run, no batching window open, no near cache, no batch hook, no debug logging; else
    `LATER` (then run the batch with `execute_batch`). The same answer as that batch, with
    no batch built and no coroutine to drive."""
    if not backend._reads_now or not _alone(backend):
        return LATER
    return backend._read_now(key)


def read_one(backend: Backend, key: str) -> Coroutine[Any, Any, bytes | None] | None:
    """A lone ``Get(key)`` as the backend's own one-key read (`Backend._read_one`) when it
    has one and nothing else could join or see it (as for `read_now`); else None (then run
    the batch with `execute_batch`). The same answer as that batch, with no batch built and
    no batch layers to pass through."""
    if not backend._runs_one or not _alone(backend):
        return None
    return backend._read_one(key)


def run_one(backend: Backend, command: Command) -> Coroutine[Any, Any, Any] | None:
    """A lone batch of ``command`` (a read or a plain write: never an `Incr` or a
    `Replace`, which may be emulated) as the backend's own one-command path
    (`Backend._run_lone`) when it has one and nothing else could join or see it (as for
    `read_now`); else None (then run the batch with `execute_batch`). The same result in
    its slot as that batch, with no batch layers to pass through."""
    if not backend._runs_one or not _alone(backend):
        return None
    return backend._run_lone(command)


def _alone(backend: Backend) -> bool:
    """Whether a lone read on ``backend`` now would run as it is, unseen: no near cache, no
    batching window open or other callback ready to run, no batch hook, no debug logging."""
    if backend.near_cache is not None:
        return False
    if backend.auto_batch:
        loop = get_running_loop()
        # `_coalescer_of`, inlined (the hot path of a lone read)
        coalescer: _Coalescer | None = backend.__dict__.get("_coalescer")
        if coalescer is None or coalescer.loop is not loop:
            coalescer = backend.__dict__["_coalescer"] = _Coalescer(backend, loop)
        ready = coalescer.ready
        if coalescer.window is not None or ready is None or ready:
            return False
    return not (_hooks or logger.isEnabledFor(logging.DEBUG))


async def _emulating(backend: Backend, batch: Batch) -> list[Any]:
    """`execute_batch` on a backend with commands it cannot run natively."""
    caps = backend.capabilities
    from ._plans import emulation_plan, needs_emulation

    if any(needs_emulation(caps, c) for c in batch.commands):
        return await _emulated(backend, batch)
    results = await _execute_batch(backend, batch)
    emulated = False
    for i, result in enumerate(results):
        if isinstance(result, NotNative):
            done = await run(emulation_plan(backend, result.redo, create=result.create))
            ok = result.result is not None and not isinstance(done, BaseException)
            results[i] = result.result if ok else done
            emulated = True
    return name_slot_errors(batch.commands, results) if emulated else results


async def _emulated(backend: Backend, batch: Batch) -> list[Any]:
    """``batch`` in order: runs of native commands as batches, each emulated command as
    its plan in between (so commands on one key keep their order)."""
    from ._plans import emulation_plan, needs_emulation

    caps = backend.capabilities
    if batch.atomic and len(batch.commands) > 1:
        raise AtomicityError(
            f"{type(backend).__name__} cannot run {batch!r} all-or-nothing: some of its "
            "commands are emulated with several round trips"
        )
    results: list[Any] = []
    native: list[Command] = []
    for command in batch.commands:
        if not needs_emulation(caps, command):
            native.append(command)
            continue
        if native:
            results.extend(await execute_batch(backend, Batch(tuple(native))))
            native = []
        results.append(await run(emulation_plan(backend, command)))
    if native:
        results.extend(await execute_batch(backend, Batch(tuple(native))))
    return name_slot_errors(batch.commands, results)


async def _execute_batch(backend: Backend, batch: Batch) -> list[Any]:
    near = backend.near_cache
    if near is not None and not batch.atomic:
        # Reads all held in the process: answered now, without a round trip or a yield.
        local = near.answer(backend._prefix, batch.commands)
        if local is not None:
            if _hooks or logger.isEnabledFor(logging.DEBUG):
                _report(backend, batch, time.perf_counter(), None, 1, local, len(local))
            return local
    if not backend.auto_batch or batch.atomic:
        return await _execute(backend, batch)
    loop = get_running_loop()
    coalescer = _coalescer_of(backend, loop)
    if coalescer.window is None and _nothing_else_ready(loop):
        return await _execute(backend, batch)  # a lone await: no window to wait for
    return await coalescer.submit(batch)


async def run_step(step: Step) -> list[list[Any]]:
    if len(step) == 1:
        backend, batch = step[0]
        return [await execute_batch(backend, batch)]
    return list(await asyncio.gather(*(execute_batch(b, batch) for b, batch in step)))


# The keys locked in this process: (event loop id, backend id, key) -> the waiters for it, in
# arrival order (None while nobody waits). A key absent from the table is free; its entry goes
# away with its last holder. An uncontended lock is one dict entry: no lock object, no future.
_key_locks: dict[tuple[int, int, str], deque[asyncio.Future[None]] | None] = {}


def lock_ident(backend: Backend, key: str) -> tuple[int, int, str]:
    """The table entry of ``key`` on ``backend`` in the running event loop."""
    return (id(asyncio.get_running_loop()), id(backend), key)


async def acquire_key(ident: tuple[int, int, str]) -> None:
    """Take the lock of a key (see `lock_ident`), waiting in turn for its holder."""
    locks = _key_locks
    if ident not in locks:
        locks[ident] = None
        return
    waiters = locks[ident]
    if waiters is None:
        waiters = locks[ident] = deque()
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiters.append(fut)
    try:
        await fut
    except asyncio.CancelledError:
        if fut.done() and not fut.cancelled():
            release_key(ident)  # handed over as this waiter was cancelled: pass it on
        raise


def release_key(ident: tuple[int, int, str]) -> None:
    """Give up the lock of a key: to its first waiter still waiting, else free it."""
    waiters = _key_locks.get(ident)
    while waiters:
        fut = waiters.popleft()
        if not fut.done():  # a waiter cancelled meanwhile is skipped
            fut.set_result(None)
            return
    _key_locks.pop(ident, None)


class Driver:
    """What one run of a plan holds: the key listings it opened and the key locks it took;
    `close` gives them all back."""

    def __init__(self) -> None:
        self.listings: list[KeyListing] = []
        #: Each lock held, with how many `Lock` steps of the plan hold it.
        self.locks: dict[tuple[int, int, str], int] = {}

    async def lock(self, step: Lock) -> None:
        loop = id(asyncio.get_running_loop())
        backend = id(step.backend)
        keys = step.keys
        for key in sorted(set(keys)) if len(keys) > 1 else keys:
            ident = (loop, backend, key)
            held = self.locks.get(ident)
            if held is not None:
                self.locks[ident] = held + 1
                continue
            await acquire_key(ident)
            self.locks[ident] = 1

    def unlock(self, step: Unlock) -> None:
        loop = id(asyncio.get_running_loop())
        backend = id(step.backend)
        for key in set(step.keys):
            ident = (loop, backend, key)
            held = self.locks.get(ident)
            if held is None:
                continue
            if held > 1:
                self.locks[ident] = held - 1
            else:
                del self.locks[ident]
                release_key(ident)

    async def close(self) -> None:
        """Release every lock still held and close the key listings (the plan may have
        stopped before their end)."""
        locks, self.locks = self.locks, {}
        for ident in locks:
            release_key(ident)
        listings, self.listings = self.listings, []
        for listing in listings:
            await listing.aclose()


async def perform(step: Step | Emit | Backoff | Lock | Unlock | Scan, driver: Driver) -> Any:
    """Run one step of a plan; what the plan receives for it. What the step takes (key
    listings, locks) is kept in ``driver``, for `Driver.close` when the plan ends."""
    if type(step) is list:  # round trips, the common step: no other kind to rule out first
        if len(step) == 1:
            backend, batch = step[0]
            return [await execute_batch(backend, batch)]
        return await run_step(step)
    if isinstance(step, Emit):
        for i, instance in enumerate(step.instances):
            kwargs = {k: (v[i] if isinstance(v, list) else v) for k, v in step.kwargs.items()}
            await step.signal.send(step.sender, instance, **kwargs)
        return None
    if isinstance(step, Backoff):
        seconds = backoff_seconds(step.attempt)
        if seconds:
            await asyncio.sleep(seconds)
        return None
    if isinstance(step, Lock):
        await driver.lock(step)
        return None
    if isinstance(step, Unlock):
        driver.unlock(step)
        return None
    if isinstance(step, Scan):
        if step.listing not in driver.listings:
            driver.listings.append(step.listing)
        return await step.listing.next_page()
    return await run_step(step)


async def run(plan: Plan) -> Any:
    """Drive a plan to completion; returns its value."""
    send: Any = None
    driver = Driver()
    try:
        while True:
            step = plan.send(send)
            send = await perform(step, driver)
    except StopIteration as stop:
        return stop.value
    finally:
        plan.close()
        if driver.listings or driver.locks:
            await driver.close()


class Driven(NamedTuple):
    """What `drive` saw: every step the plan yielded, in order, and the plan's value."""

    steps: list[Any]
    value: Any

    @property
    def batches(self) -> list[list[tuple[Backend, Batch]]]:
        """The round trips alone (the steps that are lists of ``(backend, Batch)``)."""
        return [step for step in self.steps if isinstance(step, list)]

    @property
    def commands(self) -> list[list[Any]]:
        """Per round trip, its commands (every batch of the step, in order)."""
        return [[c for _, batch in step for c in batch.commands] for step in self.batches]


def drive(plan: Plan, results: Iterable[Any] | Callable[[Any], Any] = ()) -> Driven:
    """Walk a whole plan without a server, for tests (as peewee's tests assert the SQL a
    query compiles to).

    ``results`` holds the canned answer of each round trip and each key-listing page, in
    order: for a round trip of one batch, that batch's list of results; for a round trip to
    several backends, one such list per ``(backend, Batch)`` of the step; for a listing
    page, its list of keys. An item may also be a function of the step; a single function
    instead of a sequence answers every step. Signals, locks and backoffs are recorded but
    not run. Raises what the plan raises, and `AssertionError` when the plan asks for more
    round trips than were canned.

    Example::

        driven = drive(query._plan(), [[None]])          # a get that misses
        assert driven.commands == [[Get("user:1")]]
    """
    answer: Callable[[Any], Any] | None = results if callable(results) else None
    canned = iter(()) if callable(results) else iter(results)
    steps: list[Any] = []
    send: Any = None
    try:
        while True:
            step = plan.send(send)
            steps.append(step)
            send = None
            if isinstance(step, Emit | Backoff | Lock | Unlock):
                continue
            if answer is not None:
                reply = answer(step)
            else:
                try:
                    reply = next(canned)
                except StopIteration:
                    raise AssertionError(
                        f"the plan asked for round trip {len(steps)} with no canned result: "
                        f"{step!r}"
                    ) from None
                if callable(reply):
                    reply = reply(step)
            if isinstance(step, list) and len(step) == 1:
                reply = [reply]
            send = reply
    except StopIteration as stop:
        return Driven(steps, stop.value)
    finally:
        plan.close()


def combine(plans: list[Plan]) -> Plan:
    """Run several plans in lockstep: at each step, the batches they send to one backend are
    merged into one batch, so N plans cost one round trip per backend per step. Returns the
    list of the plans' values, in order."""
    values: list[Any] = [None] * len(plans)
    sends: list[Any] = [None] * len(plans)
    active = list(range(len(plans)))
    while active:
        steps: dict[int, Step | Emit | Backoff | Lock | Unlock] = {}
        for i in active:
            try:
                step = plans[i].send(sends[i])
            except StopIteration as stop:
                values[i] = stop.value
                continue
            if isinstance(step, Scan):
                raise TypeError("a plan that lists keys cannot run in lockstep with others")
            steps[i] = step
        active = list(steps)
        io: dict[int, Step] = {}
        attempt = 0
        for i, step in steps.items():
            sends[i] = None
            if isinstance(step, Emit | Lock | Unlock):
                yield step
            elif isinstance(step, Backoff):
                attempt = max(attempt, step.attempt)
            else:
                io[i] = step
        if attempt:
            yield Backoff(attempt)
        if not io:
            continue
        # Merge per backend (atomic batches stay whole and separate).
        merged: dict[tuple[int, int], tuple[Backend, list[Any], list[tuple[int, int, int]]]] = {}
        for i, step in io.items():
            for j, (backend, batch) in enumerate(step):
                slot = (id(backend), i * 1_000_000 + j if batch.atomic else -1)
                entry = merged.get(slot)
                if entry is None:
                    entry = merged[slot] = (backend, [], [])
                start = len(entry[1])
                entry[1].extend(batch.commands)
                entry[2].append((i, j, start))
        out: Step = []
        for (_, tag), (backend, commands, _) in merged.items():
            out.append((backend, Batch(tuple(commands), atomic=tag != -1)))
        results = yield out
        per_plan: dict[int, list[Any]] = {i: [None] * len(step) for i, step in io.items()}
        for entry, result in zip(merged.values(), results, strict=True):
            for i, j, start in entry[2]:
                n = len(io[i][j][1].commands)
                per_plan[i][j] = result[start : start + n]
        for i, res in per_plan.items():
            sends[i] = res
    return values
