"""Small shared types: sentinels."""

from __future__ import annotations

import enum
from typing import Final, Literal


class _Nothing(enum.Enum):
    NOTHING = "NOTHING"

    def __repr__(self) -> str:
        return "NOTHING"

    def __bool__(self) -> Literal[False]:
        return False


#: "Not given", where ``None`` means something (``ttl=None`` is "never expires").
NOTHING: Final = _Nothing.NOTHING
