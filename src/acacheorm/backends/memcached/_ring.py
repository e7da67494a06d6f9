"""The ketama continuum libmemcached builds, point for point (see `KetamaRing`)."""

from __future__ import annotations

import bisect
import hashlib
import math
import struct
from collections.abc import Iterable

__all__ = ["DEFAULT_PORT", "HASHINGS", "KetamaRing"]

DEFAULT_PORT = 11211
#: Ring layouts, each named after the libmemcached setting it reproduces.
HASHINGS = ("ketama_weighted", "ketama", "ketama_md5")
_U32 = 0xFFFFFFFF


def _md5_u32(data: bytes, slot: int = 0) -> int:
    digest = hashlib.md5(data, usedforsecurity=False).digest()
    return int.from_bytes(digest[4 * slot : 4 * slot + 4], "little")


def _one_at_a_time(data: bytes) -> int:
    """libhashkit's default hash (Jenkins one-at-a-time, over *signed* chars)."""
    value = 0
    for byte in data:
        value = (value + (byte if byte < 0x80 else byte + 0xFFFFFF00)) & _U32
        value = (value + (value << 10)) & _U32
        value ^= value >> 6
    value = (value + (value << 3)) & _U32
    value ^= value >> 11
    return (value + (value << 15)) & _U32


def _f32(x: float) -> float:
    """Round to a C ``float``: libmemcached sizes weighted servers in single precision."""
    result: float = struct.unpack("f", struct.pack("f", x))[0]
    return result


class KetamaRing:
    """The continuum libmemcached builds for consistent hashing, point for point.

    ``servers`` are ``(host, port, weight)`` in the order the client lists them; ``host`` is
    spelled exactly as the other clients of the cluster spell it (``"localhost"`` and
    ``"127.0.0.1"`` are different points). ``hashing`` picks the layout:

    ``"ketama_weighted"``
        libmemcached's ``MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED``: pylibmc
        ``behaviors={"ketama_weighted": True}``, php-memcached's
        ``OPT_LIBKETAMA_COMPATIBLE``. Each server gets 40 strings ``"host:port-N"``, written
        ``"host-N"`` when the port is 11211. The md5 of each string gives 4 points, so a
        server has 160 points when the weights are equal (libmemcached computes the count in
        single precision, which gives 156 for some server counts, 25 for one; that is
        reproduced). Keys hash with md5 as well.
    ``"ketama"``
        ``MEMCACHED_BEHAVIOR_KETAMA`` on libmemcached 1.x, which is what pylibmc
        ``behaviors={"ketama": True}`` sets. Each server gets 100 strings of the same form,
        one point each, and points and keys use libhashkit's default one-at-a-time hash.
    ``"ketama_md5"``
        The same 100-point layout with md5 (first 4 bytes, little-endian). This is pylibmc
        ``{"ketama": True, "hash": "md5"}``, or ``{"ketama": True}`` on libmemcached 0.x.

    A key belongs to the first point at or after its hash, wrapping around to the first
    point. A node that is removed takes only its own points with it.

    Example::

        ring = KetamaRing([("10.0.0.1", 11211, 1), ("10.0.0.2", 11211, 1)])
        ring.node_for(b"user:42")  # -> 0 or 1, the index in the server list
    """

    def __init__(
        self, servers: Iterable[tuple[str, int, int]], hashing: str = "ketama_weighted"
    ) -> None:
        if hashing not in HASHINGS:
            raise ValueError(f"hashing must be one of {HASHINGS}, not {hashing!r}")
        self.servers = tuple(servers)
        self.hashing = hashing
        if not self.servers:
            raise ValueError("a ketama ring needs at least one server")
        weighted = hashing == "ketama_weighted"
        if not weighted and any(w != 1 for _, _, w in self.servers):
            raise ValueError(f"server weights need hashing='ketama_weighted', not {hashing!r}")
        total = sum(w for _, _, w in self.servers)
        count = len(self.servers)
        points: list[tuple[int, int]] = []
        for index, (host, port, weight) in enumerate(self.servers):
            if weighted:
                share = _f32(_f32(weight) / _f32(total))
                size = _f32(_f32(_f32(share * 160) / 4) * _f32(count))
                labels = math.floor(_f32(size + 1e-10))
            else:
                labels = 100
            for n in range(labels):
                label = self.point_label(host, port, n)
                if weighted:
                    points.extend((_md5_u32(label, slot), index) for slot in range(4))
                elif hashing == "ketama_md5":
                    points.append((_md5_u32(label), index))
                else:
                    points.append((_one_at_a_time(label), index))
        points.sort()
        self._values = [value for value, _ in points]
        self._owners = [owner for _, owner in points]

    @staticmethod
    def point_label(host: str, port: int, n: int) -> bytes:
        """The string hashed for a server's ``n``-th label: libmemcached drops port 11211."""
        if port == DEFAULT_PORT:
            return f"{host}-{n}".encode()
        return f"{host}:{port}-{n}".encode()

    def key_hash(self, key: bytes) -> int:
        """The 32-bit position of ``key`` on the ring."""
        return _one_at_a_time(key) if self.hashing == "ketama" else _md5_u32(key)

    def node_for(self, key: bytes) -> int:
        """Index (in the server list) of the node that holds ``key``."""
        if len(self.servers) == 1:
            return 0  # as libmemcached: no hashing at all for a single server
        i = bisect.bisect_left(self._values, self.key_hash(key))
        return self._owners[i if i < len(self._values) else 0]

    def __len__(self) -> int:
        return len(self._values)

    def points_of(self, index: int) -> int:
        """How many points the ``index``-th server has on the ring."""
        return self._owners.count(index)


# -- servers and URLs -----------------------------------------------------------------------
