"""The command vocabulary, public: what a backend author reads and returns.

A backend's `Backend._execute` receives a `Batch` of these commands and returns one result
per command, in order; a command that failed on its own gets a `BackendError` instance in
its slot. Its `Capabilities` tell the planner what it
does natively; whatever it lacks the planner works around with plan steps of its own, or
refuses before anything is sent.

========  =====================================================================
Get       ``bytes`` or ``None``
Gets      ``(bytes, token)`` or ``None``; the token is opaque, for a later `Cas`
Has       ``bool``
Set       ``True``
Add       ``bool`` (written only if the key was absent)
Replace   ``bool`` (written only if the key was present)
Cas       ``bool`` (written only if the key still holds the value read with the token)
Delete    ``bool`` (whether the key existed)
Incr      ``int``, the new value (a missing key counts as 0)
Touch     ``bool`` (whether the key existed; its TTL is now ``ttl``)
Ttl       seconds left as a ``float``, ``None`` for a key that never expires, or `MISSING`
========  =====================================================================

Example::

    from acacheorm.commands import Batch, Capabilities, Get, Set

    class DictBackend(co.Backend):
        capabilities = Capabilities(atomic_batch=True, native_cas=False)

        async def _execute(self, batch: Batch) -> list[object]:
            ...
"""

from ._commands import (
    INDEX_COMMANDS,
    KEEP_TTL,
    MISSING,
    NOT_READ,
    READ_COMMANDS,
    TTL,
    Add,
    Batch,
    Capabilities,
    Cas,
    Command,
    Delete,
    Get,
    Gets,
    Has,
    Incr,
    IndexedWrite,
    IndexRead,
    IndexTerm,
    NotNative,
    Replace,
    Set,
    Touch,
    Ttl,
    WriteTTL,
)

__all__ = [
    "INDEX_COMMANDS",
    "KEEP_TTL",
    "MISSING",
    "NOT_READ",
    "READ_COMMANDS",
    "TTL",
    "Add",
    "Batch",
    "Capabilities",
    "Cas",
    "Command",
    "Delete",
    "Get",
    "Gets",
    "Has",
    "Incr",
    "IndexRead",
    "IndexTerm",
    "IndexedWrite",
    "NotNative",
    "Replace",
    "Set",
    "Touch",
    "Ttl",
    "WriteTTL",
]
