"""The JSON serializer (stdlib ``json``): compact, UTF-8, readable with any JSON tool."""

from __future__ import annotations

import json
from typing import Any

from .._exceptions import SerializationError
from .base import Serializer

__all__ = ["JSONSerializer"]

# One encoder for every call: json.dumps() with non-default options builds a new one each time.
# NaN and +/-Infinity are allowed (Python writes and reads them back, as `NaN`/`Infinity`).
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=True).encode
_decode = json.JSONDecoder().decode
_BACKSLASH = ord("\\")


class JSONSerializer(Serializer):
    """Rows as compact UTF-8 JSON. Preset ``"json"``, tag 1.

    ``binary`` is False: JSON has no bytes, so the field layer base64-encodes `BinaryField`
    values before they get here and a stray ``bytes`` value is a `SerializationError`.
    Tuples come back as lists; dict keys must be str (JSON would turn others into strings).

    Example::

        >>> JSONSerializer().dumps({"id": 1, "name": "Zoë"})
        b'{"id":1,"name":"Zo\\xc3\\xab"}'
    """

    name = "json"
    binary = False

    def dumps(self, data: dict[str, Any]) -> bytes:
        if not isinstance(data, dict):
            raise SerializationError(f"json: a row is a dict, not {type(data).__name__}")
        try:
            return _encode(data).encode("utf-8")
        except Exception as exc:
            raise SerializationError(f"json cannot encode this row: {exc}") from exc

    def loads(self, payload: bytes) -> dict[str, Any]:
        try:
            data = _decode(str(payload, "utf-8"))
        except Exception as exc:
            raise SerializationError(f"invalid json payload: {exc}") from exc
        if type(data) is not dict:
            raise SerializationError(
                f"invalid json payload: a JSON object was expected, got {type(data).__name__}"
            )
        # A "\\udxxx" escape is how JSON text can carry a lone surrogate, which no str field
        # may hold (this serializer never writes one: it writes UTF-8). Only payloads holding
        # such an escape, rare, are encoded again to find one; most hold no backslash at all,
        # which one memchr tells (an int operand: a bytes one takes the slower substring
        # search, 10x the time, measured).
        if _BACKSLASH in payload and (b"\\ud" in payload or b"\\uD" in payload):
            try:
                _encode(data).encode("utf-8")
            except UnicodeEncodeError as exc:
                raise SerializationError(
                    "invalid json payload: it holds a lone surrogate (a \\ud800-\\udfff escape "
                    "that is not half of a pair), which is not text"
                ) from exc
        return data

    def __repr__(self) -> str:
        return "JSONSerializer()"
