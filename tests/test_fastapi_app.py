"""The FastAPI example service end to end (in memory and on a real Redis), and the ASGI
helpers (`lifespan`, `install_exception_handlers`) on FastAPI and plain Starlette."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import acacheorm as co
from acacheorm._asgi import PING_KEY, install_exception_handlers, lifespan
from examples.fastapi_app.app import create_app
from tests import servers
from tests.conftest import BACKENDS, unique_namespace

SERVICE_BACKENDS = [kind for kind in ("memory", "redis") if kind in BACKENDS]


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass
class Service:
    app: FastAPI
    client: httpx.AsyncClient
    backend: co.Backend
    calls: list[str] = field(default_factory=list)
    round_trips: list[co.BatchEvent] = field(default_factory=list)

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post(path, json=body)


@pytest.fixture(params=SERVICE_BACKENDS)
def service_url(request: pytest.FixtureRequest) -> str:
    namespace = unique_namespace("fastapi")
    if request.param == "memory":
        return f"memory://?namespace={namespace}"
    return with_query(request.getfixturevalue("redis_url"), namespace=namespace)


@contextlib.contextmanager
def spied(backend: co.Backend, calls: list[str]) -> Iterator[None]:
    """Record the lifespan's calls on the backend (its startup ping and its close)."""
    original_has, original_close = backend.has, backend.close

    async def has(key: str) -> bool:
        calls.append(f"has {key}")
        return await original_has(key)

    async def close() -> None:
        calls.append("close")
        await original_close()

    backend.has = has  # type: ignore[method-assign]
    backend.close = close  # type: ignore[method-assign]
    try:
        yield
    finally:
        del backend.has, backend.close


@pytest.fixture
async def service(service_url: str) -> AsyncIterator[Service]:
    app = create_app(service_url)
    backend: co.Backend = app.state.backend
    svc = Service(app, httpx.AsyncClient(), backend)

    def hook(event: co.BatchEvent) -> None:
        if event.backend is backend:
            svc.round_trips.append(event)

    co.add_batch_hook(hook)
    try:
        with spied(backend, svc.calls):
            # ASGITransport does not run the lifespan; run it around the client, as a server.
            async with app.router.lifespan_context(app):
                assert [type(c).__name__ for e in svc.round_trips for c in e.batch.commands] == [
                    "Has"
                ]  # the startup ping
                svc.round_trips.clear()  # from here on, the requests' round trips
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                    svc.client = c
                    try:
                        yield svc
                    finally:
                        await backend.clear()
    finally:
        co.remove_batch_hook(hook)


SAM = {"id": 1, "name": "Sam", "height": 1.78, "email": "sam@example.com", "phones": ["+1 555"]}
KIM = {"id": 2, "name": "Kim", "height": 1.64, "gender": 2}


# -- users ------------------------------------------------------------------------------------


async def test_user_create_read_update_delete(service: Service) -> None:
    r = await service.post("/users", SAM)
    assert r.status_code == 201, r.text
    created = r.json()
    assert {k: created[k] for k in SAM} == SAM
    assert created["married"] is False and created["gender"] == 0
    assert created["created_at"].endswith("Z") or created["created_at"].endswith("+00:00")

    r = await service.post("/users", SAM)
    assert r.status_code == 409

    r = await service.client.get("/users/1")
    assert r.status_code == 200 and r.json() == created

    r = await service.client.patch("/users/1", json={"height": 1.8, "married": True})
    assert r.status_code == 200
    assert r.json() == {**created, "height": 1.8, "married": True}
    assert (await service.client.get("/users/1")).json() == r.json()

    r = await service.client.patch("/users/1", json={})
    assert r.status_code == 200 and r.json()["height"] == 1.8

    r = await service.client.delete("/users/1")
    assert r.status_code == 204 and r.content == b""
    r = await service.client.get("/users/1")
    assert r.status_code == 404
    assert r.json() == {"detail": "User with id=1 does not exist"}  # no internal key
    assert (await service.client.delete("/users/1")).status_code == 404
    assert (await service.client.patch("/users/1", json={"height": 2.0})).status_code == 404


async def test_model_validation_error_answers_422(service: Service) -> None:
    """A PATCH body the pydantic schema accepts (every field of a partial schema may be
    null) but the model refuses: the acacheorm ValidationError handler answers."""
    assert (await service.post("/users", SAM)).status_code == 201
    r = await service.client.patch("/users/1", json={"name": None})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["model"] == "User" and error["field"] == "name" and error["value"] == "None"
    assert error["loc"] == ["body", "name"] and "may not be None" in error["msg"]
    assert (await service.client.get("/users/1")).json()["name"] == "Sam"  # unchanged


async def test_schema_validation_answers_422_before_anything_is_written(
    service: Service,
) -> None:
    r = await service.post("/users", {**SAM, "name": "x" * 65})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "name"] and "model" not in error  # FastAPI's own check
    r = await service.client.patch("/users/1", json={"height": -1})
    assert r.status_code == 422  # min_value=0 carried over to the schema
    assert service.round_trips == []  # refused before the backend was asked anything
    assert (await service.client.get("/users/1")).status_code == 404


# -- articles ---------------------------------------------------------------------------------


async def test_articles_list_with_select_related(service: Service) -> None:
    for user in (SAM, KIM):
        assert (await service.post("/users", user)).status_code == 201
    for i, author in ((10, 1), (11, 2), (12, 1)):
        r = await service.post("/articles", {"id": i, "author": author, "title": f"t{i}"})
        assert r.status_code == 201, r.text
        assert r.json() == {"id": i, "author": author, "title": f"t{i}", "content": ""}

    service.round_trips.clear()
    r = await service.client.get("/articles", params={"ids": "12,404,10,11"})
    assert r.status_code == 200
    body = r.json()
    assert [a and a["id"] for a in body] == [12, None, 10, 11]
    assert [a["author"]["name"] for a in body if a] == ["Sam", "Sam", "Kim"]
    assert body[0]["author_id"] == 1 and body[0]["author"]["email"] == "sam@example.com"
    # One multi-get for the articles, one for the two distinct authors.
    assert len(service.round_trips) == 2
    assert len(service.round_trips[1].batch.commands) == 2

    r = await service.client.get("/articles/11")
    assert r.status_code == 200 and r.json()["author"]["name"] == "Kim"


async def test_article_update_delete_and_missing_author(service: Service) -> None:
    assert (await service.post("/users", SAM)).status_code == 201
    r = await service.post("/articles", {"id": 10, "author": 7, "title": "orphan"})
    assert r.status_code == 422 and "author 7" in r.json()["detail"]
    assert (await service.post("/articles", {"id": 10, "author": 1, "title": "t"})).is_success
    assert (await service.post("/articles", {"id": 10, "author": 1, "title": "t"})).status_code == (
        409
    )

    r = await service.client.patch("/articles/10", json={"content": "hello"})
    assert r.status_code == 200 and r.json()["content"] == "hello" and r.json()["title"] == "t"

    assert (await service.client.delete("/users/1")).status_code == 204
    r = await service.client.get("/articles/10")
    assert r.status_code == 200 and r.json()["author"] is None and r.json()["author_id"] == 1

    assert (await service.client.delete("/articles/10")).status_code == 204
    assert (await service.client.get("/articles/10")).status_code == 404
    r = await service.client.get("/articles", params={"ids": "10"})
    assert r.status_code == 200 and r.json() == [None]


@pytest.mark.parametrize("ids", ["", "1,x", ",".join(["1"] * 101)])
async def test_article_ids_are_checked(service: Service, ids: str) -> None:
    r = await service.client.get("/articles", params={"ids": ids})
    assert r.status_code == 422


# -- collections ------------------------------------------------------------------------------


async def test_collections(service: Service) -> None:
    assert (await service.post("/users", SAM)).status_code == 201
    assert (await service.post("/articles", {"id": 10, "author": 1, "title": "t"})).is_success

    r = await service.post("/collections", {"collector": 1, "article": 99})
    assert r.status_code == 422 and "article 99" in r.json()["detail"]
    r = await service.post("/collections", {"collector": 5, "article": 10})
    assert r.status_code == 422 and "collector 5" in r.json()["detail"]

    r = await service.post("/collections", {"collector": 1, "article": 10, "mark": "later"})
    assert r.status_code == 201 and r.json() == {"collector": 1, "article": 10, "mark": "later"}
    r = await service.client.get("/collections/1/10")
    assert r.status_code == 200 and r.json()["mark"] == "later"

    assert (await service.client.delete("/collections/1/10")).status_code == 204
    r = await service.client.get("/collections/1/10")
    assert r.status_code == 404 and "Collection" in r.json()["detail"]
    assert (await service.client.delete("/collections/1/10")).status_code == 404


async def test_openapi_uses_the_generated_schemas(service: Service) -> None:
    r = await service.client.get("/openapi.json")
    assert r.status_code == 200
    schemas = r.json()["components"]["schemas"]
    assert {"User", "UserIn", "UserPatch", "Article", "ArticleWithAuthor"} <= set(schemas)
    assert schemas["UserIn"]["properties"]["name"]["maxLength"] == 64
    assert "created_at" not in schemas["UserIn"]["properties"]
    assert schemas["UserPatch"].get("required", []) == []


# -- lifespan ---------------------------------------------------------------------------------


async def test_lifespan_pings_at_startup_and_closes_once(service_url: str) -> None:
    app = create_app(service_url)
    backend: co.Backend = app.state.backend
    calls: list[str] = []
    with spied(backend, calls):
        async with app.router.lifespan_context(app):
            # Three models share the backend: one ping, and nothing else before a request.
            assert calls == [f"has {PING_KEY}"]
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                assert (await c.post("/users", json=SAM)).status_code == 201
            await backend.clear()
        assert calls == [f"has {PING_KEY}", "close"]


async def test_lifespan_ping_goes_through_the_executor() -> None:
    """Batch hooks see the startup check like any other round trip."""
    backend = co.SimpleBackend()
    events: list[co.BatchEvent] = []
    co.add_batch_hook(events.append)
    try:
        async with lifespan(backend)(None):
            [event] = events
    finally:
        co.remove_batch_hook(events.append)
    assert event.backend is backend and event.error is None
    assert [(type(c).__name__, c.key) for c in event.batch.commands] == [("Has", PING_KEY)]
    assert (event.hits, event.misses) == (0, 1)


async def test_lifespan_fails_startup_when_the_server_is_down() -> None:
    pytest.importorskip("redis")
    app = create_app(f"redis://{servers.HOST}:{servers.free_port()}/0")
    calls: list[str] = []
    with spied(app.state.backend, calls), pytest.raises(co.BackendUnavailable):
        async with app.router.lifespan_context(app):
            pytest.fail("the app started without its backend")
    assert calls[-1] == "close"


async def test_lifespan_takes_backends_and_closes_each_distinct_one() -> None:
    first, second = co.SimpleBackend(), co.SimpleBackend()
    calls: list[str] = []
    with spied(first, calls), spied(second, calls):
        async with lifespan(first, second, first)(None):
            assert calls == [f"has {PING_KEY}"] * 2
        assert calls[2:] == ["close", "close"]


def test_lifespan_arguments_are_checked() -> None:
    class Abstract(co.Model):
        class Meta:
            abstract = True
            backend = co.SimpleBackend()
            serializer = "json"

    with pytest.raises(TypeError, match="model classes or backends"):
        lifespan("redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="abstract"):
        lifespan(Abstract)
    with pytest.raises(TypeError, match="a URL or a backend"):
        lifespan(main=42)  # type: ignore[arg-type]


async def test_lifespan_without_arguments_needs_configured_backends() -> None:
    saved = co.backends.configured()
    co.backends.unconfigure(*saved)
    try:
        with pytest.raises(TypeError, match="no backend to manage"):
            async with lifespan()(None):
                pytest.fail("started without a backend")
        backend = co.SimpleBackend()
        calls: list[str] = []
        co.backends.configure(only=backend)
        with spied(backend, calls):
            async with lifespan()(None):  # every configured backend
                assert calls == [f"has {PING_KEY}"]
            assert calls[-1] == "close"
    finally:
        co.backends.unconfigure(*co.backends.configured())
        co.backends.configure(**saved)


async def test_lifespan_configures_named_backends_then_restores() -> None:
    class Note(co.Model):
        id = co.IntegerField(primary_key=True)

        class Meta:
            backend = "notes"
            serializer = "json"

    backend = co.SimpleBackend()
    calls: list[str] = []
    assert "notes" not in co.backends.configured()
    with spied(backend, calls):
        async with lifespan(notes=backend)(None):
            assert calls == [f"has {PING_KEY}"]
            assert co.backends.get("notes") is backend
            await Note.create(id=1)
            assert await backend.has("note:1")
        assert calls[-1] == "close"
    assert "notes" not in co.backends.configured()  # put back as it was
    with pytest.raises(co.ConfigurationError, match="'notes'"):
        await Note.get(id=1)

    # A URL is built at startup; the models of the lifespan are checked too.
    async with lifespan(Note, notes="memory://?namespace=n")(None):
        built = co.backends.get("notes")
        assert built.namespace == "n"
        await Note.create(id=2)
        assert await built.has("note:2")


# -- exception handlers on plain Starlette ------------------------------------------------------


async def test_exception_handlers_on_starlette() -> None:
    backend = co.SimpleBackend()

    class Thing(co.Model):
        id = co.IntegerField(primary_key=True)
        name = co.StringField(max_length=3)

        class Meta:
            backend = co.SimpleBackend()
            serializer = "json"

    async def missing(request: Request) -> JSONResponse:
        await Thing.get(id=1)
        raise AssertionError("unreachable")

    async def invalid(request: Request) -> JSONResponse:
        Thing(id=1, name="x" * 1000)
        raise AssertionError("unreachable")

    async def down(request: Request) -> JSONResponse:
        raise co.BackendUnavailable("redis://secret@10.0.0.1:6379 refused")

    async def conflict(request: Request) -> JSONResponse:
        raise co.ConflictError("Thing: update of 'thing:1' kept racing")

    app = Starlette(
        routes=[
            Route("/missing", missing),
            Route("/invalid", invalid),
            Route("/down", down),
            Route("/conflict", conflict),
        ],
        lifespan=lifespan(Thing, backend),
    )
    install_exception_handlers(app)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.get("/missing")
            assert r.status_code == 404
            assert r.json() == {"detail": "Thing with id=1 does not exist"}

            r = await c.get("/invalid")
            assert r.status_code == 422
            [error] = r.json()["detail"]
            assert (error["model"], error["field"]) == ("Thing", "name")
            assert error["value"].startswith("'xxx") and len(error["value"]) == 200

            r = await c.get("/down")
            assert r.status_code == 503 and "secret" not in r.text
            assert r.headers["retry-after"] == "1"

            r = await c.get("/conflict")
            assert r.status_code == 409 and "kept racing" in r.json()["detail"]
