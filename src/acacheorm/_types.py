"""Small shared things: sentinels, and the pause of the garbage collector around large
batches."""

from __future__ import annotations

import enum
import gc
from collections.abc import Callable
from typing import Any, Final, Literal, TypeVar

_T = TypeVar("_T")


class _Nothing(enum.Enum):
    NOTHING = "NOTHING"

    def __repr__(self) -> str:
        return "NOTHING"

    def __bool__(self) -> Literal[False]:
        return False


#: "Not given", where ``None`` means something (``ttl=None`` is "never expires").
NOTHING: Final = _Nothing.NOTHING


def collector_paused(count: int, fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)``, with the cyclic garbage collector paused (and restored after) when
    it runs and ``count``, the rows ``fn`` makes objects for, is large (256 or more):
    for work that awaits nothing and makes many small objects but no reference cycles."""
    if count < 256 or not gc.isenabled():
        return fn(*args)
    gc.disable()
    try:
        return fn(*args)
    finally:
        gc.enable()
