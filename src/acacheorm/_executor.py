"""The executor: the one place where batches meet backends.

A query's plan is a generator (sans-I/O): it yields a step, the executor runs it and sends
back the results, until the plan returns its value. A step is either a list of
``(backend, Batch)`` pairs, run concurrently (one round trip per backend), or an `Emit` of a
signal.

Automatic batching: with ``backend.auto_batch`` on, batches submitted to one backend in the
same event-loop iteration are merged into one batch (one round trip) and each caller gets its
own slice of the results, its own per-command errors. The merge is flushed with
``loop.call_soon``, so a lone await waits one loop iteration, not a timer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Generator
from typing import Any, NamedTuple

from ._commands import READ_COMMANDS, Batch
from ._signals import Signal
from .backends.base import Backend, NothingRan

logger = logging.getLogger("acacheorm")

Step = list[tuple[Backend, Batch]]


class Emit(NamedTuple):
    """A plan step that sends a signal for each instance, in order."""

    signal: Signal
    sender: type
    instances: list[Any]
    kwargs: dict[str, Any]


class Sleep(NamedTuple):
    """A plan step that waits (backoff between compare-and-swap retries)."""

    seconds: float


Plan = Generator["Step | Emit | Sleep", Any, Any]


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

    @property
    def hits(self) -> int:
        """Reads (``Get``/``Gets``/``Has``) that found their key."""
        return sum(
            1
            for c, r in zip(self.batch.commands, self.results or (), strict=False)
            if type(c) in READ_COMMANDS
            and r not in (None, False)
            and not isinstance(r, BaseException)
        )

    @property
    def misses(self) -> int:
        """Reads (``Get``/``Gets``/``Has``) that did not find their key."""
        return sum(
            1
            for c, r in zip(self.batch.commands, self.results or (), strict=False)
            if type(c) in READ_COMMANDS and r in (None, False)
        )


_hooks: list[Callable[[BatchEvent], None]] = []


def add_batch_hook(hook: Callable[[BatchEvent], None]) -> Callable[[BatchEvent], None]:
    """Call ``hook(event)`` after every round trip (for metrics: OpenTelemetry, Prometheus).

    ``event`` has ``backend``, ``batch`` (its ``commands``), ``duration`` (seconds),
    ``error`` (or None), ``merged`` (how many queries shared the round trip), ``results``
    and the ``hits``/``misses`` among its reads. A hook that raises is logged and ignored:
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


async def _execute(backend: Backend, batch: Batch, merged: int = 1) -> list[Any]:
    if not _hooks and not logger.isEnabledFor(logging.DEBUG):
        return await backend.execute(batch)
    start = time.perf_counter()
    error: BaseException | None = None
    results: list[Any] | None = None
    try:
        results = await backend.execute(batch)
        return results
    except BaseException as exc:
        error = exc
        raise
    finally:
        duration = time.perf_counter() - start
        logger.debug(
            "%r %r: %d commands, %d merged, %.3f ms%s",
            backend,
            batch,
            len(batch.commands),
            merged,
            duration * 1000,
            f", failed: {error!r}" if error else "",
        )
        event = BatchEvent(backend, batch, duration, error, merged, results)
        for hook in list(_hooks):
            try:
                hook(event)
            except Exception:
                logger.exception("acacheorm batch hook %r failed; ignored", hook)


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
        self.window: list[tuple[Batch, asyncio.Future[list[Any]] | None]] | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def submit(self, batch: Batch) -> list[Any]:
        window = self.window
        if window is not None:
            fut: asyncio.Future[list[Any]] = self.loop.create_future()
            window.append((batch, fut))
            return await fut
        window = self.window = [(batch, None)]
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            if self.window is window:
                self.window = None
            followers: list[tuple[Batch, asyncio.Future[list[Any]] | None]] = [
                (b, f) for b, f in window[1:] if f is not None and not f.cancelled()
            ]
            if followers:
                self._spawn(followers)
            raise
        if self.window is window:
            self.window = None
        if len(window) == 1:
            return await _execute(self.backend, batch)
        own: asyncio.Future[list[Any]] = self.loop.create_future()
        window[0] = (batch, own)
        self._spawn(window)
        return await own

    def _spawn(self, pending: list[tuple[Batch, asyncio.Future[list[Any]] | None]]) -> None:
        task = self.loop.create_task(self._run(pending))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, pending: list[tuple[Batch, asyncio.Future[list[Any]] | None]]) -> None:
        commands: list[Any] = []
        for batch, _ in pending:
            commands.extend(batch.commands)
        try:
            try:
                results = await _execute(self.backend, Batch(tuple(commands)), len(pending))
            except NothingRan:
                # Refused whole before any of it ran (SimpleBackend's max_entries): each
                # caller's batch on its own, so the refusal reaches only the one it concerns.
                await self._one_by_one(pending)
                return
        except BaseException as exc:
            for _, fut in pending:
                if fut is not None and not fut.done():
                    if isinstance(exc, asyncio.CancelledError):
                        fut.cancel()
                    else:
                        fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for batch, fut in pending:
            end = start + len(batch.commands)
            if fut is not None and not fut.done():
                fut.set_result(results[start:end])
            start = end

    async def _one_by_one(
        self, pending: list[tuple[Batch, asyncio.Future[list[Any]] | None]]
    ) -> None:
        for batch, fut in pending:
            try:
                results = await _execute(self.backend, batch)
            except Exception as exc:
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
                continue
            if fut is not None and not fut.done():
                fut.set_result(results)


async def execute_batch(backend: Backend, batch: Batch) -> list[Any]:
    """Run one batch on one backend, merged with concurrent ones where allowed."""
    if not backend.auto_batch or batch.atomic or not batch.commands:
        return await _execute(backend, batch)
    loop = asyncio.get_running_loop()
    # One coalescer per backend and event loop, kept on the backend itself so it lives and
    # dies with it.
    coalescer: _Coalescer | None = backend.__dict__.get("_coalescer")
    if coalescer is None or coalescer.loop is not loop:
        coalescer = backend.__dict__["_coalescer"] = _Coalescer(backend, loop)
    return await coalescer.submit(batch)


async def run_step(step: Step) -> list[list[Any]]:
    if len(step) == 1:
        backend, batch = step[0]
        return [await execute_batch(backend, batch)]
    return list(await asyncio.gather(*(execute_batch(b, batch) for b, batch in step)))


async def run(plan: Plan) -> Any:
    """Drive a plan to completion; returns its value."""
    send: Any = None
    try:
        while True:
            step = plan.send(send)
            if isinstance(step, Emit):
                for i, instance in enumerate(step.instances):
                    kwargs = {
                        k: (v[i] if isinstance(v, list) else v) for k, v in step.kwargs.items()
                    }
                    await step.signal.send(step.sender, instance, **kwargs)
                send = None
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                send = None
            else:
                send = await run_step(step)
    except StopIteration as stop:
        return stop.value
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
        steps: dict[int, Step | Emit | Sleep] = {}
        for i in active:
            try:
                steps[i] = plans[i].send(sends[i])
            except StopIteration as stop:
                values[i] = stop.value
        active = list(steps)
        io: dict[int, Step] = {}
        sleep = 0.0
        for i, step in steps.items():
            sends[i] = None
            if isinstance(step, Emit):
                yield step
            elif isinstance(step, Sleep):
                sleep = max(sleep, step.seconds)
            else:
                io[i] = step
        if sleep:
            yield Sleep(sleep)
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
