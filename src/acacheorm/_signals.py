"""Signals sent around writes: ``pre_save``, ``post_save``, ``pre_delete``, ``post_delete``.

Receivers are called ``fn(sender, instance, **kwargs)`` in the order they were connected;
they may be plain functions or coroutine functions. A receiver that raises in a ``pre_*``
signal stops the write (nothing is written) and the exception propagates; in a ``post_*``
signal it propagates after the write.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Signal:
    """A named hook; connect receivers, optionally only for one model (``sender=``).

    Example::

        @co.pre_save.connect(sender=User)
        def stamp(sender, instance, **kwargs):
            instance.name = instance.name.strip()

        co.pre_save.disconnect(stamp, sender=User)
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._receivers: list[tuple[Callable[..., Any], type | None]] = []

    def connect(self, receiver: F | None = None, *, sender: type | None = None) -> Any:
        """Connect ``receiver`` (for ``sender`` only, or every model); usable as a decorator."""
        if receiver is None:

            def decorator(fn: F) -> F:
                self.connect(fn, sender=sender)
                return fn

            return decorator
        if not callable(receiver):
            raise TypeError(f"a receiver must be callable, not {receiver!r}")
        if (receiver, sender) not in self._receivers:
            self._receivers.append((receiver, sender))
        return receiver

    def disconnect(self, receiver: Callable[..., Any], *, sender: type | None = None) -> bool:
        """Remove a receiver connected with the same ``sender``; whether it was connected."""
        try:
            self._receivers.remove((receiver, sender))
        except ValueError:
            return False
        return True

    def receivers_for(self, sender: type) -> list[Callable[..., Any]]:
        """The receivers that `send` calls for ``sender``, in order.

        Example::

            assert stamp in co.pre_save.receivers_for(User)
        """
        return [fn for fn, s in self._receivers if s is None or s is sender]

    def __bool__(self) -> bool:
        return bool(self._receivers)

    async def send(self, sender: type, instance: Any, **kwargs: Any) -> None:
        """Call every receiver for ``sender`` with ``instance``; awaits async receivers."""
        for fn in self.receivers_for(sender):
            result = fn(sender, instance, **kwargs)
            if inspect.isawaitable(result):
                await result

    def __repr__(self) -> str:
        return f"<Signal {self.name} receivers={len(self._receivers)}>"


pre_save = Signal("pre_save")
"""Sent before an instance is written (create, insert, save, updates); a receiver that
raises stops the write.

Example::

    @co.pre_save.connect(sender=User)
    def strip_name(sender, instance, **kwargs):
        instance.name = instance.name.strip()
"""

post_save = Signal("post_save")
"""Sent after an instance was written, with ``created=`` (False for ``save()`` and updates).

Example::

    @co.post_save.connect(sender=User)
    async def announce(sender, instance, created, **kwargs):
        await events.publish("user.saved", {"id": instance.id, "created": created})
"""

pre_delete = Signal("pre_delete")
"""Sent before a row is deleted; deleting by primary key sends a sparse instance.

Example::

    co.pre_delete.connect(archive, sender=User)
"""

post_delete = Signal("post_delete")
"""Sent after a row was deleted, for each row that existed.

Example::

    @co.post_delete.connect(sender=User)
    async def forget_sessions(sender, instance, **kwargs):
        await Session.delete_many(*await sessions_of(instance.pk))
"""
