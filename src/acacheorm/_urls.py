"""``backend_from_url``: any backend from a URL."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from .backends.base import Backend


def backend_from_url(url: str, **options: Any) -> Backend:
    """Build a backend from a URL; ``?namespace=`` works on every scheme.

    ``memory://``, ``file:///var/cache/app``, ``redis://host:6379/0``, ``rediss://…``,
    ``unix:///run/redis.sock``, ``redis+cluster://host:7000``, ``rediss+cluster://…``,
    ``memcached://h1:11211,h2:11211``.

    Example::

        backend = co.backend_from_url("redis://127.0.0.1:6379/0?namespace=app")
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    shown = redact(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if "namespace" in query:
        options.setdefault("namespace", query.pop("namespace"))
    if scheme == "memory":
        from .backends.memory import SimpleBackend

        if "max_entries" in query:
            options.setdefault("max_entries", int(query.pop("max_entries")))
        _no_leftovers(url, query)
        return SimpleBackend(**options)
    if scheme == "file":
        from .backends.filesystem import FileSystemBackend

        _no_leftovers(url, query)
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URLs name a local path (file:///path), not {shown!r}")
        if not path:
            raise ValueError(f"no path in {shown!r}")
        return FileSystemBackend(path, **options)
    if scheme in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        from .backends.redis import RedisBackend

        # Not urlunsplit: it drops the "//" of a URL without a host (unix:///path).
        rest = f"{parts.scheme}://{parts.netloc}{parts.path}"
        if query:
            rest += f"?{urlencode(query)}"
        return RedisBackend(rest, **options)
    if scheme == "memcached":
        from .backends.memcached import MemcachedBackend

        # The backend's own parser: it knows its options and refuses credentials.
        return MemcachedBackend.from_url(url, **options)
    raise ValueError(
        f"unsupported backend URL scheme {parts.scheme!r} in {shown!r} (memory, file, redis, "
        "rediss, unix, redis+cluster, memcached)"
    )


def redact(url: str) -> str:
    """The URL without its password, for messages and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit((parts.scheme, user + netloc, parts.path, parts.query, parts.fragment))


def _no_leftovers(url: str, query: dict[str, str]) -> None:
    if query:
        raise ValueError(f"unknown option(s) {sorted(query)} in {redact(url)!r}")
