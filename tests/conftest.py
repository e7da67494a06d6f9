"""Shared fixtures: real servers (session scope) and a ``backend`` fixture parametrized over
every backend. ``ACACHEORM_TEST_BACKENDS=memory,redis`` limits the run to some backends."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from acacheorm.backends.base import Backend
from tests import servers

ALL_BACKENDS = ["memory", "filesystem", "redis", "redis-cluster", "memcached"]
BACKENDS = [
    b for b in os.environ.get("ACACHEORM_TEST_BACKENDS", ",".join(ALL_BACKENDS)).split(",") if b
]
_counter = itertools.count()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[servers.RedisServer | str]:
    url = os.environ.get("ACACHEORM_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = servers.RedisServer()
    with servers.running(server):
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: servers.RedisServer | str) -> str:
    return redis_server if isinstance(redis_server, str) else redis_server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[servers.RedisCluster | str]:
    url = os.environ.get("ACACHEORM_TEST_REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    cluster = servers.RedisCluster()
    with servers.running(cluster):
        yield cluster


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: servers.RedisCluster | str) -> str:
    return redis_cluster if isinstance(redis_cluster, str) else redis_cluster.url


@pytest.fixture(scope="session")
def memcached_servers() -> Iterator[list[tuple[str, int]]]:
    env = os.environ.get("ACACHEORM_TEST_MEMCACHED")
    if env:
        addrs = []
        for part in env.split(","):
            host, _, port = part.rpartition(":")
            addrs.append((host, int(port)))
        yield addrs
        return
    nodes = [servers.Memcached(), servers.Memcached()]
    for n in nodes:
        n.start()
    try:
        yield [n.address for n in nodes]
    finally:
        for n in nodes:
            n.stop()


def unique_namespace(prefix: str = "t") -> str:
    return f"{prefix}{os.getpid()}x{next(_counter)}"


def make_backend(
    name: str, request: pytest.FixtureRequest, tmp_path: Path, namespace: str, **options: Any
) -> Backend:
    """Build a fresh backend of kind ``name`` against the session's servers.

    ``ACACHEORM_TEST_NEAR_CACHE=1`` gives every backend a near cache (on Memcached and the
    filesystem with ``max_ttl`` from ``ACACHEORM_TEST_NEAR_MAX_TTL``, default 0.05 s), so
    the whole suite runs through it.
    """
    if os.environ.get("ACACHEORM_TEST_NEAR_CACHE") and "near_cache" not in options:
        from acacheorm.backends.near import NearCache

        max_ttl = None
        if name in ("memcached", "filesystem"):
            max_ttl = float(os.environ.get("ACACHEORM_TEST_NEAR_MAX_TTL", "0.05"))
        options["near_cache"] = NearCache(max_ttl=max_ttl)
    if name == "memory":
        from acacheorm.backends.memory import SimpleBackend

        return SimpleBackend(namespace=namespace, **options)
    if name == "filesystem":
        from acacheorm.backends.filesystem import FileSystemBackend

        return FileSystemBackend(tmp_path / "store", namespace=namespace, **options)
    if name == "redis":
        from acacheorm.backends.redis import RedisBackend

        return RedisBackend(request.getfixturevalue("redis_url"), namespace=namespace, **options)
    if name == "redis-cluster":
        from acacheorm.backends.redis import RedisBackend

        url = request.getfixturevalue("redis_cluster_url")
        return RedisBackend(url, cluster=True, namespace=namespace, **options)
    if name == "memcached":
        from acacheorm.backends.memcached import MemcachedBackend

        addrs = request.getfixturevalue("memcached_servers")
        return MemcachedBackend(addrs, namespace=namespace, **options)
    raise ValueError(f"unknown backend kind {name!r}")


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def backend(
    backend_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Backend]:
    b = make_backend(backend_name, request, tmp_path, unique_namespace())
    try:
        yield b
    finally:
        try:
            await b.clear()
        finally:
            await b.close()


@pytest.fixture
def backend_factory(
    backend_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Any]:
    """Build more backends of the current kind (another namespace, other options)."""
    made: list[Backend] = []

    def factory(namespace: str | None = None, **options: Any) -> Backend:
        b = make_backend(
            backend_name, request, tmp_path, namespace or unique_namespace(), **options
        )
        made.append(b)
        return b

    yield factory
    # closing is async; tests that use the factory close what they build (async with)
