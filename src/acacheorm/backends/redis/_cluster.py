"""What `RedisBackend` does below redis-py's public API: the only module that does.

redis-py's pipelines and commands re-send after a connection error (a write whose reply was
lost would run twice), and its cluster pipeline spends ~15 µs of Python per command. So
writes are sent here, on connections taken from redis-py's pools, packed by hiredis; on
Cluster, straight to the nodes that own their slots, following ``MOVED``/``ASK`` here. That
reaches into redis-py's internals: ``RedisCluster.nodes_manager`` and its slot cache,
``ClusterNode.acquire_connection``/``release``, ``RedisCluster._initialize``,
``Redis._single_conn_lock``, a connection's ``_parser`` (the near cache's push handler; on
Cluster, its hiredis ``_reader``, to take replies already received without a read each:
without it, every reply is read through ``read_response``).

Those were checked against the redis-py versions in `SUPPORTED` (pyproject bounds the
dependency alike). With another version, or when one of them is missing, `private_api`
is False and batches go through redis-py's public pipelines instead (``pipeline()``,
``execute(raise_on_error=False)``): the results are the same, but a connection error may
make redis-py send a write again, and it costs more Python per command.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, NoReturn

from ..._exceptions import BackendError
from ..base import read_less, unknown_outcome
from ._wire import _NO_REPLY, PackedCalls, _ArgsOf, _translate, _unavailable_types

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import ClusterNode, RedisCluster

logger = logging.getLogger("acacheorm.backends.redis")

#: The redis-py versions whose internals this module was written against: [low, high).
SUPPORTED = ((8, 1), (9,))
_REDIRECTS = 16  # rounds of MOVED/ASK followed in a Cluster batch (redis-py's request TTL)
#: The deadline of the running Cluster batch: each node's part is bounded by it on its own,
#: so a node that does not answer fails only its own commands.
SCOPE: contextvars.ContextVar[asyncio.Timeout | None] = contextvars.ContextVar(
    "acacheorm_redis_scope", default=None
)
#: (class path, attribute) pairs this module uses that redis-py does not document.
_PRIVATE = (
    ("redis.asyncio.cluster.ClusterNode", "acquire_connection"),
    ("redis.asyncio.cluster.ClusterNode", "release"),
    ("redis.asyncio.cluster.ClusterNode", "disconnect_if_needed"),
    ("redis.asyncio.connection.AbstractConnection", "should_reconnect"),
    ("redis.asyncio.cluster.NodesManager", "get_node_from_slot"),
    ("redis.asyncio.cluster.NodesManager", "move_slot"),
    ("redis.asyncio.cluster.NodesManager", "set_nodes"),
    ("redis.asyncio.connection.AbstractConnection", "send_packed_command"),
    ("redis.asyncio.connection.AbstractConnection", "read_response"),
)


def _version(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@functools.cache
def private_api() -> bool:
    """Whether the installed redis-py is one this module knows the internals of.

    Checked once per process, at the first batch: the version must be in `SUPPORTED` and
    every attribute in ``_PRIVATE`` must exist. Otherwise every batch takes redis-py's public
    pipelines (see the module docstring), and a warning is logged once saying why.
    """
    import importlib

    import redis

    version = _version(getattr(redis, "__version__", "0"))
    low, high = SUPPORTED
    if not low <= version < high:
        logger.warning(
            "redis-py %s is outside the supported range (>=8.1,<9): RedisBackend uses "
            "redis-py's public pipelines, which may re-send a write after a connection error",
            redis.__version__,
        )
        return False
    for path, attr in _PRIVATE:
        module, _, name = path.rpartition(".")
        if not hasattr(getattr(importlib.import_module(module), name, None), attr):
            logger.warning(
                "redis-py %s has no %s.%s: RedisBackend uses redis-py's public pipelines, "
                "which may re-send a write after a connection error",
                redis.__version__,
                name,
                attr,
            )
            return False
    return True


class Refused(Exception):
    """The server refused a MULTI/EXEC as a whole (EXECABORT); ``reason`` says why."""

    def __init__(self, reason: Exception) -> None:
        super().__init__(str(reason))
        self.reason = reason


@functools.cache
def _packer() -> Callable[[tuple[Any, ...]], bytes] | None:
    """hiredis' C ``pack_command``, or None without hiredis.

    redis-py's asyncio connections pack in Python (~1.8 ms for 1,000 GETs, against 0.24 ms).
    Every argument a wire carries is bytes, an int or an ASCII str, which both pack alike.
    """
    try:
        from hiredis import pack_command
    except ImportError:  # pragma: no cover - hiredis comes with the redis extra
        return None
    return pack_command


#: Bytes of packed commands written at once when a batch's arguments are built as they are
#: sent (`_wire._LazyWire`): the server runs the first part while the client builds the next.
_PART = 1 << 16


async def _send_all(conn: Any, wanted: Iterable[Sequence[Any]], parts: bool) -> None:
    """Write ``wanted`` (packed by hiredis) on ``conn``: in one write, or with ``parts``
    (arguments built as they are read: `_wire._LazyWire`, the script calls of a large batch
    of index writes) in parts of about `_PART` bytes, each written as soon as it is packed,
    so that the server runs the first calls while the client builds the next ones.

    Nothing is sent twice. Packing (or building) that fails once a part is written raises
    `BackendUnavailable` saying that the outcome is unknown (the caller closes the
    connection); a connection error is redis-py's to raise, as for one write.
    """
    pack = _packer()
    if pack is None:  # pragma: no cover - hiredis comes with the redis extra
        await conn.send_packed_command(conn.pack_commands(list(wanted)))
        return
    part: list[bytes] = []
    size = 0
    sent = False
    try:
        for args in wanted:
            data = pack(tuple(args))
            part.append(data)
            size += len(data)
            if parts and size >= _PART:
                # a health check (a PING and its reply) only before the first part
                await conn.send_packed_command(part, check_health=not sent)
                sent = True
                part = []
                size = 0
    except Exception as exc:
        if sent and _translate(exc, None) is None:
            raise unknown_outcome(
                BackendError(f"a batch could not be sent whole: {exc!r}")
            ) from exc
        raise
    if part or not sent:
        await conn.send_packed_command(part, check_health=not sent)


def _read_less(conn: Any) -> None:
    """`read_less` for the socket transport of redis-py connection ``conn`` (redis-py's
    reader takes 64 KiB per read anyway)."""
    writer = conn._writer
    if writer is not None:
        read_less(writer.transport)


async def _exchange(conn: Any, commands: Sequence[Sequence[Any]], transaction: bool) -> list[Any]:
    """Send ``commands`` on ``conn`` in one write and read their replies, an error reply as
    its exception; in ``MULTI``/``EXEC`` when ``transaction`` (`Refused` when the server
    aborts it: then nothing ran).

    Nothing is ever sent twice: a connection lost once the write began raises, and the
    caller reports that the outcome is unknown (redis-py's own pipelines and commands retry
    after a connection error, re-sending writes that may have run). Whatever interrupts the
    reads leaves the connection closed, never back in the pool with replies still to come.
    """
    if not transaction and len(commands) == 1 and type(commands) is not _ArgsOf:
        return [await _exchange_one(conn, commands[0])]  # a lone command: the same, leaner
    from redis.exceptions import ExecAbortError, ResponseError

    wanted = [("MULTI",), *commands, ("EXEC",)] if transaction else commands
    unread = len(wanted)
    read = conn.read_response
    try:
        await _send_all(conn, wanted, not transaction and type(commands) is _ArgsOf)
        _read_less(conn)
        if not transaction:
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await read())
                except ResponseError as exc:
                    replies.append(exc)
                unread -= 1
            return replies
        await read()  # +OK for MULTI
        unread -= 1
        queued: list[ResponseError] = []
        for _ in commands:
            try:
                await read()  # +QUEUED
            except ResponseError as exc:
                queued.append(exc)
            unread -= 1
        try:
            reply = await read()
        except ExecAbortError as exc:
            unread = 0
            # Nothing ran; the reason is why a command could not be queued (MOVED, OOM…).
            raise Refused(queued[0] if queued else exc) from exc
        unread = 0
    except BaseException:
        if unread:
            await conn.disconnect(nowait=True)
        raise
    if not isinstance(reply, list) or len(reply) != len(commands):
        raise BackendError(f"redis EXEC gave an unexpected reply: {reply!r}")
    return reply


async def _exchange_one(conn: Any, args: Sequence[Any]) -> Any:
    """`_exchange` of one command (not in a transaction, not built late), with less on the
    way: packed by hiredis, sent, its one reply read by redis-py's ``read_response``
    (nothing is buffered before it is read). The reply, an error reply as its exception.

    ``send_packed_command`` and ``read_response`` close the connection on any exception
    (cancellation, timeout, connection error), so none goes back to the pool with a reply
    still to come."""
    from redis.exceptions import ResponseError

    pack = _packer()
    await conn.send_packed_command(conn.pack_command(*args) if pack is None else pack(tuple(args)))
    _read_less(conn)
    try:
        return await conn.read_response()
    except ResponseError as exc:
        return exc  # an error reply, read whole: the connection stays usable


async def cluster_round_trip(
    client: RedisCluster, commands: Sequence[list[Any]], slots: list[int]
) -> list[Any]:
    """Non-atomic commands on Cluster: one write per node, to every node concurrently.

    redis-py's cluster pipeline spends ~15 µs of Python per command (it routes each one
    again and packs in Python): 1,000 GETs over 1,000 slots took 15-24 ms with it, 4 ms
    here, and ~2 ms of CPU (a whole ``execute``) since replies already received are taken
    from the reader without a read each. Each node gets all of its commands in one write
    on one pooled connection, and its replies are read in order. A small batch (every
    node's request at most `_PART` bytes, every node with a pooled connection ready) takes
    no task per node: its requests are all written first, then each node's replies read in
    turn (`_at_once`); any other takes a task per node (`_per_node`). Both keep the
    failures below per node.

    A command answered MOVED or ASK did not run: those, and only those, are sent again,
    in batch order, to where the reply points (after MOVED the slot map learns the new
    owner; after ASK the command follows an ``ASKING`` on the same connection, which
    redis-py's own redirect handling does not ensure). Within a slot this keeps the
    order of commands on one key: the owner answers MOVED to every command after the
    slot left it, and ASK for a key only when it does not hold that key, which no later
    command on it can then create there. A command that ran is never sent twice; one
    still redirected after ``_REDIRECTS`` rounds keeps the error in its slot.

    A node that fails (connection lost, no answer within the timeout) fails only the
    commands it had not answered: their slots get the error, the other nodes' replies
    stand. Only when every command failed so is the error raised for the whole batch.
    """
    if not private_api():
        return await _public_pipeline(client, commands, False)
    nodes = client.nodes_manager
    node_of = nodes.get_node_from_slot
    groups: dict[str, tuple[ClusterNode, list[int]]] = {}
    try:
        # get_node_from_slot(slot) without its call: the slot's primary.
        cache = nodes.slots_cache
        for k, slot in enumerate(slots):
            node = cache[slot][0]
            group = groups.get(node.name)
            if group is None:
                groups[node.name] = group = (node, [])
            group[1].append(k)
    except (KeyError, IndexError, TypeError) as exc:  # the slot is not in the slot map
        _not_covered(client, slot, exc)
    replies: list[Any] = [_NO_REPLY] * len(commands)
    errors: list[int] = []  # positions of the error replies
    asking: set[int] = set()
    unavailable = _unavailable_types()
    failed = 0  # positions that hold a node's failure
    for round_ in range(_REDIRECTS):
        outcomes: list[Exception | None] | None = None
        packed: list[list[bytes] | None] = [None] * len(groups)
        if round_ == 0 and len(groups) > 1 and type(commands) is not _ArgsOf:
            # the common case: several nodes, nothing to redirect, every request small
            packed, outcomes = await _at_once(client, groups, commands, replies, errors)
        if outcomes is None:
            calls = [
                _node_round_trip(client, node, commands, ks, replies, errors, asking, data)
                for (node, ks), data in zip(groups.values(), packed, strict=True)
            ]
            if round_ == 0 and len(calls) == 1:
                await calls[0]  # one node: its failure is the whole batch's
            else:
                outcomes = await _per_node(calls)
        if outcomes is not None:
            for (_, ks), failure in zip(groups.values(), outcomes, strict=True):
                if failure is None:
                    continue
                for k in ks:
                    if replies[k] is _NO_REPLY:
                        replies[k] = failure
                        failed += 1
            if failed == len(commands):
                raise next(r for r in replies if isinstance(r, BaseException))
        if not errors:
            return replies
        from redis.exceptions import AskError, MovedError

        errors.sort()
        for k in errors:
            if isinstance(replies[k], unavailable):  # CLUSTERDOWN: the slot map is stale
                relearn_slots(client)
        again = [k for k in errors if isinstance(replies[k], AskError)]  # or MovedError
        if not again:
            return replies
        errors.clear()
        asking.clear()
        groups.clear()
        moved: set[int] = set()
        for k in again:
            err = replies[k]
            replies[k] = _NO_REPLY
            if isinstance(err, MovedError):
                if err.slot_id not in moved:
                    moved.add(err.slot_id)
                    await nodes.move_slot(err)
                node = node_of(slots[k])
            else:
                node = node_at(client, err.host, err.port)
                asking.add(k)
            group = groups.get(node.name)
            if group is None:
                groups[node.name] = group = (node, [])
            group[1].append(k)
    return replies


async def lone_round_trip(client: RedisCluster, args: list[Any], slot: int) -> Any:
    """One command alone, straight to the node owning ``slot``: its reply, an error reply
    as the exception (``MOVED``, ``ASK``: the caller follows them). A node's failure is
    raised, as `cluster_round_trip` raises it for a batch on one node."""
    try:
        node = client.nodes_manager.slots_cache[slot][0]  # as in cluster_round_trip
    except (KeyError, IndexError, TypeError) as exc:
        _not_covered(client, slot, exc)
    reply: list[Any] = [_NO_REPLY]
    await _node_round_trip(client, node, [args], [0], reply, [], frozenset())
    return reply[0]


async def lone_read(client: RedisCluster, args: list[Any], slot: int) -> Any:
    """One read alone (a model's ``GET``), as `lone_round_trip` sends it, with less on the
    way: the slot map learnt first only when the client must (re)learn it (what
    ``RedisCluster.initialize`` checks), then `_exchange_one` on a pooled connection of the
    node owning ``slot``. The reply, an error reply as the exception (``MOVED``, ``ASK``:
    the caller follows them); a node's failure is raised."""
    if client.__dict__.get("_initialize", True):
        await client.initialize()
    try:
        node = client.nodes_manager.slots_cache[slot][0]  # as in cluster_round_trip
    except (KeyError, IndexError, TypeError) as exc:
        _not_covered(client, slot, exc)
    conn = node.acquire_connection()
    try:
        await node.disconnect_if_needed(conn)  # marked after a topology change
        return await _exchange_one(conn, args)
    except _unavailable_types():
        relearn_slots(client)  # as `_node_round_trip` does after a connection error
        raise
    finally:
        node.release(conn)


def _not_covered(client: RedisCluster, slot: int, cause: Exception) -> NoReturn:
    """Raise that the client's slot map has no node for ``slot`` (a partial ``CLUSTER
    SLOTS`` reply, a shrinking cluster), after asking it to learn the map again."""
    from redis.exceptions import SlotNotCoveredError

    relearn_slots(client)  # learn the slot map again for the next call
    raise SlotNotCoveredError(f"hash slot {slot} is not covered") from cause


def node_at(client: RedisCluster, host: str, port: int, *, add: bool = True) -> ClusterNode:
    """The node at ``host:port``, added to the client's nodes if new (as redis-py's
    ``move_slot`` does; not with ``add=False``): a slot may migrate to a node that owns no
    slot yet."""
    from redis.asyncio.cluster import ClusterNode

    nodes = client.nodes_manager
    node = nodes.get_node(host, port)
    if node is None:
        node = ClusterNode(host, port, "primary", **nodes.connection_kwargs)
        if add:
            nodes.set_nodes(nodes.nodes_cache, {node.name: node})
    return node


async def _per_node(calls: list[Coroutine[Any, Any, None]]) -> list[Exception | None]:
    """Run one call per node concurrently; what each raised (None: it succeeded).

    Each call is bounded by the batch's deadline on its own, so a node that does not
    answer in time fails only its own part. Cancelling the caller cancels every call and
    waits for them, so none goes on reading without a deadline around it. An exception
    that is not a driver or network error (a bug) is raised once all calls are done.
    """
    scope = SCOPE.get()
    deadline = None if scope is None else scope.when()
    tasks = [asyncio.ensure_future(c) for c in calls]
    late: set[asyncio.Future[None]] = set()
    if scope is not None:
        scope.reschedule(None)  # the wait below keeps the deadline instead
    try:
        wait = None if deadline is None else deadline - asyncio.get_running_loop().time()
        if wait is None or wait > 0:
            _, late = await asyncio.wait(tasks, timeout=wait)
        else:
            late = set(tasks)
    finally:
        for task in tasks:
            task.cancel()  # those not done: on timeout, or when the caller is cancelled
        pending = [task for task in tasks if not task.done()]
        if pending:
            await asyncio.wait(pending)
        if scope is not None:  # after the wait: it must not fail the nodes that answered
            scope.reschedule(deadline)
    outcomes: list[Exception | None] = []
    for task in tasks:
        if task in late:
            if not task.cancelled():
                task.exception()  # finished while being cancelled: superseded
            outcomes.append(TimeoutError())
        else:
            exc = task.exception()
            if exc is not None and not isinstance(exc, Exception):
                raise exc
            outcomes.append(exc)
    for exc in outcomes:
        if exc is not None and _translate(exc, None) is None:
            raise exc
    return outcomes


async def _at_once(
    client: RedisCluster,
    groups: dict[str, tuple[ClusterNode, list[int]]],
    commands: Sequence[list[Any]],
    replies: list[Any],
    errors: list[int],
) -> tuple[list[list[bytes] | None], list[Exception | None] | None]:
    """Each node's commands packed, and `_per_node`'s outcomes of sending them to every
    node without a task per node: every request written at once, then each node's replies
    read in turn (the replies of a later node wait in its connection's buffer meanwhile).
    A task per node, their wait and the loop iterations they take cost more than the rest
    of the round trip of a small batch (a filter's reads of its 16 buckets).

    The outcomes are None (nothing sent: `_node_round_trip` sends the packed requests)
    unless every node has a pooled connection that is connected, has no reconnect, health
    check or socket timeout due and reads with hiredis, and a request of at most `_PART`
    bytes (its write never waits: a stalled node cannot hold up the others' writes).

    As with `_per_node`, a node's connection error fails only that node's commands, and
    the batch's deadline bounds the reads: at the deadline the node being read fails with
    `TimeoutError`, and each later node keeps the replies it had sent by then (taken
    without waiting) or fails alike. A connection that still has replies to come when the
    reads stop (cancellation, a bug) is closed, never back in the pool so.
    """
    pack = _packer()
    known = _hiredis_reader()
    if pack is None or known is None:  # pragma: no cover - hiredis comes with the redis extra
        return [None] * len(groups), None
    packed: list[list[bytes] | None]
    if type(commands) is PackedCalls:  # packed already (a filter's reads of its buckets)
        pre = commands.packed
        packed = [[pre[k] for k in ks] for _, ks in groups.values()]
    else:
        packed = [[pack(tuple(commands[k])) for k in ks] for _, ks in groups.values()]
    if any(sum(map(len, data)) > _PART for data in packed if data is not None):
        return packed, None
    now = asyncio.get_running_loop().time()
    nodes = [node for node, _ in groups.values()]
    conns: list[Any] = []
    ready = True
    try:
        for node in nodes:
            conn: Any = node.acquire_connection()
            conns.append(conn)
            parser = conn._parser
            if (
                not conn.is_connected
                or conn.should_reconnect()
                or conn.socket_timeout
                or (conn.health_check_interval and now > conn.next_health_check)
                or type(parser) is not known[0]
                or parser._reader is None
            ):
                ready = False
                break
    except Exception:  # no connection to take (MaxConnectionsError): the node's own error
        ready = False
    if not ready:
        for node, conn in zip(nodes, conns, strict=False):
            node.release(conn)
        return packed, None
    n = len(nodes)
    outcomes: list[Exception | None] = [None] * n
    # per node: 0 not written yet, 1 replies still to come, 2 done (read, or failed)
    state = [0] * n
    current = 0  # the node whose write or reads are under way
    scope = SCOPE.get()
    deadline = None if scope is None else scope.when()
    if scope is not None:
        scope.reschedule(None)  # the deadline below keeps it instead
    try:
        within = asyncio.timeout_at(deadline)
        try:
            async with within:
                for current, conn in enumerate(conns):  # a write never waits (see above)
                    state[current] = 1  # an interrupted write may have gone out
                    try:
                        await conn.send_packed_command(packed[current], check_health=False)
                    except Exception as exc:
                        state[current] = 2
                        await conn.disconnect(nowait=True)  # as redis-py does
                        outcomes[current] = _node_failed(client, exc)
                    else:
                        _read_less(conn)
                for current, (_, ks) in enumerate(groups.values()):
                    if state[current] == 1:
                        state[current] = 2  # _read_node closes it if interrupted
                        outcomes[current] = await _read_node(
                            client, conns[current], ks, replies, errors
                        )
        except TimeoutError:
            if not within.expired():
                raise
            for j, (_, ks) in enumerate(groups.values()):
                if j == current or state[j] == 0:  # cut off, or never written
                    outcomes[j] = TimeoutError()
                elif state[j] == 1:  # the replies already received, without waiting
                    state[j] = 2
                    try:
                        async with asyncio.timeout(0):
                            outcomes[j] = await _read_node(client, conns[j], ks, replies, errors)
                    except TimeoutError:
                        outcomes[j] = TimeoutError()
    finally:
        for conn, where in zip(conns, state, strict=True):
            if where == 1:  # interrupted before its replies were read
                await conn.disconnect(nowait=True)
        for node, conn in zip(nodes, conns, strict=True):
            node.release(conn)
        if scope is not None:  # after the reads: it must not fail the nodes that answered
            scope.reschedule(deadline)
    return packed, outcomes


def _node_failed(client: RedisCluster, exc: Exception) -> Exception:
    """``exc``, a node's failure, after learning the slot map again when it says the
    node is unavailable (as `_node_round_trip` does); raised when it is not a driver or
    network error (a bug)."""
    if isinstance(exc, _unavailable_types()):
        relearn_slots(client)
    if _translate(exc, None) is None:
        raise exc
    return exc


async def _read_node(
    client: RedisCluster, conn: Any, positions: list[int], replies: list[Any], errors: list[int]
) -> Exception | None:
    """Read the replies of ``positions`` from ``conn`` (hiredis, see `_at_once`) into
    ``replies`` as `_node_round_trip` does; the node's failure (a connection error), or
    None. Whatever interrupts the reads closes the connection."""
    gets = conn._parser._reader.gets
    plain = _PLAIN
    unread = len(positions)
    try:
        for k in positions:
            reply = gets()
            kind = type(reply)
            if kind not in plain and (
                kind is not list or (reply and isinstance(reply[0], BaseException))
            ):
                reply = await _settle(conn, reply, gets)
                if isinstance(reply, Exception):  # an error reply (a ResponseError)
                    errors.append(k)
            replies[k] = reply
            unread -= 1
        if conn.health_check_interval:  # as read_response does after each reply
            conn.next_health_check = asyncio.get_running_loop().time() + (
                conn.health_check_interval
            )
    except BaseException as exc:
        if unread:
            await conn.disconnect(nowait=True)
        if isinstance(exc, Exception):
            return _node_failed(client, exc)
        raise
    return None


async def _node_round_trip(
    client: RedisCluster,
    node: ClusterNode,
    commands: Sequence[list[Any]],
    positions: list[int],
    replies: list[Any],
    errors: list[int],
    asking: AbstractSet[int],
    packed: list[bytes] | None = None,
) -> None:
    """Send ``commands[k] for k in positions`` to ``node`` in one write (``ASKING`` first
    for those in ``asking``; ``packed``: those commands already packed, none asking);
    read the replies into ``replies[k]`` in order (an error reply as the exception, its
    ``k`` added to ``errors``).

    Replies already received are taken from the connection's hiredis reader without a
    coroutine each (see `_buffered`); the connection is read from only when none is.

    Whatever interrupts the reads (cancellation, timeout, a connection error) leaves the
    connection closed, never back in the pool with replies still to come: redis-py's
    ``send_packed_command`` and ``read_response`` close it on any exception, and so does
    the guard below for anything raised between two reads.
    """
    conn = node.acquire_connection()
    unread = 0
    try:
        await node.disconnect_if_needed(conn)  # marked after a topology change
        wanted: Iterable[Sequence[Any]]
        if packed is not None:
            unread = len(positions)
            await conn.send_packed_command(packed)
        elif asking:
            wanted = [
                args
                for k in positions
                for args in ((["ASKING"], commands[k]) if k in asking else (commands[k],))
            ]
            unread = len(wanted)
        else:
            # read as sent: arguments built late are built then (`_send_all`)
            wanted = (commands[k] for k in positions)
            unread = len(positions)
        if packed is None:
            await _send_all(conn, wanted, type(commands) is _ArgsOf)
        _read_less(conn)
        gets = _buffered(conn)
        plain = _PLAIN
        for k in positions:
            if k in asking:
                reply = gets()
                if type(reply) not in plain:
                    reply = await _settle(conn, reply, gets)
                    if isinstance(reply, Exception):
                        raise reply  # ASKING refused: the command after it did not run
                unread -= 1  # +OK for ASKING
            reply = gets()
            kind = type(reply)
            # A list (a script's reply) is taken as it comes too, unless it carries a
            # connection error as its first item, which `_settle` raises.
            if kind not in plain and (
                kind is not list or (reply and isinstance(reply[0], BaseException))
            ):
                reply = await _settle(conn, reply, gets)
                if isinstance(reply, Exception):  # an error reply (a ResponseError)
                    errors.append(k)
            replies[k] = reply
            unread -= 1
        if conn.health_check_interval:  # as read_response does after each reply
            conn.next_health_check = asyncio.get_running_loop().time() + (
                conn.health_check_interval
            )
    except BaseException as exc:
        if unread:
            await conn.disconnect(nowait=True)
        if isinstance(exc, _unavailable_types()):
            # As redis-py does after a connection error: learn the slot map again before
            # the next command (the node may have failed over).
            relearn_slots(client)
        raise
    finally:
        node.release(conn)


#: Reply types taken as they come from the hiredis reader (anything else: `_settle`).
_PLAIN = frozenset({bytes, int, type(None)})


@functools.cache
def _hiredis_reader() -> tuple[Any, object, type] | None:
    """redis-py's asyncio hiredis parser class, its "no complete reply yet" marker and
    hiredis' push type; None when redis-py does not have them as this module knows them."""
    try:
        import hiredis
        from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
    except ImportError:  # pragma: no cover - hiredis comes with the redis extra
        return None
    push = getattr(hiredis, "PushNotification", None)
    if push is None or "_reader" not in getattr(_AsyncHiredisParser, "__slots__", ()):
        return None  # pragma: no cover - another hiredis or redis-py
    return _AsyncHiredisParser, NOT_ENOUGH_DATA, push


def _nothing_buffered() -> Any:
    return _MORE


_MORE: Any = object()  # the marker without hiredis: always read through redis-py


def _buffered(conn: Any) -> Callable[[], Any]:
    """A function giving the next reply ``conn`` has already received, without a read: an
    error reply as its exception (not raised), a marker when no complete reply is in.

    redis-py's ``read_response`` costs a few coroutines per reply; 1,000 replies in one
    buffer are taken here by hiredis' ``Reader.gets`` alone. A connection that is not on
    redis-py's asyncio hiredis parser gets a function that never has a reply buffered, so
    every reply goes through ``read_response``.
    """
    known = _hiredis_reader()
    parser: Any = getattr(conn, "_parser", None)
    if known is None or type(parser) is not known[0] or parser._reader is None:
        return _nothing_buffered
    gets: Callable[[], Any] = parser._reader.gets
    return gets


async def _settle(conn: Any, reply: Any, gets: Callable[[], Any]) -> Any:
    """What redis-py's ``read_response`` makes of ``reply``, given by ``gets`` and not a
    plain value: read from the socket when no reply was complete; a connection error
    (``LOADING``…) closes the connection and is raised; an error reply is returned; a push
    message goes to the parser's handler and the next reply is the command's."""
    known = _hiredis_reader()
    while True:
        if reply is _MORE or (known is not None and reply is known[1]):
            try:
                return await conn.read_response()
            except Exception as exc:
                from redis.exceptions import ResponseError

                if isinstance(exc, ResponseError):
                    return exc
                raise
        from redis.exceptions import ConnectionError

        if isinstance(reply, ConnectionError):
            await conn.disconnect(nowait=True)
            raise reply
        if known is not None and isinstance(reply, known[2]):
            await conn._parser.handle_push_response(reply)
            reply = gets()
            continue
        if isinstance(reply, list) and reply and isinstance(reply[0], ConnectionError):
            await conn.disconnect(nowait=True)
            raise reply[0]
        return reply


async def multi_exec_on(client: RedisCluster, slot: int, commands: list[list[Any]]) -> list[Any]:
    """``commands`` in MULTI/EXEC on the node owning ``slot`` (`Refused` if aborted)."""
    if not private_api():
        return await _public_pipeline(client, commands, True)
    node: ClusterNode = client.nodes_manager.get_node_from_slot(slot)
    conn = node.acquire_connection()
    try:
        await node.disconnect_if_needed(conn)  # marked after a topology change
        return await _exchange(conn, commands, True)
    finally:
        node.release(conn)


# -- clear ----------------------------------------------------------------------------


class Spare:
    """One connection of a standalone client's pool kept out of it between round trips
    (a lone get, the read and the write of a lone update, any batch), so that each does
    not pay for the pool's taking and giving back: with redis-py 8.1, its lock, metrics
    and release event cost ~76k instructions per round trip, a lone get ~200k with none.

    One round trip at a time takes it (others, meanwhile, connections from the pool); it
    is checked as the pool checks a connection it hands out (``ensure_connection``), and
    one that failed goes back to the pool (redis-py closed it). The pool counts it as in
    use throughout: only for a client of the backend's own, whose bound on batches at once
    leaves room for it.
    """

    __slots__ = ("kept",)

    def __init__(self) -> None:
        #: (client, connection) kept, read and replaced as one object (loops in threads)
        self.kept: tuple[Any, Any] | None = None

    def take(self, client: Redis) -> Any:
        """The connection kept for ``client``, now taken (None: there is none)."""
        kept = self.kept
        if kept is None or kept[0] is not client:
            return None
        self.kept = None
        return kept[1]

    def keep(self, client: Redis, conn: Any) -> bool:
        """Keep ``conn`` of ``client`` unless one is kept already for it; whether it is.
        One kept for another client (another loop's, closed with it) is let go."""
        kept = self.kept
        if kept is not None and kept[0] is client:
            return False
        self.kept = (client, conn)
        return True


async def standalone_round_trip(
    client: Redis, commands: Sequence[list[Any]], transaction: bool, spare: Spare | None = None
) -> list[Any]:
    """``commands`` in one write on one pooled connection (in ``MULTI``/``EXEC`` when
    ``transaction``); their replies in order, an error reply as its exception. On
    ``spare``'s connection when one is given and that connection is free (see `Spare`)."""
    if not private_api():
        return await _public_pipeline(client, commands, transaction)
    if client.single_connection_client:
        lock = getattr(client, "_single_conn_lock", None)
        if lock is None:
            return await _public_pipeline(client, commands, transaction)
        await client.initialize()
        async with lock:
            return await _exchange(client.connection, commands, transaction)
    pool = client.connection_pool
    if spare is not None:
        conn = spare.take(client)
        try:
            if conn is not None:
                await pool.ensure_connection(conn)
            else:
                conn = await pool.get_connection()  # type: ignore[no-untyped-call]
            replies = await _exchange(conn, commands, transaction)
        except BaseException:
            if conn is not None:
                await pool.release(conn)
            raise
        if not spare.keep(client, conn):
            await pool.release(conn)
        return replies
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        return await _exchange(conn, commands, transaction)
    finally:
        await pool.release(conn)


async def _public_pipeline(
    client: Redis | RedisCluster, commands: Sequence[list[Any]], transaction: bool
) -> list[Any]:
    """The fallback without `private_api`: redis-py's own pipeline (cluster or not)."""
    from redis.exceptions import ExecAbortError

    pipe = client.pipeline(transaction=transaction)
    for args in commands:
        pipe.execute_command(*args)
    try:
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    except ExecAbortError as exc:
        raise Refused(exc) from exc
    return replies


def startup_node_names(client: RedisCluster) -> list[str]:
    """The ``host:port`` of the nodes the client was given (for repr)."""
    return sorted(client.nodes_manager.startup_nodes)


def check_connection_options(client: RedisCluster) -> None:
    """Build (without connecting) what each connection will be built from, so that a bad
    option (protocol=9, ssl_cert_reqs=bogus) fails now, not as an unavailable server."""
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class(**node.connection_kwargs)


def node_of_slot(client: RedisCluster, slot: int) -> ClusterNode:
    """The node the client believes owns ``slot`` (a KeyError if it knows none)."""
    return client.nodes_manager.get_node_from_slot(slot)


async def refresh_slots(client: RedisCluster) -> None:
    """Learn the slot map again, now."""
    await client.nodes_manager.initialize()


def relearn_slots(client: RedisCluster) -> None:
    """Have the client learn the slot map again before its next command, as redis-py does
    after a connection error (the node may have failed over)."""
    if hasattr(client, "_initialize"):  # else a redis-py without it: it relearns on its own
        client._initialize = True


def set_push_handler(conn: Any, handler: Callable[[Any], Any]) -> None:
    """Have ``conn`` (RESP3) pass invalidation pushes to ``handler``."""
    parser = getattr(conn, "_parser", None)
    if parser is None or not hasattr(parser, "set_invalidation_push_handler"):
        raise BackendError(
            "this redis-py has no invalidation push hook on its connections: the near "
            "cache cannot track Redis invalidations (redis-py >=8.1,<9 has it)"
        )
    parser.set_invalidation_push_handler(handler)


async def move_slot(client: RedisCluster, moved: Exception) -> None:
    """Learn from a ``MOVED`` reply where its slot went."""
    if private_api():
        await client.nodes_manager.move_slot(moved)  # type: ignore[arg-type]
    else:
        relearn_slots(client)
