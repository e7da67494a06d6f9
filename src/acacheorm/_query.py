"""Query objects and their plans (the compiler).

A query is an immutable value built by a model's class method. Awaiting it (or calling
``execute()``) hands its plan to the executor; ``compile()`` shows the first batch(es) it
would send, without I/O. A plan is a generator: it yields a step (batches for backends, a
signal to send, a pause) and receives the step's results, so every query is testable
without a server.
"""

from __future__ import annotations

import asyncio
import copy
import sys
import warnings
from asyncio import _get_running_loop
from collections.abc import Callable, Coroutine, Generator, Iterable, Sequence
from itertools import repeat
from typing import Any, Generic, Self, TypeVar

from . import _executor
from ._auto import assign_ids
from ._base import Model, replace_row
from ._cas import read_versions, write_unchanged
from ._commands import (
    KEEP_TTL,
    MISSING,
    Batch,
    Get,
    Gets,
    Ttl,
)
from ._display import InstanceList
from ._exceptions import ConflictError
from ._executor import Backoff, Emit, Lock, Plan, Scan, Unlock, combine
from ._fields import Expression
from ._plans import check_atomic, check_cas, prefetch_plan
from ._plans import check_result as _check
from ._relations import parse_related
from ._schema import Schema, resolve_ttl
from ._signals import post_delete, post_save, pre_delete, pre_save
from ._types import NOTHING, collector_paused
from ._writes import (
    checked,
    delete_rows,
    has_dependents,
    on_delete_plan,
    touch_row,
    write_row,
    write_rows,
)
from .backends.base import Backend

R = TypeVar("R")

#: The "future" of a query's run that the batching window answers on the query itself (a
#: marker, not the query: a query referring to itself would be a reference cycle, left to
#: the garbage collector with the row it holds).
_BY_WINDOW: Any = object()

_new = tuple.__new__

#: The attributes a run of a query sets (its coroutine or task, its future face's state and
#: outcome): a copy of the query starts without them (`Query._copy`).
_RUN_STATE = (
    "_coro",
    "_task",
    "_coros",
    "_inner",
    "_face_loop",
    "_face_fn",
    "_face_context",
    "_face_callbacks",
    "_outcome",
    "_claimed",
    "_cancel_message",
    "_face_reads",
    "_face_index",
)


def _gets(keys: list[str]) -> Batch:
    """``Batch(tuple(map(Get, keys)))``, built without the NamedTuples' Python frames."""
    return _new(Batch, (tuple(map(_new, repeat(Get), zip(keys))), False))


#: The task running in an event loop (None for None): asyncio's own table of current tasks
#: read directly where it is one (no Python frame per look-up), else `asyncio.current_task`.
_task_of: Callable[[Any], Any]
if sys.version_info < (3, 14) and isinstance(getattr(asyncio.tasks, "_current_tasks", None), dict):
    _task_of = asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]
else:  # pragma: no cover - other Python versions

    def _task_of(loop: Any) -> Any:
        return None if loop is None else asyncio.current_task(loop)


#: Compare-and-swap attempts before an update gives up with ConflictError.
MAX_UPDATE_ATTEMPTS = 200


def _describe_pk(schema: Schema, pk: tuple[Any, ...]) -> str:
    return ", ".join(f"{n}={v!r}" for n, v in zip(schema.pk_names, pk, strict=True))


def _does_not_exist(schema: Schema, pk: tuple[Any, ...], key: str) -> Exception:
    text = f"{schema.model_name} with {_describe_pk(schema, pk)} does not exist"
    return schema.model.DoesNotExist(f"{text} (key {key!r})", key=key, detail=text)


class Query(Coroutine[Any, Any, R], Generic[R]):
    """Base class of every query: awaitable, immutable, compilable.

    A query is also a coroutine object: ``asyncio.run(q)``, ``asyncio.create_task(q)`` and
    ``TaskGroup.create_task(q)`` take it (each run is a new execution of the query).

    Example::

        q = User.query(id=1)
        print(q.compile())       # the batches it would send
        user = await q           # or: await q.execute()
        task = asyncio.create_task(User.get(id=1))
    """

    #: A write query not yet awaited, executed or compiled: warned about when collected.
    _unsent = False
    #: The execution driven through the coroutine protocol (send/throw) by one task, and
    #: that task; those of other tasks driving the same query at the same time, by task.
    _coro: Coroutine[Any, Any, R] | None = None
    _task: Any = None
    _coros: dict[Any, Coroutine[Any, Any, R]] | None = None

    def _plan(self) -> Plan:
        raise NotImplementedError

    def _steps(self) -> Plan:
        """This query's plan, run as a part of another plan (so it counts as sent)."""
        self._unsent = False
        return self._plan()

    async def execute(self) -> R:
        """Run the query; its result."""
        self._unsent = False
        result: R = await _executor.run(self._plan())
        return result

    def __await__(self) -> Generator[Any, None, R]:
        if self._unsent:  # only a write is ever armed: a read sets nothing
            self._unsent = False
        if self._inner is not None and not self._claimed:  # a run of the future face
            return self._face_wait().__await__()
        joined = self._joined()
        if joined is not None:
            return joined  # type: ignore[no-any-return]
        return self.execute().__await__()

    def _joined(self) -> Any:
        """A run of this query as the waiting on a future of the batching window open on
        its backend (the future's own iterator: no coroutine, no Python frame when it is
        answered), or None when the query does not join a window that way (then it runs
        through `execute`). Only a read of one row by its key does (`SelectQuery`)."""
        return None

    # -- the coroutine protocol, for asyncio.run / create_task ------------------------------

    def _execution(self, key: Any) -> Coroutine[Any, Any, R]:
        """The execution task ``key`` drives (a new one for a task that starts)."""
        coro = self._coro
        if coro is not None and self._task is key:
            return coro
        coros = self._coros
        coro = None if coros is None else coros.get(key)
        if coro is None:
            self._unsent = False
            coro = self._joined()  # the future's iterator (send/throw/close), or
            if coro is None:
                coro = self.execute()  # the execution coroutine
            if self._coro is None:
                self._task, self._coro = key, coro
            else:  # several tasks at once drive this query
                if coros is None:
                    coros = self._coros = {}
                coros[key] = coro
        return coro

    def _finished(self, key: Any) -> None:
        """Forget the execution of task ``key`` (it ended)."""
        if self._coro is not None and self._task is key:
            self._task = self._coro = None
        elif self._coros is not None:
            self._coros.pop(key, None)

    def send(self, value: Any) -> Any:
        """Coroutine protocol: start or resume the execution a task drives."""
        key = _task_of(_get_running_loop())  # None when driven by hand, outside a loop
        coro = self._coro
        if coro is None or self._task is not key:
            coro = self._execution(key)
        try:
            return coro.send(value)
        except BaseException:  # the execution ended (StopIteration carries the result)
            if coro is self._coro:  # the one task driving it (_finished, inline)
                self._task = self._coro = None
            else:
                self._finished(key)
            raise

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        """Coroutine protocol: raise an exception (a cancellation) inside the execution."""
        key = _task_of(_get_running_loop())
        coro = self._execution(key)
        try:
            if val is None and tb is None:
                return coro.throw(typ)
            return coro.throw(typ, val, tb)  # pragma: no cover - legacy signature
        except BaseException:
            self._finished(key)
            raise

    def close(self) -> None:
        """Coroutine protocol: stop the executions tasks were driving, if any."""
        coro, coros = self._coro, self._coros
        self._task = self._coro = self._coros = None
        if coro is not None:
            coro.close()
        for other in (coros or {}).values():
            other.close()

    # -- the future face, for asyncio.gather / ensure_future / wait_for / shield ----------
    #
    # asyncio takes an object for a future (``asyncio.isfuture``: ``ensure_future`` and
    # ``gather`` take it as it is, with no task around it) when its class has
    # ``_asyncio_future_blocking`` and the object's value of it is not None. A query says
    # so only where it can run without a task (`_face_ok`: a read of one row by its key)
    # and only inside a running loop; everywhere else it stays a coroutine to asyncio.
    # Asked (by ensure_future, gather, wait_for, ...), such a query starts a run at once,
    # as a task would start: its row read joins the batching window
    # (`_executor.read_batched`), which answers it on the query itself, so a thousand
    # gathered reads cost one task instead of a thousand. The run's outcome is the query's
    # future state until it is claimed (``result()``, ``exception()``, an ``await``); after
    # that, asking again starts a new run, as a query runs each time it is driven.

    #: The run's future, `_BY_WINDOW` (the batching window answers the query itself), or None.
    _inner: Any = None
    _face_loop: Any = None
    #: The run's callbacks: the first (the one a gather adds) and its context on their own,
    #: any others in a list, in order (no container made for the common single one).
    _face_fn: Callable[[Any], object] | None = None
    _face_context: Any = None
    _face_callbacks: list[tuple[Callable[[Any], object], Any]] | None = None
    #: The outcome of the last run: (result, exception, cancelled); None while it runs.
    _outcome: tuple[Any, BaseException | None, bool] | None = None
    _claimed = False
    _cancel_message: Any = None
    #: Where a run answered by the batching window waits: the items of the window's
    #: `RowReads`, and the index of the query there.
    _face_reads: list[Any] = []  # never changed: each run sets its own
    _face_index = 0

    @property
    def _asyncio_future_blocking(self) -> bool | None:
        if _get_running_loop() is None or not self._face_ok():
            return None
        if self._inner is None or self._claimed:
            self._face_run()
        return False

    def _face_ok(self) -> bool:
        return False

    def _face_start(self) -> Any:
        """The future of a new run: a task running the query (`SelectQuery._face_run` joins
        the batching window instead where it can)."""
        return asyncio.get_running_loop().create_task(self.execute())

    def _face_run(self) -> None:
        """Start a new run."""
        loop = asyncio.get_running_loop()
        self._face_loop = loop
        if self._inner is not None:  # the state of the run before (the first starts clean)
            self._outcome = self._cancel_message = None
            self._claimed = False
            self._face_fn = self._face_context = self._face_callbacks = None
        try:
            inner = self._face_start()
        except Exception as exc:  # refused before any I/O: the run's outcome
            inner = loop.create_future()
            inner.set_exception(exc)
        self._inner = inner
        if inner is not _BY_WINDOW:  # else the batching window answers the query itself
            inner.add_done_callback(self._face_done)

    def _face_done(self, inner: asyncio.Future[Any]) -> None:
        if inner.cancelled():
            self._face_end(None, None, True)
            return
        exc = inner.exception()
        if exc is None:
            self._face_end(inner.result())
        else:
            self._face_end(None, exc)

    def _face_end(
        self, value: Any, exc: BaseException | None = None, cancelled: bool = False
    ) -> None:
        """End the run under way with its outcome, and call its callbacks (inline: the
        batching window answers every gathered read here, one per read)."""
        self._outcome = (value, exc, cancelled)
        fn = self._face_fn
        if fn is None:
            return
        self._face_fn = None  # (it may refer to this query: a gather's callback does)
        context = self._face_context
        if context is not None:
            self._face_context = None
        callbacks = self._face_callbacks
        if callbacks is not None:
            self._face_callbacks = None
        self._call(fn, context)
        for fn, context in callbacks or ():
            self._call(fn, context)

    #: End the run under way with its result (the batching window answers a run's read on
    #: the query itself, as on a future: no future, no callback through the loop in
    #: between): `_face_end` itself, without a call in between.
    set_result = _face_end

    def set_exception(self, exc: BaseException) -> None:
        """End the run under way with the error of its read (see `set_result`)."""
        self._face_end(None, exc)

    def _call(self, fn: Callable[[Any], object], context: Any) -> None:
        try:
            if context is None:
                fn(self)
            else:
                context.run(fn, self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # as the loop reports a failing callback
            self._callback_failed(fn, exc)

    def _callback_failed(self, fn: Callable[[Any], object], exc: BaseException) -> None:
        self.get_loop().call_exception_handler(
            {"message": f"Exception in callback {fn!r}", "exception": exc}
        )

    async def _face_wait(self) -> Any:
        """Await the run under way (or take its unclaimed outcome)."""
        while self._outcome is None:
            waiter = self.get_loop().create_future()

            def wake(_: Any, waiter: asyncio.Future[Any] = waiter) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            self.add_done_callback(wake)
            try:
                await waiter
            except asyncio.CancelledError:  # as awaiting a task cancels it
                self.remove_done_callback(wake)
                self.cancel()
                raise
        return self.result()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """Future protocol: the loop of the current run (or the running loop)."""
        loop = self._face_loop
        return loop if loop is not None else asyncio.get_running_loop()

    def add_done_callback(self, fn: Callable[[Any], object], *, context: Any = None) -> None:
        """Future protocol: call ``fn(query)`` when the run ends (starting one when none
        is under way or unclaimed)."""
        if self._inner is None or self._claimed:
            self._face_run()
        if self._outcome is not None:  # done: soon, as a done future does
            self.get_loop().call_soon(self._call, fn, context)
            return
        if self._face_fn is None:
            self._face_fn, self._face_context = fn, context
        elif self._face_callbacks is None:
            self._face_callbacks = [(fn, context)]
        else:
            self._face_callbacks.append((fn, context))

    def _take_callbacks(self) -> list[tuple[Callable[[Any], object], Any]]:
        """The run's callbacks, in order, now forgotten."""
        fn = self._face_fn
        callbacks = [] if fn is None else [(fn, self._face_context)]
        callbacks += self._face_callbacks or ()
        self._face_fn = self._face_context = self._face_callbacks = None
        return callbacks

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        """Future protocol: forget ``fn``; how many times it was registered."""
        callbacks = self._take_callbacks()
        kept = [c for c in callbacks if c[0] != fn]
        if kept:
            self._face_fn, self._face_context = kept[0]
            self._face_callbacks = kept[1:] or None
        return len(callbacks) - len(kept)

    def done(self) -> bool:
        """Future protocol: whether the last run has ended."""
        return self._outcome is not None

    def cancelled(self) -> bool:
        """Future protocol: whether the last run was cancelled."""
        outcome = self._outcome
        return outcome is not None and outcome[2]

    def cancel(self, msg: Any = None) -> bool:
        """Future protocol: cancel the run under way (False when none is)."""
        inner = self._inner
        if inner is None or self._outcome is not None:
            return False
        self._cancel_message = msg
        if inner is _BY_WINDOW:
            # its place in the window no longer answers this query (a later run of it
            # must get its own read's answer, not this one's)
            futures, i = self._face_reads, self._face_index
            if i < len(futures) and futures[i] is self:
                futures[i] = _executor.GONE
            self._outcome = (None, None, True)
            callbacks = self._take_callbacks()
            loop = self.get_loop()
            for fn, context in callbacks:  # soon, as a cancelled future calls them
                loop.call_soon(self._call, fn, context)
            return True
        return bool(inner.cancel(msg))

    def _make_cancelled_error(self) -> asyncio.CancelledError:
        msg = self._cancel_message
        return asyncio.CancelledError("" if msg is None else msg)

    def _claim(self, not_ready: str) -> tuple[Any, BaseException | None, bool]:
        """The last run's outcome, now taken (asyncio's errors for one not ready or
        cancelled). `result` and `exception` take an outcome that is there and not
        cancelled by themselves (gather asks each read for both)."""
        outcome = self._outcome
        if outcome is None:
            raise asyncio.InvalidStateError(not_ready)
        self._claimed = True
        if outcome[2]:
            raise self._make_cancelled_error()
        return outcome

    def result(self) -> Any:
        """Future protocol: the last run's result (raises its exception)."""
        outcome = self._outcome
        if outcome is None or outcome[2]:
            outcome = self._claim("Result is not ready.")
        self._claimed = True
        if outcome[1] is not None:
            raise outcome[1]
        return outcome[0]

    def exception(self) -> BaseException | None:
        """Future protocol: the last run's exception, or None."""
        outcome = self._outcome
        if outcome is None or outcome[2]:
            outcome = self._claim("Exception is not set.")
        self._claimed = True
        return outcome[1]

    def compile(self) -> list[tuple[Backend, Batch]]:
        """The ``(backend, Batch)`` pairs of the first round trip; no I/O, no signals."""
        self._unsent = False
        plan = self._plan()
        try:
            step = next(plan)
            while isinstance(step, Emit | Backoff | Lock | Unlock):
                step = plan.send(None)
            if isinstance(step, Scan):
                return []  # the first round trip lists keys: no batch
            return list(step)
        except StopIteration:
            return []
        finally:
            plan.close()

    def _copy(self, **changes: Any) -> Self:
        new = copy.copy(self)
        new.__dict__.update(changes)
        for name in _RUN_STATE:
            new.__dict__.pop(name, None)
        self._unsent = False  # the copy carries the duty to run
        return new


class _Write:
    """Mixin of write queries: one that is collected without ever being awaited, executed
    or compiled warns, as a never-awaited coroutine does (nothing was written)."""

    _unsent: bool

    def _armed(self) -> None:
        self._unsent = True

    def __del__(self) -> None:
        if self._unsent and not sys.is_finalizing():
            self._unsent = False
            warnings.warn(
                f"{self!r} was never awaited, so nothing was sent (write `await` before the call)",
                RuntimeWarning,
                stacklevel=2,
            )


def _describe_rows(model: type[Model], pks: Sequence[tuple[Any, ...]]) -> str:
    schema = model._schema
    if len(pks) == 1:
        return _describe_pk(schema, pks[0])
    return f"{len(pks)} rows"


# -- reads -----------------------------------------------------------------------------------


class SelectQuery(Query[R]):
    """``get``/``get_by_id``/``get_or_none``/``query``/``query_many``: one multi-get.

    Example::

        users = await User.query_many(1, 2, 3).select_related("team")
    """

    def __init__(
        self,
        model: type[Model],
        pks: list[tuple[Any, ...]],
        mode: str,
        related: tuple[str, ...] = (),
    ) -> None:
        self.model = model
        self.pks = pks
        self.mode = mode
        if related:  # else the class's own empty ones (read only): no dict per query
            self.related = related
            self._tree = parse_related(model, related)

    #: The foreign keys loaded with the rows, and their tree (`parse_related`).
    related: tuple[str, ...] = ()
    _tree: dict[str, Any] = {}  # never changed: select_related gives a new query a new tree

    def select_related(self, *paths: str) -> Self:
        """Load these foreign keys (``"author"``, ``"article__author"``) with the rows:
        one batch per relation level, whatever the number of rows."""
        related = self.related + tuple(p for p in paths if p not in self.related)
        return self._copy(related=related, _tree=parse_related(self.model, related))

    def _plan(self) -> Plan:
        schema = self.model._schema
        keys = schema.keys(self.pks)
        results = (yield [(schema.backend, _gets(keys))])[0]
        rows = schema.decode_many(keys, results)
        if self._tree:
            yield from prefetch_plan(rows, self._tree, decoded=True)
        return self._result(schema, keys, rows)

    async def execute(self) -> R:
        """Run the query. Without ``select_related`` the plan is a single step, so it is run
        here directly (the same batch through the same executor entry point, without driving
        a generator): the hot path of every read."""
        if self._tree:
            return await super().execute()
        schema = self.model._schema
        pks = self.pks
        if len(pks) == 1 and self.mode != "many":  # one row by its key: the hottest read
            key = schema.key(pks[0])
            backend = schema.backend
            # a batching window is open: the row, decoded with the others of the merged
            # batch, or the slot's error (DoesNotExist for a missing row, read by `get`)
            joined = _executor.read_joined(
                backend, key, schema, self if self.mode == "get" else None
            )
            if joined is not None:
                row: Any = await joined
                return row  # type: ignore[no-any-return]
            payload = _executor.read_now(backend, key)  # in-process, nothing pending
            if payload is _executor.LATER:
                reading = _executor.read_one(backend, key)  # the backend's own, nothing pending
                if reading is not None:
                    payload = await reading
                else:
                    # Batch((Get(key),)), built without the NamedTuple constructors' frames
                    batch = _new(Batch, ((_new(Get, (key,)),), False))
                    payload = (await _executor.execute_batch(backend, batch))[0]
            if payload is None:
                if self.mode == "get":
                    raise _does_not_exist(schema, pks[0], key)
                return None  # type: ignore[return-value]
            if isinstance(payload, BaseException):
                raise payload
            row = schema.decode(key, payload)
            return row  # type: ignore[no-any-return]
        keys = schema.keys(pks)
        results = await _executor.execute_batch(
            schema.backend, collector_paused(len(keys), _gets, keys)
        )
        result: R = self._result(schema, keys, schema.decode_many(keys, results))
        return result

    def _face_ok(self) -> bool:
        """A read of one row by its key (without select_related)."""
        return len(self.pks) == 1 and self.mode != "many" and not self._tree

    @property
    def _asyncio_future_blocking(self) -> bool | None:
        # Query's, with `_face_ok` inline (asked once or more per gathered read)
        if _get_running_loop() is None or len(self.pks) != 1 or self.mode == "many" or self._tree:
            return None
        if self._inner is None or self._claimed:
            self._face_run()
        return False

    def _face_run(self) -> None:
        """Start a new run: its read joins the batching window, which answers it on the
        query itself; where there is no window to join (a near cache, ``auto_batch=False``)
        or the key cannot be made, a task runs it (`Query._face_run`)."""
        if self._inner is not None:  # the state of the run before (the first starts clean)
            self._outcome = self._cancel_message = None
            self._claimed = False
            self._face_fn = self._face_context = self._face_callbacks = None
            self._inner = None
        schema = self.model._schema
        pk = self.pks[0]
        try:
            if schema._single_attname is not None:  # `schema.key`, inline (its first case)
                key = schema.prefix + schema._single_key_part(pk[0])
            else:
                key = schema.key(pk)
        except Exception:
            super()._face_run()  # the task raises it
            return
        missing = self if self.mode == "get" else None  # DoesNotExist (`_missing`), or None
        if _executor.read_batched(schema.backend, key, schema, self, missing):
            self._face_loop = _get_running_loop()
            self._inner = _BY_WINDOW  # answered on itself (set_result / set_exception)
        else:
            super()._face_run()

    def _joined(self) -> Any:
        if len(self.pks) != 1 or self.mode == "many" or self._tree:  # `_face_ok`, inline
            return None
        schema = self.model._schema
        pk = self.pks[0]
        if schema._single_attname is not None:  # `schema.key`, inline (its first case)
            key = schema.prefix + schema._single_key_part(pk[0])
        else:
            key = schema.key(pk)
        fut = _executor.read_joined(
            schema.backend, key, schema, self if self.mode == "get" else None
        )
        return None if fut is None else fut.__await__()

    def _missing(self) -> Exception:
        """The error of a read by key (``mode="get"``) that found no row."""
        schema = self.model._schema
        return _does_not_exist(schema, self.pks[0], schema.key(self.pks[0]))

    def _result(self, schema: Schema, keys: list[str], rows: list[Any]) -> Any:
        if self.mode == "many":
            return InstanceList(rows)
        if rows[0] is None and self.mode == "get":
            raise _does_not_exist(schema, self.pks[0], keys[0])
        return rows[0]

    def __repr__(self) -> str:
        rel = f" select_related={self.related}" if self.related else ""
        return f"<SelectQuery {self.model.__name__} {self.mode} pks={self.pks!r}{rel}>"


def _share_attribute_names(cls: type[Any], names: tuple[str, ...]) -> None:
    """Have the instances of ``cls`` keep these attributes in the key table their class
    shares (CPython's key-sharing instance dicts), by setting them all on a throwaway
    instance first. CPython adds a name to that table only while the class has had few
    instances; an instance that sets a name added too late makes a dict of its own (a copy
    of its attributes, and one more object for the garbage collector): a gathered read
    sets its outcome long after a thousand other queries were made."""
    probe = object.__new__(cls)
    for name in names:
        setattr(probe, name, None)


_share_attribute_names(
    SelectQuery,
    (
        "model",
        "pks",
        "mode",
        "related",
        "_tree",
        "_unsent",
        *_RUN_STATE,
    ),
)


class LoadQuery(Query[R]):
    """``instance.load()`` / ``instance.refresh()``: reload every field in place."""

    def __init__(self, instance: Model) -> None:
        self.instance = instance

    def _plan(self) -> Plan:
        obj = self.instance
        schema = type(obj)._schema
        pk = schema.pk_values(obj)
        key = schema.key(pk)
        payload = _check((yield [(schema.backend, Batch((Get(key),)))])[0][0])
        if payload is None:
            raise _does_not_exist(schema, pk, key)
        fresh = schema.decode(key, payload)
        replace_row(obj, fresh)
        return obj


# -- writes ----------------------------------------------------------------------------------


class InsertQuery(_Write, Query[R]):
    """``create``/``insert``/``insert_many``/``save``: one batch of writes.

    Example::

        await User.insert_many(*rows, ttl=60)
    """

    def __init__(
        self,
        model: type[Model],
        instances: list[Model],
        *,
        ttl: Any,
        single: bool,
        atomic: bool = False,
        replace: bool = False,
    ) -> None:
        self.model = model
        self.instances = instances
        self.ttl = resolve_ttl(model._schema.ttl, ttl)
        self.single = single
        self.atomic = atomic
        self.replace = replace
        self._armed()

    def __repr__(self) -> str:
        what = "save" if self.replace else "insert"
        schema = self.model._schema
        rows = _describe_rows(self.model, [schema.pk_values(i) for i in self.instances])
        return f"<InsertQuery {self.model.__name__} {what} {rows}>"

    def _plan(self) -> Plan:
        model = self.model
        schema = model._schema
        instances = self.instances
        if schema.auto_now:
            for field in schema.auto_now:
                now = field.now()
                for obj in instances:
                    obj.__dict__[field.name] = now
        if self.atomic:
            check_atomic(schema, len(instances))  # before any I/O (ids are I/O)
        if not self.replace:
            yield from assign_ids(schema, instances)
        if pre_save.receivers_for(model):
            yield Emit(pre_save, model, instances, {})
        commands = write_rows(schema, "replace" if self.replace else "set", instances, self.ttl)
        if self.atomic:
            check_atomic(schema, len(commands), [c.key for c in commands])
        results = (yield [(schema.backend, Batch(commands, self.atomic))])[0]
        for command, result in zip(commands, results, strict=True):
            if not checked(schema, command, result) and self.replace:
                obj = instances[[c.key for c in commands].index(command.key)]
                text = (
                    f"{schema.model_name} with {_describe_pk(schema, schema.pk_values(obj))} "
                    "does not exist; save(force_insert=True) writes it anyway"
                )
                raise model.DoesNotExist(
                    f"{text} (key {command.key!r})", key=command.key, detail=text
                )
        if post_save.receivers_for(model):
            yield Emit(post_save, model, instances, {"created": not self.replace})
        return instances[0] if self.single else instances


def _apply(schema: Schema, obj: Model, changes: dict[str, Any]) -> None:
    """Apply an update's ``changes`` to ``obj`` as read (an `Expression` computed from the
    stored value), and stamp its ``auto_now`` fields not among them."""
    for name, value in changes.items():
        if isinstance(value, Expression):
            value = value.apply(getattr(obj, name))
        setattr(obj, name, value)
    for field in schema.auto_now:
        if field.name not in changes:
            obj.__dict__[field.name] = field.now()


def _conflict(schema: Schema, key: str, attempt: int) -> ConflictError:
    return ConflictError(
        f"{schema.model_name}: update of {key!r} gave up after {attempt} attempts (the row "
        "kept changing)"
    )


class UpdateQuery(_Write, Query[R]):
    """``update``/``update_many``/``set_by_id``: read, merge, compare-and-swap, retry.

    Each round is one multi-read and one batch of compare-and-swap writes; a row changed
    meanwhile is read again and merged again, so no concurrent update is lost, a deleted
    row is never resurrected and the remaining TTL is kept (unless ``ttl=`` is given).
    """

    def __init__(
        self,
        model: type[Model],
        changes: list[tuple[tuple[Any, ...], dict[str, Any]]],
        *,
        ttl: Any,
        mode: str,
    ) -> None:
        self.model = model
        self.changes = changes
        self.ttl = KEEP_TTL if ttl is NOTHING else resolve_ttl(None, ttl)
        self.mode = mode
        #: Only rows for which this holds when read are written (``filter().update()``).
        self.where: Callable[[Any], bool] | None = None
        self._armed()

    def __repr__(self) -> str:
        rows = _describe_rows(self.model, [pk for pk, _ in self.changes])
        return f"<UpdateQuery {self.model.__name__} {rows}>"

    async def execute(self) -> R:
        """Run the update. One row without signal receivers or a ``where`` test (the common
        ``await User.update(id=1, ...)``) is run here directly: the same lock, the same
        batches through the same executor entry point and the same retries as `_plan`,
        without driving a generator."""
        self._unsent = False
        model = self.model
        if (
            self.mode == "many"
            or len(self.changes) != 1
            or self.where is not None
            or (pre_save and pre_save.receivers_for(model))
            or (post_save and post_save.receivers_for(model))
        ):
            result: R = await _executor.run(self._plan())
            return result
        schema = model._schema
        backend = schema.backend
        check_cas(schema, "an update")
        pk, changes = self.changes[0]
        key = schema.key(pk)
        ttl = self.ttl
        execute_batch = _executor.execute_batch
        ident = _executor.lock_ident(backend, key)
        await _executor.acquire_key(ident)
        try:
            attempt = 0
            while True:
                running = _executor.run_one(backend, _new(Gets, (key,)))
                if running is not None:  # the backend's own path, nothing pending
                    item = _check(await running)
                else:
                    item = _check((await execute_batch(backend, Batch((Gets(key),))))[0])
                if item is None:
                    break
                payload, token = item
                obj = schema.decode(key, payload)
                _apply(schema, obj, changes)
                command = write_row(schema, "cas", key, obj, ttl, token)
                running = _executor.run_one(backend, command)
                if running is not None:
                    written = await running
                else:
                    written = (await execute_batch(backend, Batch((command,))))[0]
                if checked(schema, command, written):
                    return obj  # type: ignore[return-value]
                attempt += 1
                if attempt >= MAX_UPDATE_ATTEMPTS:
                    raise _conflict(schema, key, attempt)
                seconds = _executor.backoff_seconds(attempt)
                if seconds:
                    await asyncio.sleep(seconds)
        finally:
            _executor.release_key(ident)
        if self.mode == "get":
            raise _does_not_exist(schema, pk, key)
        return None  # type: ignore[return-value]

    def _plan(self) -> Plan:
        model = self.model
        schema = model._schema
        backend = schema.backend
        check_cas(schema, "an update")
        keys = [schema.key(pk) for pk, _ in self.changes]
        results: list[Any] = [None] * len(keys)
        pending = list(range(len(keys)))
        attempt = 0
        # Updates of one row from this process take turns (the executor's lock per key), so
        # they do not fight each other's compare-and-swap; other processes are kept out by
        # the compare-and-swap itself.
        locked = tuple(sorted(set(keys)))
        yield Lock(backend, locked)
        while pending:
            got = yield from read_versions(backend, [keys[i] for i in pending])
            todo: list[tuple[int, Model, Any]] = []
            for i, item in zip(pending, got, strict=True):
                item = _check(item)
                if item is None:
                    results[i] = None
                    continue
                payload, token = item
                obj = schema.decode(keys[i], payload)
                if self.where is not None and not self.where(obj):
                    results[i] = None
                    continue
                _apply(schema, obj, self.changes[i][1])
                todo.append((i, obj, token))
            if not todo:
                break
            if pre_save.receivers_for(model):
                yield Emit(pre_save, model, [obj for _, obj, _ in todo], {})
            commands = tuple(
                write_row(schema, "cas", keys[i], obj, self.ttl, token) for i, obj, token in todo
            )
            written = yield from write_unchanged(backend, commands)
            pending = []
            saved = []
            for (i, obj, _), command, ok in zip(todo, commands, written, strict=True):
                if checked(schema, command, ok):
                    results[i] = obj
                    saved.append(obj)
                else:
                    pending.append(i)
            if saved and post_save.receivers_for(model):
                yield Emit(post_save, model, saved, {"created": False})
            attempt += 1
            if pending:
                if attempt >= MAX_UPDATE_ATTEMPTS:
                    raise _conflict(schema, keys[pending[0]], attempt)
                yield Backoff(attempt)
        yield Unlock(backend, locked)
        if self.mode == "many":
            return results
        if results[0] is None and self.mode == "get":
            raise _does_not_exist(schema, self.changes[0][0], keys[0])
        return results[0]


class DeleteQuery(_Write, Query[R]):
    """``delete``/``delete_by_id``/``delete_many``/``delete_instance``: one batch."""

    def __init__(
        self,
        model: type[Model],
        pks: list[tuple[Any, ...]],
        *,
        mode: str,
        instances: list[Model] | None = None,
    ) -> None:
        self.model = model
        self.pks = pks
        self.mode = mode
        self.instances = instances
        self._armed()

    def __repr__(self) -> str:
        return f"<DeleteQuery {self.model.__name__} {_describe_rows(self.model, self.pks)}>"

    def _plan(self) -> Plan:
        model = self.model
        schema = model._schema
        send_signals = bool(pre_delete.receivers_for(model) or post_delete.receivers_for(model))
        instances = self.instances
        if send_signals and instances is None:
            instances = [model._sparse(pk) for pk in self.pks]
        if instances is not None and pre_delete.receivers_for(model):
            yield Emit(pre_delete, model, instances, {})
        keys = [schema.key(pk) for pk in self.pks]
        # The same row twice counts once.
        unique = list(dict.fromkeys(keys))
        if has_dependents(schema):
            yield from on_delete_plan(
                schema, list({k: pk for k, pk in zip(keys, self.pks, strict=True)}.values())
            )
        results = (yield [(schema.backend, Batch(delete_rows(schema, unique)))])[0]
        deleted = {k for k, r in zip(unique, results, strict=True) if _check(r)}
        if instances is not None and post_delete.receivers_for(model):
            gone = [obj for obj, key in zip(instances, keys, strict=True) if key in deleted]
            if gone:
                yield Emit(post_delete, model, gone, {})
        if self.mode == "many":
            return len(deleted)
        if not deleted and self.mode == "get":
            raise _does_not_exist(schema, self.pks[0], keys[0])
        return bool(deleted)


class TouchQuery(_Write, Query[R]):
    """``touch``: set a row's remaining lifetime in one command; awaits to whether the row
    exists.

    Example::

        assert await Session.touch(id=sid, ttl=1800)
    """

    def __init__(self, model: type[Model], pk: tuple[Any, ...], *, ttl: Any) -> None:
        self.model = model
        self.pk = pk
        self.ttl = resolve_ttl(model._schema.ttl, ttl)
        self._armed()

    def _plan(self) -> Plan:
        schema = self.model._schema
        key = schema.key(self.pk)
        command = touch_row(schema, key, self.ttl)  # an indexed row's entries expire with it
        result = (yield [(schema.backend, Batch((command,)))])[0][0]
        return bool(checked(schema, command, result))

    def __repr__(self) -> str:
        return f"<TouchQuery {self.model.__name__} {_describe_pk(self.model._schema, self.pk)}>"


class RemainingTTLQuery(Query[R]):
    """``remaining_ttl``: seconds left before a row expires, ``None`` if it never does;
    ``DoesNotExist`` for a missing row.

    Example::

        left = await Session.remaining_ttl(id=sid)
    """

    def __init__(self, model: type[Model], pk: tuple[Any, ...]) -> None:
        self.model = model
        self.pk = pk

    def _plan(self) -> Plan:
        schema = self.model._schema
        key = schema.key(self.pk)
        result = _check((yield [(schema.backend, Batch((Ttl(key),)))])[0][0])
        if result is MISSING:
            raise _does_not_exist(schema, self.pk, key)
        return result

    def __repr__(self) -> str:
        schema = self.model._schema
        return f"<RemainingTTLQuery {self.model.__name__} {_describe_pk(schema, self.pk)}>"


class GetOrCreateQuery(_Write, Query[R]):
    """``get_or_create``: read; if absent, add-if-absent; if someone else won, read theirs."""

    def __init__(self, model: type[Model], instance: Model, *, ttl: Any) -> None:
        self.model = model
        self.instance = instance
        self.ttl = resolve_ttl(model._schema.ttl, ttl)
        self._armed()

    def __repr__(self) -> str:
        pk = _describe_pk(self.model._schema, self.model._schema.pk_values(self.instance))
        return f"<GetOrCreateQuery {self.model.__name__} {pk}>"

    def _plan(self) -> Plan:
        model = self.model
        schema = model._schema
        backend = schema.backend
        key = schema.key_of(self.instance)
        for _ in range(MAX_UPDATE_ATTEMPTS):
            payload = _check((yield [(backend, Batch((Get(key),)))])[0][0])
            if payload is not None:
                return schema.decode(key, payload), False
            if pre_save.receivers_for(model):
                yield Emit(pre_save, model, [self.instance], {})
            command = write_row(schema, "add", key, self.instance, self.ttl)
            added = checked(schema, command, (yield [(backend, Batch((command,)))])[0][0])
            if added:
                if post_save.receivers_for(model):
                    yield Emit(post_save, model, [self.instance], {"created": True})
                return self.instance, True
        raise ConflictError(f"{schema.model_name}: get_or_create of {key!r} kept racing")


# -- across models ---------------------------------------------------------------------------


class MultiQuery(_Write, Query[R]):
    """Several plans run in lockstep: one round trip per backend per step."""

    def __init__(
        self, plans: list[Any], assemble: Any, what: str = "", writes: bool = False
    ) -> None:
        self._plans = plans
        self._assemble = assemble
        self._what = what
        if writes:
            self._armed()

    def __repr__(self) -> str:
        return f"<MultiQuery {self._what}>" if self._what else "<MultiQuery>"

    def _plan(self) -> Plan:
        values = yield from combine([p() for p in self._plans])
        return self._assemble(values)


def _group(items: Iterable[tuple[Any, Any]]) -> dict[Any, list[tuple[int, Any]]]:
    groups: dict[Any, list[tuple[int, Any]]] = {}
    for index, (group, item) in enumerate(items):
        groups.setdefault(group, []).append((index, item))
    return groups


def insert_many(*instances: Model, ttl: Any = NOTHING) -> MultiQuery[list[Any]]:
    """Write instances of any models in one round trip per backend; the instances in order.

    Example::

        await co.insert_many(user, article, collection)
    """

    for obj in instances:
        if not isinstance(obj, Model):
            raise TypeError(f"co.insert_many takes model instances, not {obj!r}")
        obj._check_not_sparse("insert")
    groups = _group((type(o), o) for o in instances)
    queries: list[tuple[list[tuple[int, Any]], InsertQuery[Any]]] = []
    for model, g in groups.items():
        query: InsertQuery[Any] = InsertQuery(model, [o for _, o in g], ttl=ttl, single=False)
        query._unsent = False  # the MultiQuery carries the duty to run
        queries.append((g, query))

    def assemble(values: list[list[Any]]) -> list[Any]:
        out: list[Any] = [None] * len(instances)
        for (group, _), written in zip(queries, values, strict=True):
            for (index, _), obj in zip(group, written, strict=True):
                out[index] = obj
        return out

    return MultiQuery(
        [q._plan for _, q in queries],
        assemble,
        f"co.insert_many of {len(instances)} instance(s)",
        writes=True,
    )


def _model_pk(item: Any, what: str) -> tuple[type[Model], tuple[Any, ...], Model | None]:

    if isinstance(item, Model):
        return type(item), type(item)._schema.pk_values(item), item
    if (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], type)
        and issubclass(item[0], Model)
    ):
        return item[0], item[0]._schema.normalize_pk(item[1]), None
    raise TypeError(f"co.{what} takes (Model, pk) pairs or instances, not {item!r}")


def query_many(*items: Any) -> MultiQuery[list[Any]]:
    """Rows of any models, ``(Model, pk)`` pairs, in one multi-get per backend; in order.

    Example::

        user, article = await co.query_many((User, 1), (Article, 7))
    """
    parsed = [_model_pk(item, "query_many") for item in items]
    groups = _group((model, pk) for model, pk, _ in parsed)
    queries: list[tuple[list[tuple[int, Any]], SelectQuery[Any]]] = [
        (g, SelectQuery(model, [pk for _, pk in g], mode="many")) for model, g in groups.items()
    ]

    def assemble(values: list[list[Any]]) -> list[Any]:
        out: list[Any] = [None] * len(items)
        for (group, _), rows in zip(queries, values, strict=True):
            for (index, _), row in zip(group, rows, strict=True):
                out[index] = row
        return out

    return MultiQuery([q._plan for _, q in queries], assemble)


def delete_many(*items: Any) -> MultiQuery[int]:
    """Delete rows of any models (instances or ``(Model, pk)`` pairs), one round trip per
    backend; the number deleted.

    Example::

        await co.delete_many(user, (Article, 7))
    """
    parsed = [_model_pk(item, "delete_many") for item in items]
    groups = _group((model, (pk, obj)) for model, pk, obj in parsed)
    queries: list[DeleteQuery[Any]] = []
    for model, g in groups.items():
        objs = [obj if obj is not None else model._sparse(pk) for _, (pk, obj) in g]
        query: DeleteQuery[int] = DeleteQuery(
            model, [pk for _, (pk, _) in g], mode="many", instances=objs
        )
        query._unsent = False  # the MultiQuery carries the duty to run
        queries.append(query)
    return MultiQuery(
        [q._plan for q in queries], sum, f"co.delete_many of {len(items)} row(s)", writes=True
    )


def prefetch(instances: Sequence[Model | None], *paths: str) -> MultiQuery[list[Any]]:
    """Load foreign keys of instances you already have, one batch per level.

    Example::

        articles = [a for a in await Article.query_many(*ids) if a]
        await co.prefetch(articles, "author")
    """

    objs = [o for o in instances if o is not None]
    by_model = _group((type(o), o) for o in objs)
    trees = []
    for model in by_model:
        if not (isinstance(model, type) and issubclass(model, Model)):
            raise TypeError(f"co.prefetch takes model instances, not {model!r}")
        trees.append((model, parse_related(model, paths)))
    plans = [lambda m=m, t=t: prefetch_plan([o for _, o in by_model[m]], t) for m, t in trees]
    return MultiQuery(plans, lambda _: list(instances))
