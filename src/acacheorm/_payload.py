"""The envelope around every stored value: a few bytes saying who wrote it.

```
byte 0     0xAC                       magic
byte 1     format version (1)
bytes 2-3  serializer tag (big-endian) which serializer wrote the body
bytes 4-5  schema fingerprint          which field layout the body has
bytes 6-   the serializer's body
```

Six bytes in all. A reader picks the serializer by its tag among those its model reads (its
own and ``Meta.read_serializers``, so a model that changed serializer still reads old rows,
and a payload can never choose any other registered serializer) and takes the fast path
when the fingerprint is its own.
"""

from __future__ import annotations

import hashlib
import struct

MAGIC = 0xAC
VERSION = 1
HEADER_SIZE = 6
_HEADER = struct.Struct(">BBHH")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from


class EnvelopeError(ValueError):
    """The bytes are not an acacheorm envelope this version can read."""


def header(tag: int, fingerprint: int) -> bytes:
    """The six header bytes for ``tag`` and ``fingerprint`` (computed once per schema)."""
    return _pack_header(MAGIC, VERSION, tag, fingerprint)


def unwrap(data: bytes) -> tuple[int, int, bytes]:
    """Split an envelope into ``(tag, fingerprint, body)``; `EnvelopeError` if it is not one."""
    if len(data) < HEADER_SIZE:
        raise EnvelopeError(f"payload of {len(data)} bytes is shorter than the envelope header")
    magic, version, tag, fingerprint = _unpack_header(data)
    if magic != MAGIC:
        raise EnvelopeError("payload does not start with the acacheorm envelope marker")
    if version != VERSION:
        raise EnvelopeError(
            f"payload envelope version {version} is not readable by this version "
            f"(which reads version {VERSION})"
        )
    return tag, fingerprint, data[HEADER_SIZE:]


def fingerprint(parts: list[str]) -> int:
    """A 16-bit fingerprint of a schema description."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=2).digest()
    return int.from_bytes(digest, "big")
