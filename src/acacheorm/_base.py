"""The base type of every model, for the modules below `acacheorm._model`.

Those modules check ``isinstance(x, Model)`` and annotate with ``Model`` without importing
`acacheorm._model` (which imports them): at run time ``Model`` here is `ModelBase`, the
class every model derives from; to a type checker it is the real `acacheorm.Model`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING


class State(enum.Enum):
    """What an instance holds: its row (``LOADED``), or only its primary key (``SPARSE``,
    an unloaded foreign key; ``MISSING``, a foreign key whose row was not found)."""

    LOADED = "loaded"
    SPARSE = "sparse"
    MISSING = "missing"


class ModelBase:
    """The root of every model class (`acacheorm.Model` derives from it).

    The one slot holds the instance's `State`; it is set only on an instance that is not
    loaded, so that building a row (``__dict__`` set in one go) never touches it.
    """

    __slots__ = ("_state_",)

    _state_: State


def state_of(instance: ModelBase) -> State:
    """The `State` of a model instance."""
    # The slot is unset on a loaded instance: getattr's default, without a Python-level
    # exception handler (a loaded instance is the common case).
    state: State = getattr(instance, "_state_", State.LOADED)
    return state


def replace_row(instance: ModelBase, row: ModelBase) -> None:
    """Make ``instance`` hold the values of ``row`` (of the same model), loaded."""
    d = instance.__dict__
    d.clear()
    d.update(row.__dict__)
    if state_of(instance) is not State.LOADED:
        del instance._state_


if TYPE_CHECKING:
    from ._model import Model
else:
    Model = ModelBase

__all__ = ["Model", "ModelBase", "State", "replace_row", "state_of"]
