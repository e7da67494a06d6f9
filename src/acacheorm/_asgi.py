"""ASGI integration (FastAPI, Starlette): a lifespan for backends, and exception handlers.

Example::

    app = FastAPI(lifespan=co.lifespan(User, Article))
    co.install_exception_handlers(app)

Only `install_exception_handlers` needs Starlette (FastAPI depends on it); it is imported
when called, so ``import acacheorm`` never needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from ._base import Model
from ._exceptions import (
    BackendUnavailable,
    ConfigurationError,
    ConflictError,
    DoesNotExist,
    ValidationError,
)
from ._schema import schema_of
from .backends.base import Backend

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response


__all__ = ["install_exception_handlers", "lifespan"]

logger = logging.getLogger("acacheorm")

#: The key the startup check asks for; it is never written.
PING_KEY = "__acacheorm_ping__"

#: Longest repr of an offending value echoed back in a 422 body.
_VALUE_REPR_LIMIT = 200


def lifespan(
    *models_or_backends: type[Model] | Backend,
    **named: str | Backend,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan for ``FastAPI(lifespan=...)`` / ``Starlette(lifespan=...)``.

    Keywords configure named backends at startup (a URL or a backend object, as
    `acacheorm.backends.configure` takes them) for models whose ``Meta.backend`` is a name;
    the previous configuration is put back at shutdown. At startup it checks every distinct
    backend (the named ones, and those of the given models or backends; with no argument at
    all, every configured backend) with one cheap read, so a server that is down fails
    startup with `BackendUnavailable` instead of the first request; at shutdown it closes
    each of them once. Nothing connects before startup. To combine it with a lifespan of
    your own, enter it inside yours: ``async with co.lifespan(main=url)(app): yield``.

    Example::

        app = FastAPI(lifespan=co.lifespan(main=os.environ["REDIS_URL"]))
        app = FastAPI(lifespan=co.lifespan(User, Article, Collection))

        @contextlib.asynccontextmanager
        async def app_lifespan(app):
            async with co.lifespan(main="redis://127.0.0.1:6379/0")(app):
                yield
    """
    from . import backends as registry

    for name, value in named.items():
        if not isinstance(value, str | Backend):
            raise TypeError(f"lifespan({name}=...) takes a URL or a backend, not {value!r}")
    if models_or_backends:
        _distinct_backends(models_or_backends, resolve=False)  # wrong arguments fail now

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        before = registry.configured()
        registry.configure(**named)
        try:
            targets: tuple[Any, ...] = (
                *models_or_backends,
                *(registry.get(n) for n in named),
            )
            if not targets:
                targets = tuple(registry.configured().values())
            backends = _distinct_backends(targets)
        except BaseException:
            _restore(registry, named, before)
            raise
        try:
            try:
                await _check(backends)
            except BaseException:
                await _close_all(backends)
                raise
            try:
                yield
            finally:
                await _close_all(backends)
        finally:
            _restore(registry, named, before)

    return run


def _restore(registry: Any, named: dict[str, Any], before: dict[str, Backend]) -> None:
    for name in named:
        if name in before:
            registry.configure(**{name: before[name]})
        else:
            registry.unconfigure(name)


def _distinct_backends(
    targets: tuple[type[Model] | Backend, ...], resolve: bool = True
) -> list[Backend]:

    if not targets:
        raise TypeError(
            "lifespan() has no backend to manage: pass models, backends or name=url "
            "keywords, or configure backends with co.backends.configure first"
        )
    found: dict[int, Backend] = {}
    for target in targets:
        if isinstance(target, Backend):
            backend = target
        elif isinstance(target, type) and issubclass(target, Model):
            schema = schema_of(target)
            if schema is None:
                raise TypeError(f"lifespan(): {target.__name__} is abstract (it has no backend)")
            if not resolve:
                continue
            backend = schema.backend
        else:
            raise TypeError(f"lifespan() takes model classes or backends, not {target!r}")
        found.setdefault(id(backend), backend)
    return list(found.values())


async def _check(backends: list[Backend]) -> None:
    # The raw byte API runs through the executor: batch hooks and logging see the ping.
    results = await asyncio.gather(*(b.has(PING_KEY) for b in backends), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    # A near cache serves once its invalidation channel is up: open it now, not on the
    # first request (startup does not fail if it is slow: reads go to the server meanwhile).
    nears = [b.near_cache for b in backends if b.near_cache is not None]
    if nears:
        await asyncio.gather(*(near.wait_ready() for near in nears))


async def _close_all(backends: list[Backend]) -> None:
    """Close every backend even if one fails; then raise the first failure."""
    first: BaseException | None = None
    for backend in backends:
        try:
            await backend.close()
        except Exception as exc:
            logger.warning("closing %r failed", backend, exc_info=True)
            if first is None:
                first = exc
    if first is not None:
        raise first


# -- exception handlers ---------------------------------------------------------------------


def install_exception_handlers(app: Starlette) -> None:
    """Turn acacheorm errors raised in routes into JSON responses.

    - ``DoesNotExist`` (any ``Model.DoesNotExist``) → 404 ``{"detail": "User with id=1
      does not exist"}`` (the internal cache key is not shown)
    - ``ValidationError`` → 422, shaped like FastAPI's own validation errors (``loc`` is
      ``["body", field]``) and naming the model, the field and the offending value (its
      repr): ``{"detail": [{"type": "value_error", "loc": ["body", "name"], "msg": ...,
      "model": "User", "field": "name", "value": "'xxx...'"}]}``
    - ``BackendUnavailable`` → 503 with a generic message (the server address stays in the
      log, not in the response)
    - ``ConflictError`` → 409 ``{"detail": ...}``

    Works on a FastAPI app and on a plain Starlette app (``pip install 'acacheorm[fastapi]'``).

    Example::

        app = FastAPI(lifespan=co.lifespan(User))
        co.install_exception_handlers(app)

        @app.get("/users/{user_id}")
        async def read_user(user_id: int) -> dict[str, Any]:
            return (await User.get(id=user_id)).to_dict()   # a miss answers 404
    """
    try:
        import starlette  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "install_exception_handlers() needs Starlette: pip install 'acacheorm[fastapi]'"
        ) from exc
    app.add_exception_handler(DoesNotExist, _does_not_exist)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(BackendUnavailable, _backend_unavailable)
    app.add_exception_handler(ConflictError, _conflict)


def _json(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse(content, status_code=status, headers=headers)


async def _does_not_exist(request: Request, exc: Exception) -> Response:
    # ``detail`` leaves out the stored key: it names the deployment's namespace and layout.
    detail = exc.detail if isinstance(exc, DoesNotExist) else str(exc)
    return _json(404, {"detail": detail})


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    value = repr(exc.value)
    if len(value) > _VALUE_REPR_LIMIT:
        value = value[: _VALUE_REPR_LIMIT - 3] + "..."
    error = {
        "type": "value_error",
        # As FastAPI locates errors in request bodies: ["body", field].
        "loc": ["body", exc.field] if exc.field is not None else ["body"],
        "msg": str(exc),
        "model": exc.model,
        "field": exc.field,
        "value": value,
    }
    return _json(422, {"detail": [error]})


async def _backend_unavailable(request: Request, exc: Exception) -> Response:
    logger.error(
        "cache backend unavailable during %s %s", request.method, request.url.path, exc_info=exc
    )
    return _json(503, {"detail": "the cache backend is unavailable"}, {"Retry-After": "1"})


async def _conflict(request: Request, exc: Exception) -> Response:
    return _json(409, {"detail": str(exc)})
