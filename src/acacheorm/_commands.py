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
========  =====================================================================

``ttl`` is seconds as a float, ``None`` for "never expires", or `KEEP_TTL` (Cas, Replace)
for "keep the key's remaining time to live".
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple


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


Command = Get | Gets | Has | Set | Add | Replace | Cas | Delete | Incr | Touch

READ_COMMANDS: frozenset[type] = frozenset({Get, Gets, Has})


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


class Capabilities(NamedTuple):
    """What a backend does natively; the compiler and executor read it."""

    atomic_batch: bool = False
    native_cas: bool = False
    max_key_length: int | None = None
    max_value_size: int | None = None
