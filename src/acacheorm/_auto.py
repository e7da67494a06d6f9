"""AutoField: an integer primary key taken from a per-model counter when a row is inserted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Unpack

from . import _keys
from ._base import Model
from ._commands import Batch, Incr
from ._executor import Plan
from ._fields import IndexOptions
from ._fields_scalar import IntegerField

if TYPE_CHECKING:
    from ._schema import Schema

#: The last part of a model's counter key (``<namespace>:<model>:__autoincrement__``).


class AutoField(IntegerField):
    """An integer primary key assigned from a per-model counter when a row without one is
    inserted (``create``, ``insert``, ``insert_many``, ``save`` of a new instance).

    The counter is a key of its own, ``<namespace>:<model>:__autoincrement__``, incremented
    atomically by the backend (``INCR`` on Redis, ``incr`` on Memcached), so concurrent
    inserts, from any number of processes, get distinct ids; ``insert_many`` reserves a block
    of ids in one step. Ids start at 1. An instance built with ``Model(...)`` has ``id``
    ``None`` until it is inserted; an explicit id is stored as given (and the counter does
    not move).

    Example::

        class Player(co.Model):
            id = co.AutoField()
            nick = co.StringField()

        player = await Player.create(nick="ann")
        assert player.id == 1
    """

    def __init__(
        self,
        *,
        min_value: int | None = None,
        max_value: int | None = None,
        **options: Unpack[IndexOptions],
    ) -> None:
        super().__init__(min_value=min_value, max_value=max_value, primary_key=True, **options)
        self.fast_type = None  # None is a valid value until the row is inserted

    def has_default(self) -> bool:
        return True

    def get_default(self) -> Any:
        return None

    def clean(self, value: Any) -> Any:
        if value is None:
            return None
        return super().clean(value)


def auto_field(schema: Schema) -> AutoField | None:
    """The model's AutoField primary key, if it has one."""
    if schema.composite:
        return None
    field = schema.pk_fields[0]
    return field if isinstance(field, AutoField) else None


def counter_key(schema: Schema) -> str:
    """The key of a model's id counter: never a key of one of its rows (an AutoField key
    part is an integer)."""
    return _keys.counter_key(schema.namespace, schema.name)


def assign_ids(schema: Schema, instances: Sequence[Model]) -> Plan:
    """Give every instance whose AutoField is ``None`` an id: one ``Incr`` by their number
    reserves a block of ids for them, in order."""
    field = auto_field(schema)
    if field is None:
        return
    attname = field.name
    missing = [obj for obj in instances if obj.__dict__.get(attname) is None]
    if not missing:
        return
    n = len(missing)
    result = (yield [(schema.backend, Batch((Incr(counter_key(schema), n),)))])[0][0]
    if isinstance(result, BaseException):
        raise result
    first = int(result) - n + 1
    for offset, obj in enumerate(missing):
        obj.__dict__[attname] = field.clean(first + offset)
