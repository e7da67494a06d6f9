"""The serializer interface and the registry of serializers by name and by tag.

A serializer turns one row, already converted by the fields to a dict of primitives
(``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``list`` and ``dict[str, ...]``,
nested), into bytes and back. It never sees a model.

Every stored payload carries the 16-bit ``tag`` of the serializer that wrote it, so a model
that changed serializer picks the right one among the serializers it reads (its own and
``Meta.read_serializers``); a model never decodes with a serializer it did not list.
A serializer may also write a row as the array of its values in field order
(``positional = True``, `Serializer.dumps_values` / `Serializer.loads_values`): the
envelope then carries the field names once, and reading skips building a dict by name
(msgpack does; JSON keeps objects, readable as they are in ``redis-cli``; pickle keeps
its signed dict, whose signature covers the field names too).
Tags 1-3 belong to the presets (json, msgpack, pickle); any other name gets a tag derived
from the name with CRC-32, in the upper half of the range (0x8000-0xFFFF), so it can never
collide with a preset. Tag 0 means "no tag" and is never valid.
"""

from __future__ import annotations

import abc
import threading
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, Final

__all__ = ["PRESET_TAGS", "Serializer", "SerializerRegistry", "derive_tag", "registry"]

PRESET_TAGS: Final[dict[str, int]] = {"json": 1, "msgpack": 2, "pickle": 3}


def derive_tag(name: str) -> int:
    """The stable 16-bit tag for a serializer name: a preset's own tag, else a CRC-32 of the
    name folded into 0x8000-0xFFFF.

    Example::

        >>> derive_tag("json")
        1
        >>> 0x8000 <= derive_tag("protobuf.shop.User") <= 0xFFFF
        True
    """
    preset = PRESET_TAGS.get(name)
    if preset is not None:
        return preset
    return (zlib.crc32(name.encode("utf-8")) & 0x7FFF) | 0x8000


class Serializer(abc.ABC):
    """Turns a dict of primitives into bytes and back.

    A subclass sets the class attribute ``name`` (its tag is then derived from it, see
    `derive_tag`; set ``tag`` too to pin it), ``binary`` (whether ``bytes`` values survive
    natively) and implements `dumps` and `loads`. Both raise `SerializationError` (from the
    original exception) for a value the format cannot hold or a payload that is not a valid
    encoded dict; nothing else may escape.

    Example::

        class OrjsonSerializer(co.Serializer):
            name = "orjson"
            binary = False

            def dumps(self, data):
                return orjson.dumps(data)

            def loads(self, payload):
                return orjson.loads(payload)

        co.registry.register("orjson", OrjsonSerializer())
    """

    #: the name the serializer is usually registered under
    name: str = ""
    #: the 16-bit id written into each payload's envelope; 0 means unset
    tag: int = 0
    #: True if ``bytes`` values round-trip natively; if False the field layer encodes them
    binary: bool = True
    #: True if the serializer also writes a row as an array of its values
    #: (`dumps_values`/`loads_values`); models using it then store rows that way
    positional: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and "tag" not in cls.__dict__ and cls.name:
            cls.tag = derive_tag(cls.name)
        # A subclass that changes how rows are written (compression, say) but not how
        # their values are, writes maps through its own methods, unless it says otherwise.
        own = cls.__dict__
        if (
            ("dumps" in own or "loads" in own)
            and not ("dumps_values" in own and "loads_values" in own)
            and "positional" not in own
        ):
            cls.positional = False

    @abc.abstractmethod
    def dumps(self, data: dict[str, Any]) -> bytes:
        """Encode one row. Raises `SerializationError` for a value the format cannot hold."""

    @abc.abstractmethod
    def loads(self, payload: bytes) -> dict[str, Any]:
        """Decode one payload into a dict with str keys, or raise `SerializationError`."""

    def dumps_values(self, values: list[Any]) -> bytes:
        """Encode one row given as the list of its values in field order (only called if
        ``positional`` is True). Raises `SerializationError` for a value the format cannot
        hold.

        Example::

            >>> from acacheorm.serializers import registry
            >>> s = registry.get_by_name("msgpack")
            >>> s.loads_values(s.dumps_values([1, "Sam"]))
            [1, 'Sam']
        """
        raise NotImplementedError(f"{type(self).__name__} does not write positional rows")

    def loads_values(self, payload: bytes) -> list[Any]:
        """Decode a payload written by `dumps_values` into the list of values, or raise
        `SerializationError` (also for a payload that is not an array)."""
        raise NotImplementedError(f"{type(self).__name__} does not read positional rows")

    def check_available(self) -> None:  # noqa: B027 - optional hook
        """Raise `ConfigurationError` (naming the extra to install) if a library this
        serializer needs is missing. Models call it at class definition, so a missing driver
        is reported there rather than at the first write.

        Example::

            co.registry.get_by_name("msgpack").check_available()
        """

    def dumps_many(self, rows: Iterable[dict[str, Any]]) -> list[bytes]:
        """Encode many rows. All or nothing: the first row that fails raises
        `SerializationError` (call `dumps` per row to find every failing one)."""
        dumps = self.dumps
        return [dumps(row) for row in rows]

    def loads_many(self, payloads: Iterable[bytes]) -> list[dict[str, Any]]:
        """Decode many payloads. All or nothing: the first payload that fails raises
        `SerializationError` (call `loads` per payload to find every failing one)."""
        loads = self.loads
        return [loads(payload) for payload in payloads]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} tag={self.tag:#06x}>"


class SerializerRegistry:
    """Serializers by name (what ``Meta.serializer`` says) and by tag (what a payload says).

    Several names may point at the same serializer instance; two different instances may not
    share a tag, since a reader could not tell their payloads apart.

    Example::

        registry.register("protobuf.user", co.ProtobufSerializer(user_pb2.User))
        registry.get_by_name("protobuf.user").dumps({"id": 1, "name": "Sam"})
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, Serializer] = {}
        # rebuilt on every change and swapped in whole, so lookups never need the lock
        self._by_tag: dict[int, Serializer] = {}

    def register(self, name: str, serializer: Serializer) -> Serializer:
        """Map ``name`` to ``serializer`` (replacing what the name meant before) and return it.

        Raises `ValueError` if the serializer's tag is already held by a different serializer
        registered under another name, `TypeError` if it is not a `Serializer` instance.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"a serializer name is a non-empty str, not {name!r}")
        if not isinstance(serializer, Serializer):
            hint = ""
            if isinstance(serializer, type) and issubclass(serializer, Serializer):
                hint = f" (did you mean {serializer.__name__}()?)"
            raise TypeError(
                f"register({name!r}, ...) needs a Serializer instance, not {serializer!r}{hint}"
            )
        tag = serializer.tag
        if isinstance(tag, bool) or not isinstance(tag, int) or not 0 < tag <= 0xFFFF:
            raise ValueError(
                f"{serializer!r} has no valid tag ({tag!r}): a tag is an int in 1..0xFFFF; "
                "give the serializer class a `name` to derive one, or set `tag`"
            )
        with self._lock:
            for other_name, other in self._by_name.items():
                if other_name != name and other is not serializer and other.tag == tag:
                    raise ValueError(
                        f"cannot register {name!r}: its tag {tag:#06x} is already used by "
                        f"{other!r} registered as {other_name!r}, and stored payloads could not "
                        "tell the two apart; give it another name or an explicit tag"
                    )
            by_name = dict(self._by_name)
            by_name[name] = serializer
            self._commit(by_name)
        return serializer

    def unregister(self, name: str) -> None:
        """Forget ``name``. Payloads written under its tag become unreadable unless another
        name still holds the same serializer. Unknown names raise `KeyError`."""
        with self._lock:
            if name not in self._by_name:
                raise KeyError(self._unknown(name))
            by_name = dict(self._by_name)
            del by_name[name]
            self._commit(by_name)

    def get_by_name(self, name: str) -> Serializer:
        """The serializer registered as ``name``; `KeyError` listing the known names if none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(self._unknown(name)) from None

    def get_by_tag(self, tag: int) -> Serializer | None:
        """The registered serializer whose tag is ``tag``, or None."""
        return self._by_tag.get(tag)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __repr__(self) -> str:
        return f"<SerializerRegistry {self.names()}>"

    def _commit(self, by_name: dict[str, Serializer]) -> None:
        self._by_tag = {s.tag: s for s in by_name.values()}
        self._by_name = by_name

    def _unknown(self, name: object) -> str:
        known: Sequence[str] = self.names()
        return f"no serializer is registered as {name!r}; known: {', '.join(known) or 'none'}"


#: the process-wide registry that ``Meta.serializer = "name"`` looks names up in
registry: Final = SerializerRegistry()
"""The process-wide `SerializerRegistry`: ``Meta.serializer = "name"`` (and the names in
``Meta.read_serializers``) are looked up here when a model is defined.

Example::

    co.registry.register("protobuf.user", co.ProtobufSerializer(user_pb2.User))
    co.registry.get_by_name("msgpack")
"""
