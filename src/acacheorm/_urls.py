"""``backend_from_url``: any backend from a URL.

Each backend class names the schemes it is built from in its ``url_schemes``; a URL is
handed to the class whose ``url_schemes`` holds its scheme, through its ``from_url(url,
**options)`` class method (or ``cls(url, **options)`` for a class without one). The
built-in backends are imported on first use of their schemes (their drivers are optional
extras); any other subclass of `Backend` is found once its module is imported.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .backends.base import Backend

# Where the built-in backends live, imported only when one of their schemes is asked for.
_BUILTIN_SCHEMES = {
    "memory": "acacheorm.backends.memory",
    "file": "acacheorm.backends.filesystem",
    "redis": "acacheorm.backends.redis",
    "rediss": "acacheorm.backends.redis",
    "unix": "acacheorm.backends.redis",
    "redis+cluster": "acacheorm.backends.redis",
    "rediss+cluster": "acacheorm.backends.redis",
    "memcached": "acacheorm.backends.memcached",
}


def backend_classes() -> dict[str, type[Backend]]:
    """Every imported backend class by URL scheme (a subclass wins over its base)."""
    found: dict[str, type[Backend]] = {}
    todo: list[type[Backend]] = [Backend]  # type: ignore[type-abstract]
    while todo:
        cls = todo.pop(0)
        for scheme in cls.__dict__.get("url_schemes", ()):
            found[scheme.lower()] = cls
        todo.extend(cls.__subclasses__())
    return found


def backend_from_url(url: str, **options: Any) -> Backend:
    """Build a backend from a URL; ``?namespace=`` works on every scheme.

    ``memory://``, ``file:///var/cache/app``, ``redis://host:6379/0``, ``rediss://…``,
    ``unix:///run/redis.sock``, ``redis+cluster://host:7000``, ``rediss+cluster://…``,
    ``memcached://h1:11211,h2:11211``, and the schemes of any other backend class: the
    class whose ``url_schemes`` names the scheme is built with its ``from_url`` class method.

    Example::

        backend = co.backend_from_url("redis://127.0.0.1:6379/0?namespace=app")

        class MyStore(co.Backend):
            url_schemes = ("mystore",)

            @classmethod
            def from_url(cls, url: str, **options: Any) -> MyStore: ...

        store = co.backend_from_url("mystore://somewhere")
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    shown = redact(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    classes = backend_classes()
    if scheme not in classes and scheme in _BUILTIN_SCHEMES:
        importlib.import_module(_BUILTIN_SCHEMES[scheme])
        classes = backend_classes()
    cls = classes.get(scheme)
    if cls is None:
        known = sorted(set(classes) | set(_BUILTIN_SCHEMES))
        raise ValueError(
            f"unsupported backend URL scheme {parts.scheme!r} in {shown!r} ({', '.join(known)})"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    namespace = [v for k, v in query if k == "namespace"]
    if namespace:
        options.setdefault("namespace", namespace[-1])
        query = [(k, v) for k, v in query if k != "namespace"]
    # Not urlunsplit: it drops the "//" of a URL without a host (unix:///path).
    rest = f"{parts.scheme}://{parts.netloc}{parts.path}"
    if query:
        rest += f"?{urlencode(query)}"
    from_url = getattr(cls, "from_url", None)
    backend = from_url(rest, **options) if from_url is not None else cls(rest, **options)  # type: ignore[call-arg]
    if not isinstance(backend, Backend):
        raise TypeError(f"{cls.__name__}.from_url({shown!r}) returned {backend!r}, not a Backend")
    return backend


def redact(url: str) -> str:
    """The URL without its password, for messages and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit((parts.scheme, user + netloc, parts.path, parts.query, parts.fragment))


def no_leftovers(url: str, query: dict[str, str]) -> None:
    """Refuse URL options a backend does not know."""
    if query:
        raise ValueError(f"unknown option(s) {sorted(query)} in {redact(url)!r}")
