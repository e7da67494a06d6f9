"""Fixtures for the model suite: the models of API.md bound to the backend under test."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import acacheorm as co
from acacheorm.backends.base import Backend
from acacheorm.cli._demo import define_models


@pytest.fixture
def models(backend: Backend) -> SimpleNamespace:
    user, article, collection = define_models(backend, "msgpack")
    return SimpleNamespace(User=user, Article=article, Collection=collection, backend=backend)


class RoundTrips:
    """Counts round trips (batches sent) per backend through the executor's hook."""

    def __init__(self) -> None:
        self.events: list[co.BatchEvent] = []

    def __call__(self, event: co.BatchEvent) -> None:
        self.events.append(event)

    @property
    def count(self) -> int:
        return len(self.events)

    def reset(self) -> None:
        self.events.clear()

    def commands(self) -> list[Any]:
        return [c for e in self.events for c in e.batch.commands]


@pytest.fixture
def round_trips() -> Iterator[RoundTrips]:
    counter = RoundTrips()
    co.add_batch_hook(counter)
    try:
        yield counter
    finally:
        co.remove_batch_hook(counter)
