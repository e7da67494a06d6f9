"""The MessagePack serializer: compact, binary-safe, fast. Needs ``acacheorm[msgpack]``.

``msgpack`` is imported at first use, not at ``import acacheorm``, so the preset ``"msgpack"``
costs nothing for applications that never use it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .._exceptions import ConfigurationError, SerializationError
from .base import Serializer

__all__ = ["MsgpackSerializer"]

#: MessagePack extension type code for ints outside the native 64-bit range, stored as
#: big-endian two's complement bytes.
BIGINT_EXT = 1

_INSTALL_HINT = "msgpack is not installed: pip install 'acacheorm[msgpack]'"

# Filled in by _load() at first use.
_msgpack: Any = None
_unpackb: Callable[..., Any] | None = None
# A Packer keeps an internal buffer, so one per thread; reusing it instead of msgpack.packb
# (which builds a Packer per call) is most of the speed. It has no `default` hook, so packing
# never runs Python code halfway (a thread switch inside a shared buffer); ints too big for
# it raise OverflowError and take the slow path, which has the hook.
_local = threading.local()


def _load() -> Callable[..., Any]:
    global _msgpack, _unpackb
    try:
        import msgpack
    except ImportError as exc:
        raise ConfigurationError(_INSTALL_HINT) from exc
    _msgpack = msgpack
    _unpackb = msgpack.unpackb
    return msgpack.unpackb  # type: ignore[no-any-return]


def _new_pack() -> Callable[[Any], bytes]:
    if _msgpack is None:
        _load()
    pack: Callable[[Any], bytes] = _msgpack.Packer(use_bin_type=True, autoreset=True).pack
    _local.pack = pack
    return pack


def _encode_ext(obj: Any) -> Any:
    if isinstance(obj, int) and not isinstance(obj, bool):
        # one spare bit for the sign: 127 -> 1 byte, 128 -> 2 bytes
        size = (obj.bit_length() + 8) // 8
        return _msgpack.ExtType(BIGINT_EXT, obj.to_bytes(size, "big", signed=True))
    raise TypeError(f"can not serialize {type(obj).__name__!r} object")


def _decode_ext(code: int, data: bytes) -> int:
    if code == BIGINT_EXT:
        return int.from_bytes(data, "big", signed=True)
    raise ValueError(f"unknown msgpack extension type {code}")


def values_unpacker() -> tuple[Callable[..., Any], Callable[[int, bytes], int]]:
    """``(unpackb, ext_hook)`` for a hot loop that reads many positional bodies:
    ``unpackb(body, ext_hook=ext_hook)`` is `MsgpackSerializer.loads_values` without its
    Python frame and without its checks (the caller checks that it got a list, and reads
    a body it refused, or that raised, through `MsgpackSerializer.loads_values`)."""
    return _unpackb or _load(), _decode_ext


def _check_keys(data: dict[Any, Any]) -> None:
    for key in data:
        if type(key) is not str:
            raise SerializationError(
                f"invalid msgpack payload: map keys must be str, got {type(key).__name__}"
            )


class MsgpackSerializer(Serializer):
    """Rows as MessagePack. Preset ``"msgpack"``, tag 2.

    ``bytes`` stay bytes (bin type), str stays str, ints of any size round-trip (outside the
    64-bit range as an extension type), tuples come back as lists. Nested dict keys must be
    str: other keys are written but refused on read (``strict_map_key``, which keeps hostile
    payloads from building hash-colliding dicts).

    Example::

        >>> s = MsgpackSerializer()
        >>> s.loads(s.dumps({"id": 1, "avatar": b"\\x89PNG"}))
        {'id': 1, 'avatar': b'\\x89PNG'}
    """

    name = "msgpack"
    binary = True
    positional = True

    def check_available(self) -> None:
        if _msgpack is None:
            _load()

    def dumps(self, data: dict[str, Any]) -> bytes:
        if not isinstance(data, dict):
            raise SerializationError(f"msgpack: a row is a dict, not {type(data).__name__}")
        return self._pack(data)

    def loads(self, payload: bytes) -> dict[str, Any]:
        data = self._unpack(payload)
        if type(data) is not dict:
            raise SerializationError(
                f"invalid msgpack payload: a map was expected, got {type(data).__name__}"
            )
        # A bytes key can only come from a bin object, which starts with 0xC4, 0xC5 or 0xC6.
        # If none of those bytes occurs anywhere in the payload (the usual case, checked at
        # memchr speed) no key can be bytes and the per-key scan is skipped.
        if 0xC4 in payload or 0xC5 in payload or 0xC6 in payload:
            _check_keys(data)
        return data

    def dumps_values(self, values: list[Any]) -> bytes:
        if not isinstance(values, list | tuple):
            raise SerializationError(
                f"msgpack: a row's values are a list, not {type(values).__name__}"
            )
        return self._pack(values)

    def loads_values(self, payload: bytes) -> list[Any]:
        values = self._unpack(payload)
        if type(values) is not list:
            raise SerializationError(
                f"invalid msgpack payload: an array was expected, got {type(values).__name__}"
            )
        return values

    def _pack(self, obj: dict[str, Any] | list[Any] | tuple[Any, ...]) -> bytes:
        """``obj`` (a row's map or its values) packed; integers beyond 64 bits as ext types."""
        try:
            pack = _local.pack
        except AttributeError:
            pack = _new_pack()
        try:
            return pack(obj)  # type: ignore[no-any-return]
        except OverflowError:
            return self._dumps_bigint(obj)
        except Exception as exc:
            raise SerializationError(f"msgpack cannot encode this row: {exc}") from exc

    @staticmethod
    def _unpack(payload: bytes) -> Any:
        """The msgpack object of ``payload`` (a body: map or array, checked by the caller)."""
        unpackb = _unpackb or _load()
        try:
            # strict_map_key=True is the default: keys are str or bytes, never ints or tuples
            return unpackb(payload, raw=False, ext_hook=_decode_ext)
        except Exception as exc:
            raise SerializationError(f"invalid msgpack payload: {exc}") from exc

    def _dumps_bigint(self, data: dict[str, Any] | list[Any] | tuple[Any, ...]) -> bytes:
        try:
            return _msgpack.packb(data, use_bin_type=True, default=_encode_ext)  # type: ignore[no-any-return]
        except Exception as exc:
            raise SerializationError(f"msgpack cannot encode this row: {exc}") from exc

    def __repr__(self) -> str:
        return "MsgpackSerializer()"
