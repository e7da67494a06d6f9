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

from ._commands import Batch, Command, Gets

if TYPE_CHECKING:
    from ._executor import Plan
    from .backends.base import Backend


def read_versions(backend: Backend, keys: Sequence[str]) -> Plan:
    """Read ``keys`` with their version tokens in one round trip. Returns, per key,
    ``(payload, token)``, ``None`` for a missing row, or the exception of a failed slot."""
    results: list[Any] = (yield [(backend, Batch(tuple(Gets(key) for key in keys)))])[0]
    return results


def write_unchanged(backend: Backend, commands: Sequence[Command]) -> Plan:
    """Send compare-and-swap writes made by the write-row step
    (``_writes.write_row(schema, "cas", key, row, ttl, token)``: a `Cas`, or an indexed
    write that swaps the row and its index entries together) in one round trip: each row
    is written only if it still holds the version read with its token. Returns, per write,
    ``True`` (written), ``False`` (changed or deleted since it was read: left alone) or the
    exception of a failed slot."""
    results: list[Any] = (yield [(backend, Batch(tuple(commands)))])[0]
    return results
