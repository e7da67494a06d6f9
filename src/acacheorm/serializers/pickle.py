"""The pickle serializer, authenticated with HMAC-SHA256.

Unpickling runs code chosen by whoever wrote the bytes, and a cache is often writable by more
parties than the application (a shared Redis, a memcached without auth). So every payload is
signed, and `PickleSerializer.loads` checks the signature with a constant-time compare before
anything is unpickled. Plain pickles need an explicit ``unsafe_allow_unsigned=True``.
"""

from __future__ import annotations

import hmac
import os
import pickle
from collections.abc import Iterable
from typing import Any, Literal

from .._exceptions import SerializationError
from .base import Serializer, derive_tag

__all__ = ["KEY_ENV_VAR", "PickleSerializer"]

#: the environment variable a `PickleSerializer` without a key reads its key from, at use time
KEY_ENV_VAR = "ACACHEORM_PICKLE_KEY"

PROTOCOL = 5

_NO_KEY_HELP = (
    "the pickle serializer has no secret key. Loading a pickle runs code chosen by whoever "
    "wrote it, so anyone able to write to the cache could run code in this process; payloads "
    "are therefore signed with HMAC-SHA256 and checked before unpickling. Set the "
    f"{KEY_ENV_VAR} environment variable, or register your own "
    "PickleSerializer(secret_key=...) (e.g. co.registry.register('pickle', "
    "co.PickleSerializer(secret_key=...))), or pass unsafe_allow_unsigned=True if nobody "
    "else can ever write to this cache"
)


def _as_key(key: bytes | str, what: str) -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    elif isinstance(key, bytearray | memoryview):
        key = bytes(key)
    if not isinstance(key, bytes):
        raise TypeError(f"{what} is bytes or str, not {type(key).__name__}")
    if not key:
        raise ValueError(f"{what} is empty")
    # Domain separation: the key used for MACs here is derived from the user's key, so a key
    # that is also used to sign other things elsewhere can't be turned into a pickle-signing
    # oracle (a tag from the other system never verifies here, and vice versa).
    return hmac.digest(key, b"acacheorm.serializers.pickle.v1", "sha256")


class PickleSerializer(Serializer):
    """Rows as signed pickles (protocol 5). Preset ``"pickle"``, tag 3.

    A payload is ``HMAC-SHA256(key, pickle)`` (32 bytes, or the first 16 with
    ``digest_size=16``) followed by the pickle. `loads` verifies the tag against every key
    (``secret_key`` first, then ``fallback_keys``) before unpickling; a payload that fails is
    a `SerializationError` and is never unpickled. `dumps` signs with ``secret_key``.

    With no ``secret_key`` the key is read from the ``ACACHEORM_PICKLE_KEY`` environment
    variable at each use; with neither, `dumps` and `loads` raise `SerializationError`
    explaining how to configure one. ``unsafe_allow_unsigned=True`` (exclusive with a key)
    reads and writes plain pickles: only for a cache nobody else can write to.

    Key rotation: deploy ``PickleSerializer(secret_key=new, fallback_keys=[old])`` everywhere,
    wait for the old payloads to expire, then drop ``old``.

    Example::

        signed = co.PickleSerializer(secret_key=os.environ["CACHE_KEY"])
        co.registry.register("pickle", signed)   # replaces the preset
    """

    name = "pickle"
    binary = True

    def __init__(
        self,
        secret_key: bytes | str | None = None,
        *,
        fallback_keys: Iterable[bytes | str] = (),
        unsafe_allow_unsigned: bool = False,
        digest_size: Literal[16, 32] = 32,
        name: str = "pickle",
    ) -> None:
        fallback = list(fallback_keys)
        if unsafe_allow_unsigned and (secret_key is not None or fallback):
            raise ValueError("unsafe_allow_unsigned=True cannot be combined with keys")
        if fallback and secret_key is None:
            raise ValueError("fallback_keys need a secret_key to sign with")
        if digest_size not in (16, 32):
            raise ValueError(f"digest_size is 16 or 32, not {digest_size!r}")
        self.name = name
        self.tag = derive_tag(name)
        self.digest_size = digest_size
        self.unsafe_allow_unsigned = unsafe_allow_unsigned
        self._keys: tuple[bytes, ...] | None = None
        if secret_key is not None:
            self._keys = (
                _as_key(secret_key, "secret_key"),
                *(_as_key(k, "each of fallback_keys") for k in fallback),
            )
        # (raw env value, derived keys), swapped as one object so threads never see a mix
        self._env_cache: tuple[str, tuple[bytes, ...]] | None = None

    @property
    def signed(self) -> bool:
        """Whether payloads are signed (False only with ``unsafe_allow_unsigned=True``)."""
        return not self.unsafe_allow_unsigned

    def dumps(self, data: dict[str, Any]) -> bytes:
        if not isinstance(data, dict):
            raise SerializationError(f"pickle: a row is a dict, not {type(data).__name__}")
        keys = None if self.unsafe_allow_unsigned else self._current_keys()
        try:
            body = pickle.dumps(data, protocol=PROTOCOL)
        except Exception as exc:
            raise SerializationError(f"pickle cannot encode this row: {exc}") from exc
        if keys is None:
            return body
        return hmac.digest(keys[0], body, "sha256")[: self.digest_size] + body

    def loads(self, payload: bytes) -> dict[str, Any]:
        if self.unsafe_allow_unsigned:
            body: bytes | memoryview = payload
        else:
            body = self._verified(payload, self._current_keys())
        try:
            data = pickle.loads(body)
        except Exception as exc:
            raise SerializationError(f"invalid pickle payload: {exc}") from exc
        if type(data) is not dict:
            raise SerializationError(
                f"invalid pickle payload: a dict was expected, got {type(data).__name__}"
            )
        for key in data:
            if type(key) is not str:
                raise SerializationError(
                    f"invalid pickle payload: keys must be str, got {type(key).__name__}"
                )
        return data

    def _verified(self, payload: bytes, keys: tuple[bytes, ...]) -> memoryview:
        size = self.digest_size
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise SerializationError(f"invalid pickle payload: {type(payload).__name__}")
        view = memoryview(payload)
        if len(view) <= size:
            raise SerializationError("invalid pickle payload: too short to hold a signature")
        tag, body = view[:size], view[size:]
        for key in keys:
            if hmac.compare_digest(hmac.digest(key, body, "sha256")[:size], tag):
                return body
        raise SerializationError(
            "pickle payload rejected: its signature does not match any configured key "
            "(tampered, unsigned, or written with another key); it was not unpickled"
        )

    def _current_keys(self) -> tuple[bytes, ...]:
        if self._keys is not None:
            return self._keys
        raw = os.environ.get(KEY_ENV_VAR)
        if not raw:
            raise SerializationError(_NO_KEY_HELP)
        cache = self._env_cache
        if cache is None or cache[0] != raw:
            cache = self._env_cache = (raw, (_as_key(os.fsencode(raw), KEY_ENV_VAR),))
        return cache[1]

    def __repr__(self) -> str:
        if self.unsafe_allow_unsigned:
            mode = "unsafe_allow_unsigned=True"
        elif self._keys is not None:
            mode = f"secret_key=***, {len(self._keys) - 1} fallback key(s)"
        else:
            mode = f"key from ${KEY_ENV_VAR}"
        name = "" if self.name == "pickle" else f", name={self.name!r}"
        return f"PickleSerializer({mode}{name})"
