"""The base type of every model, for the modules below `acacheorm._model`.

Those modules check ``isinstance(x, Model)`` and annotate with ``Model`` without importing
`acacheorm._model` (which imports them): at run time ``Model`` here is `ModelBase`, the
class every model derives from; to a type checker it is the real `acacheorm.Model`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING


class ModelBase:
    """The root of every model class (`acacheorm.Model` derives from it)."""

    __slots__ = ()


if TYPE_CHECKING:
    from ._model import Model
else:
    Model = ModelBase

__all__ = ["Model", "ModelBase"]
