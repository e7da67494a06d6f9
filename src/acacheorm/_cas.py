"""Compare-and-swap plan steps: read rows with their version tokens, then write back only
the rows nobody changed meanwhile.

The update plan (`UpdateQuery`: read, merge, write, retry what changed) and the migration
plan (``acacheorm.cli._ops.migrate_plan``: read, re-encode, write, skip what changed) are
both built from these two steps, so their commands, tokens and TTL handling are one code.
Each step is one round trip, run by the executor like any other (hooks see it). Results
are handed back per slot, failed slots included: the calling plan decides whether a failed
slot fails it (an update) or is reported and skipped (a migration).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._commands import Batch, Cas, Gets

if TYPE_CHECKING:
    from ._executor import Plan
    from .backends.base import Backend


def read_versions(backend: Backend, keys: Sequence[str]) -> Plan:
    """Read ``keys`` with their version tokens in one round trip. Returns, per key,
    ``(payload, token)``, ``None`` for a missing row, or the exception of a failed slot."""
    results: list[Any] = (yield [(backend, Batch(tuple(Gets(key) for key in keys)))])[0]
    return results


def write_unchanged(backend: Backend, writes: Sequence[tuple[str, bytes, Any]], ttl: Any) -> Plan:
    """Write each ``(key, payload, token)`` only if the row still holds the version read
    with ``token``, in one round trip; ``ttl`` is ``KEEP_TTL`` to keep each row's remaining
    lifetime. Returns, per write, ``True`` (written), ``False`` (changed or deleted since
    it was read: left alone) or the exception of a failed slot."""
    commands = tuple(Cas(key, payload, token, ttl) for key, payload, token in writes)
    results: list[Any] = (yield [(backend, Batch(commands))])[0]
    return results
