"""A query with nothing to send is no round trip: batch hooks hear nothing."""

from __future__ import annotations

from types import SimpleNamespace

import acacheorm as co
from tests.models.conftest import RoundTrips


async def test_empty_queries_send_nothing(models: SimpleNamespace, round_trips: RoundTrips) -> None:
    User = models.User
    assert await User.insert_many() == []
    assert await User.query_many() == []
    assert await User.delete_many() == 0
    assert await User.update_many() == []
    assert await co.insert_many() == []
    assert await co.query_many() == []
    assert await co.delete_many() == 0
    assert User.insert_many().compile() == [] or all(
        not batch.commands for _, batch in User.insert_many().compile()
    )
    assert round_trips.events == []
    # and a query with something to send is still counted
    await User.query_many(1)
    assert round_trips.count == 1
    assert len(round_trips.events[0].batch.commands) == 1
