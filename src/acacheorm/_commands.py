"""Commands, batches and capabilities: the vocabulary shared by compiler, executor and backends.

A backend receives a `Batch` of commands and returns one result per command, in order.
A command that failed on its own (``incr`` of a non-numeric value, a value over the size
limit) gets a `BackendError` *instance* in its slot; so do the commands of a node that failed
(down, timed out) when other nodes of the batch answered (memcached with several nodes,
Redis Cluster). A failure of the whole round trip is raised. A write whose reply was lost is
never sent again: its failure is a `BackendUnavailable` saying that the outcome is unknown.
Backends know keys, bytes and TTLs, never models.

Results per command type:

========  =====================================================================
Get       ``bytes`` or ``None``
Gets      ``(bytes, token)`` or ``None``; the token is opaque, for a later `Cas`
Has       ``bool``
Set       ``True``
Add       ``bool`` (written only if the key was absent)
Replace   ``bool`` (written only if the key was present)
Cas       ``bool`` (written only if the key still holds the value read with the token)
Delete    ``bool`` (whether the key existed)
Incr      ``int``, the new value (a missing key counts as 0; ``delta`` may be negative)
Touch     ``bool`` (whether the key existed; its TTL is now ``ttl``)
Ttl       seconds left as a ``float``, ``None`` for a key that never expires, or `MISSING`
========  =====================================================================

`IndexedWrite` gives a ``bool`` as its mode's plain command, or an `IntegrityError` (a unique
value taken); `IndexRead` gives ``[(key, value), ...]`` or, with ``count_only``, an ``int``.

``ttl`` is seconds as a float, ``None`` for "never expires", or `KEEP_TTL` (Cas, Replace)
for "keep the key's remaining time to live".
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

from ._exceptions import BackendError


class _KeepTTL(enum.Enum):
    KEEP_TTL = "KEEP_TTL"

    def __repr__(self) -> str:
        return "KEEP_TTL"


#: Keep the remaining time to live of an existing key (for `Cas` and `Replace`).
KEEP_TTL = _KeepTTL.KEEP_TTL
"""As the ``ttl`` of a `Cas` or `Replace` command: keep the key's remaining time to live.

Example::

    from acacheorm._commands import Cas, Gets

    [(value, token)] = await backend.execute(co.Batch((Gets("k"),)))
    [written] = await backend.execute(co.Batch((Cas("k", b"new", token, co.KEEP_TTL),)))
"""


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


#: The result of a `Ttl` command for a key that does not exist (or has expired).
MISSING = _Missing.MISSING
"""The result of `Ttl` for an absent key (falsy, distinct from ``None``: no expiry).

Example::

    from acacheorm._commands import MISSING, Ttl

    [left] = await backend.execute(co.Batch((Ttl("k"),)))
    if left is MISSING: ...
"""

TTL = float | None
WriteTTL = float | None | _KeepTTL


class Get(NamedTuple):
    key: str


class Gets(NamedTuple):
    key: str


class Has(NamedTuple):
    key: str


class Set(NamedTuple):
    key: str
    value: bytes
    ttl: TTL = None


class Add(NamedTuple):
    key: str
    value: bytes
    ttl: TTL = None


class Replace(NamedTuple):
    key: str
    value: bytes
    ttl: WriteTTL = None


class Cas(NamedTuple):
    key: str
    value: bytes
    token: Any
    ttl: WriteTTL = KEEP_TTL


class Delete(NamedTuple):
    key: str


class Incr(NamedTuple):
    key: str
    delta: int = 1
    ttl: TTL = None


class Touch(NamedTuple):
    key: str
    ttl: TTL = None


class Ttl(NamedTuple):
    key: str


class IndexTerm(NamedTuple):
    """One index entry of a row: ``kind`` is ``"eq"`` (``value`` a canonical str: the rows
    holding exactly that value), ``"num"`` (``value`` a float score, ordered) or ``"lex"``
    (``value`` a str, ordered by its UTF-8 bytes)."""

    field: str
    kind: str
    value: str | float


class _NotRead(enum.Enum):
    NOT_READ = "NOT_READ"


#: In an `IndexRead` result: a row the backend did not read along with the index.
NOT_READ = _NotRead.NOT_READ


class IndexedWrite(NamedTuple):
    """Write (or delete) a row and its index entries atomically, in one step.

    ``bucket`` names the row's index bucket (every key of that bucket derives from it);
    ``mode`` is ``"set"``, ``"add"``, ``"replace"``, ``"cas"`` (``token`` from `Gets`),
    ``"delete"`` or ``"touch"`` (a new ``ttl`` for the row and its entries; ``value``
    unused for both). ``terms`` are the row's new entries: the backend keeps
    the row's previous entries itself and removes them, so no write needs the old row.
    ``unique`` are the canonical ``field + "\\x00" + value`` strings no other live row of the
    index may hold: if one does, nothing is written and the slot holds an `IntegrityError`.
    The result is a bool as for the plain command of the same mode.
    """

    key: str
    bucket: str
    mode: str
    value: bytes = b""
    ttl: WriteTTL = None
    token: Any = None
    terms: tuple[IndexTerm, ...] = ()
    unique: tuple[str, ...] = ()


class IndexRead(NamedTuple):
    """Read one index bucket (``key`` names it, as ``IndexedWrite.bucket``) without reading
    rows; only live rows are listed or counted.

    ``op`` ``"eq"``: the rows whose ``field`` entry is one of ``values`` (canonical strs);
    ``kind`` ``"num"`` there says the field is numeric and ordered (its ``"num"`` entries can
    answer it), anything else (``"eq"``) that it is not.
    ``op`` ``"range"``: ``kind`` ``"num"`` or ``"lex"``, between ``lo`` and ``hi`` (``None``:
    unbounded; ``lo_open``/``hi_open`` exclude the bound), in value order (``desc``
    reversed), skipping ``offset`` and keeping ``limit`` (``None``: all).
    Result: ``[(row_key, value), ...]`` (``value`` the score for ranges, ``None`` for
    ``eq``), or with ``count_only`` the number of rows. With ``rows=n`` a backend may add
    each listed row's stored value (``None`` if gone) for the first ``n`` rows, and
    `NOT_READ` for the others: ``(row_key, value, payload)``; the reader gets the rest
    (and every row of a backend that adds none) with `Get`.
    """

    key: str
    op: str
    field: str
    values: tuple[str, ...] = ()
    kind: str = "num"
    lo: Any = None
    hi: Any = None
    lo_open: bool = False
    hi_open: bool = False
    desc: bool = False
    offset: int = 0
    limit: int | None = None
    count_only: bool = False
    rows: int = 0


Command = (
    Get
    | Gets
    | Has
    | Set
    | Add
    | Replace
    | Cas
    | Delete
    | Incr
    | Touch
    | Ttl
    | IndexedWrite
    | IndexRead
)

READ_COMMANDS: frozenset[type] = frozenset({Get, Gets, Has, Ttl})
INDEX_COMMANDS: frozenset[type] = frozenset({IndexedWrite, IndexRead})


class Batch(NamedTuple):
    """Commands sent to one backend in one round trip.

    ``atomic=True`` asks for all-or-nothing (MULTI/EXEC on Redis); a backend that cannot do
    that raises `AtomicityError` instead of running it partially.

    Example::

        [(backend, batch)] = User.query_many(1, 2).compile()
        assert [type(c).__name__ for c in batch.commands] == ["Get", "Get"]
    """

    commands: tuple[Command, ...]
    atomic: bool = False

    def __repr__(self) -> str:
        kinds: dict[str, int] = {}
        for cmd in self.commands:
            name = type(cmd).__name__
            kinds[name] = kinds.get(name, 0) + 1
        inner = ", ".join(f"{k}x{v}" for k, v in kinds.items())
        return f"Batch({inner}{', atomic' if self.atomic else ''})"


class NotNative(BackendError):
    """In a result slot: the backend could not run this command natively and changed
    nothing; the executor runs ``redo`` instead as plain `Gets`/`Cas`/`Add` round trips
    (an `Incr` on a value the store's own increment cannot take). ``result``, if not
    None, is what the slot reports once ``redo`` succeeded; ``create=False``: a ``redo``
    that finds its key gone leaves it gone.

    Example::

        return NotNative(f"incr of {key!r}: not a 64-bit unsigned value", redo=cmd)
    """

    def __init__(
        self, message: str, redo: Command, *, result: Any = None, create: bool = True
    ) -> None:
        super().__init__(message)
        self.redo = redo
        self.result = result
        self.create = create


class Capabilities(NamedTuple):
    """What a backend does natively; the planner reads it before anything is sent.

    What a backend cannot do is refused in the plan (an ``atomic=True`` write of several
    rows without ``atomic_batch``, of keys on several hash slots with ``atomic_one_slot``,
    an update without ``native_cas``, a query by field without ``listable``); what it only
    lacks natively the executor emulates with plan steps of plain commands, so hooks see
    every round trip (``negative_incr``, ``replace_keep_ttl``).

    Example::

        from acacheorm.commands import Capabilities

        class MyBackend(co.Backend):
            capabilities = Capabilities(atomic_batch=True, native_cas=True)
    """

    #: Runs a batch all-or-nothing (``Batch(atomic=True)``).
    atomic_batch: bool = False
    #: ... but only when every key is in one Redis Cluster hash slot.
    atomic_one_slot: bool = False
    #: Runs `Gets` and `Cas` (updates, migrations, the emulations below need them).
    native_cas: bool = False
    #: Runs `Incr` with a negative delta, on any stored integer. Without it the executor
    #: runs a negative `Incr` as `Gets` then `Cas` (or `Add` for a missing key), retried.
    negative_incr: bool = True
    #: Runs `Replace` with ``ttl=KEEP_TTL``. Without it the executor runs it as `Gets` then
    #: ``Cas(..., KEEP_TTL)``, retried.
    replace_keep_ttl: bool = True
    #: `Backend.scan` lists every live key cheaply enough for queries by field (memcached
    #: can only dump its LRU, so it is not listable).
    listable: bool = False
    #: Runs `IndexedWrite` and `IndexRead` (secondary indexes, unique values).
    indexes: bool = False
    #: Index buckets per model: rows of an indexed model are spread over this many hash
    #: slots (Redis Cluster), each holding its rows' index entries; 1 elsewhere.
    index_buckets: int = 1
