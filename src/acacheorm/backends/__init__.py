"""Backends: byte stores with a batch interface. See `acacheorm.backends.base.Backend`.

This package also holds the backends configured by name at start-up, for models whose
``Meta.backend`` is a name (``co.backends.configure``, ``co.backends.override``).

Example::

    class User(co.Model):
        id = co.IntegerField(primary_key=True)

        class Meta:
            backend = "main"          # bound when User first runs a query
            serializer = "msgpack"

    co.backends.configure(main="redis://127.0.0.1:6379/0")
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Backend

__all__ = ["configure", "configured", "get", "override", "unconfigure"]

#: The configured backends by name.
_named: dict[str, Backend] = {}


def _as_backend(name: str, value: Any) -> Backend:
    from .._exceptions import ConfigurationError
    from .._urls import backend_from_url
    from .base import Backend

    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"a backend name is a non-empty str, not {name!r}")
    if isinstance(value, Backend):
        return value
    if isinstance(value, str):
        return backend_from_url(value)
    raise ConfigurationError(
        f"backend {name!r}: a URL or a co.*Backend instance, not {type(value).__name__}"
    )


def configure(**backends: str | Backend) -> None:
    """Name backends for models whose ``Meta.backend`` is a name: a URL (built with
    `acacheorm.backend_from_url`) or a backend object. A name configured again is replaced
    (the old backend is not closed).

    Example::

        co.backends.configure(main="redis://127.0.0.1:6379/0", sessions=co.SimpleBackend())
    """
    built = {name: _as_backend(name, value) for name, value in backends.items()}
    _named.update(built)


def unconfigure(*names: str) -> None:
    """Forget named backends (it does not close them).

    Example::

        co.backends.unconfigure("main")
    """
    for name in names:
        _named.pop(name, None)


def configured() -> dict[str, Backend]:
    """The configured backends by name (a copy).

    Example::

        for name, backend in co.backends.configured().items():
            print(name, backend)
    """
    return dict(_named)


def get(name: str, model: str | None = None) -> Backend:
    """The backend configured as ``name``; `ConfigurationError` naming it (and the model
    that asked) when there is none.

    Example::

        backend = co.backends.get("main")
    """
    try:
        return _named[name]
    except KeyError:
        from .._exceptions import ConfigurationError

        who = f"{model}.Meta.backend" if model else "backend"
        known = ", ".join(sorted(_named)) or "none"
        raise ConfigurationError(
            f"{who} is {name!r}, and no backend of that name is configured (configured: "
            f"{known}); call co.backends.configure({name}=...) at start-up, or use "
            "co.lifespan(...)"
        ) from None


class override:
    """Swap named backends for a block (tests), and put the previous ones back after.

    Works as ``with`` and as ``async with``; ``async with`` also closes the backends it
    built from URLs. A name that was not configured before is configured for the block.

    Example::

        with co.backends.override(main=co.SimpleBackend()):
            await User.create(id=1)          # stored in the in-process backend

        async with co.backends.override(main="memory://"):
            ...
    """

    def __init__(self, **backends: str | Backend) -> None:
        self._given = backends
        self._built: list[Backend] = []
        self._saved: list[dict[str, Backend]] = []

    def __enter__(self) -> override:
        new: dict[str, Backend] = {}
        for name, value in self._given.items():
            backend = _as_backend(name, value)
            if backend is not value:
                self._built.append(backend)
            new[name] = backend
        self._saved.append({n: _named[n] for n in new if n in _named})
        for name in new:
            _named[name] = new[name]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        saved = self._saved.pop()
        for name in self._given:
            if name in saved:
                _named[name] = saved[name]
            else:
                _named.pop(name, None)

    async def __aenter__(self) -> override:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
        built, self._built = self._built, []
        for backend in built:
            await backend.close()
