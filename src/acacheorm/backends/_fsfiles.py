"""The filesystem backend's files: the entry format (header, key, value, checksum) and the
small OS operations on files and directories, each tolerant of other processes working on
the same tree. Blocking: called from the backend's worker threads only."""

from __future__ import annotations

import errno
import hashlib
import logging
import math
import os
import struct
import zlib
from typing import Final

from .._exceptions import BackendError
from ._semantics import Entry

logger = logging.getLogger("acacheorm.backends.filesystem")

#: The version written in every file header; files of another version are unreadable.
FORMAT_VERSION: Final = 1
_MAGIC: Final = b"ACFS"
_HEADER: Final = struct.Struct("<4sBBHdQIQI")
_CRC_OFFSET: Final = _HEADER.size - 4
_FILE_MODE: Final = 0o600
_O_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY: Final = getattr(os, "O_DIRECTORY", 0)
# O_NONBLOCK is a no-op on regular files; it keeps a foreign FIFO from hanging a reader.
_O_READ: Final = os.O_RDONLY | _O_CLOEXEC | os.O_NONBLOCK


class _Corrupt(Exception):
    """A file at a key's path that is not a readable entry for that key."""


def _encode(key_bytes: bytes, entry: Entry) -> bytes:
    head = _HEADER.pack(
        _MAGIC,
        FORMAT_VERSION,
        0,
        0,
        entry.expires,
        entry.token,
        len(key_bytes),
        len(entry.value),
        0,
    )[:_CRC_OFFSET]
    crc = zlib.crc32(entry.value, zlib.crc32(key_bytes, zlib.crc32(head)))
    return b"".join((head, crc.to_bytes(4, "little"), key_bytes, entry.value))


def _decode(data: bytes, key_bytes: bytes) -> Entry:
    size = _HEADER.size
    if len(data) < size:
        raise _Corrupt(f"{len(data)} bytes, shorter than the header")
    magic, version, _flags, _reserved, expires, token, klen, vlen, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise _Corrupt("not an acacheorm file (bad magic)")
    if version != FORMAT_VERSION:
        raise _Corrupt(f"format version {version}, this build reads {FORMAT_VERSION}")
    if size + klen + vlen != len(data):
        raise _Corrupt(f"{len(data)} bytes, the header says {size + klen + vlen}")
    if not math.isfinite(expires) or expires < 0:
        raise _Corrupt(f"bad expiry {expires!r}")
    view = memoryview(data)
    if view[size : size + klen] != key_bytes:
        raise _Corrupt("the file holds another key")
    if zlib.crc32(view[size:], zlib.crc32(view[:_CRC_OFFSET])) != crc:
        raise _Corrupt("checksum mismatch")
    return Entry(data[size + klen :], expires, token)


def _read_file(path: str) -> bytes | None:
    """The whole file, or None if it does not exist."""
    try:
        fd = os.open(path, _O_READ)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        parts = []
        while chunk := os.read(fd, max(size, 65536)):
            parts.append(chunk)
    finally:
        os.close(fd)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | _O_CLOEXEC | _O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(path: str) -> None:
    """Best-effort removal (of a temp file, an expired or unreadable entry)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _rmdir_if_empty(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            raise


def _rmtree(top: str) -> None:
    """shutil.rmtree that tolerates another process deleting the same tree."""
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames:
            _unlink(os.path.join(dirpath, name))
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                _unlink(path)
            else:
                try:
                    os.rmdir(path)
                except FileNotFoundError:
                    pass
    try:
        os.rmdir(top)
    except FileNotFoundError:
        pass


def _header(fd: int) -> tuple[float, int] | None:
    """A data file's expiry and key length from its header, or None if the header is cut
    short or not one this build writes (the sizes must add up to the file's)."""
    head = os.read(fd, _HEADER.size)
    if len(head) < _HEADER.size:
        return None
    magic, version, _f, _r, expires, _token, klen, vlen, _crc = _HEADER.unpack(head)
    if (
        magic != _MAGIC
        or version != FORMAT_VERSION
        or os.fstat(fd).st_size != _HEADER.size + klen + vlen
        or not math.isfinite(expires)
        or expires < 0
    ):
        return None
    return expires, klen


def _header_says_remove(path: str, now: float) -> bool:
    """For cull: whether the file is expired or structurally unreadable (header only)."""
    try:
        fd = os.open(path, _O_READ)
    except FileNotFoundError:
        return False
    try:
        header = _header(fd)
    finally:
        os.close(fd)
    if header is None:
        logger.warning("removing unreadable cache file %s", path)
        return True
    expires = header[0]
    return bool(expires != 0.0 and expires <= now)


def _key_of_file(path: str, digest: str, now: float) -> bytes | None:
    """For scan: the full key a data file holds, read from its header, or None if the file
    is gone, expired, structurally unreadable or holds a key that does not hash to its name.
    The value's checksum is left to the reads (scan does not read values)."""
    try:
        fd = os.open(path, _O_READ)
    except FileNotFoundError:
        return None
    try:
        header = _header(fd)
        if header is None or (header[0] != 0.0 and header[0] <= now):
            return None
        klen = header[1]
        key = os.read(fd, klen)
    finally:
        os.close(fd)
    if len(key) != klen or hashlib.sha256(key).hexdigest() != digest:
        return None
    return key


def _os_error(exc: OSError, action: str) -> BackendError:
    """Map an OSError to a BackendError with the cause attached (never leak OSError)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on the device"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
    elif exc.errno == errno.EROFS:
        reason = "read-only filesystem"
    else:
        reason = exc.strerror or type(exc).__name__
    where = f" ({exc.filename})" if exc.filename else ""
    error = BackendError(f"filesystem backend: {action}: {reason}{where}")
    error.__cause__ = exc
    return error
