"""Secondary index benchmarks on Redis, against hand-written raw redis-py in the same run.

    python -m benchmarks.indexes --rows 100000        # starts its own redis-server

Prints: an equality filter selecting 100 rows (vs SMEMBERS + MGET + decode), order_by +
limit 20 at several table sizes, round trips of count(), insert_many of 10k rows of a model
with 2 indexes vs a plain one, and MEMORY USAGE bytes per row per index.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

import acacheorm as co
from tests import servers


def models(backend: co.Backend) -> tuple[type[co.Model], type[co.Model]]:
    meta = type("Meta", (), {"backend": backend, "serializer": "msgpack"})

    class Item(co.Model):
        id = co.IntegerField(primary_key=True)
        group = co.IntegerField(index=True)
        rating = co.IntegerField(index=True)
        name = co.StringField()
        Meta = meta

    class PlainItem(co.Model):
        id = co.IntegerField(primary_key=True)
        group = co.IntegerField()
        rating = co.IntegerField()
        name = co.StringField()
        Meta = meta

    return Item, PlainItem


async def timed(fn: Callable[[], Awaitable[Any]], rounds: int = 25, warm_up: int = 3) -> float:
    """The median time of ``fn`` over ``rounds`` calls, after ``warm_up`` untimed ones (the
    first calls of a path run much slower and only add noise on a loaded machine)."""
    for _ in range(warm_up):
        await fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Trips:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, event: co.BatchEvent) -> None:
        self.n += 1


async def main(rows: int, sizes: list[int], cluster: bool) -> None:
    server = servers.RedisCluster() if cluster else servers.RedisServer()
    with servers.running(server):
        backend = co.RedisBackend(server.url, cluster=cluster)
        raw = backend.client
        Item, PlainItem = models(backend)
        trips = Trips()
        co.add_batch_hook(trips)
        groups = rows // 100

        def item(i: int) -> Any:
            return Item(id=i, group=i % groups, rating=i * 7919 % rows, name=f"item {i}")

        for start in range(0, rows, 5000):
            await Item.insert_many(*(item(i) for i in range(start, min(rows, start + 5000))))
        # the hand-written equivalent: a set per group, rows as msgpack maps
        pipe = raw.pipeline(transaction=False)
        for i in range(rows):
            # one hash tag per group: the hand-written best case, one node per group
            tag = "{g" + str(i % groups) + "}"
            pipe.sadd(f"raw:{tag}", f"raw:{tag}:{i}")
            pipe.set(f"raw:{tag}:{i}", msgpack.packb({"id": i, "group": i % groups, "name": "i"}))
            if len(pipe) > 10000:
                await pipe.execute()
        await pipe.execute()

        async def orm_eq() -> None:
            got = await Item.filter(group=7)
            assert len(got) == 100

        async def raw_eq() -> None:
            keys = await raw.smembers("raw:{g7}")
            values = await raw.mget(list(keys))
            assert len([msgpack.unpackb(v) for v in values]) == 100

        t_orm, t_raw = await timed(orm_eq), await timed(raw_eq)
        trips.n = 0
        await orm_eq()
        print(
            f"eq filter selecting 100 of {rows}: orm {t_orm * 1e3:.2f} ms, raw "
            f"SMEMBERS+MGET+decode {t_raw * 1e3:.2f} ms, ratio {t_orm / t_raw:.2f}, "
            f"{trips.n} round trips"
        )
        for size in sizes:
            if size > rows:
                continue

            async def top_only() -> None:
                got = await Item.filter(rating__gte=rows // 2).order_by("-rating").limit(20)
                assert len(got) == 20

            if size == rows:
                t = await timed(top_only)
                trips.n = 0
                await top_only()
                print(
                    f"filter(rating__gte).order_by(-rating).limit(20) on {rows}: "
                    f"{t * 1e3:.2f} ms, {trips.n} round trips"
                )
        trips.n = 0
        n = await Item.filter(group=3).count()
        print(f"count() on an indexed condition: {n} rows, {trips.n} round trip(s), no row read")

        plain = [
            PlainItem(id=i, group=i % 100, rating=i % 1000, name=f"p {i}") for i in range(10000)
        ]
        indexed = [
            Item(id=rows + i, group=i % 100, rating=i % 1000, name=f"p {i}") for i in range(10000)
        ]
        t0 = time.perf_counter()
        await PlainItem.insert_many(*plain)
        t_plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        await Item.insert_many(*indexed)
        t_ix = time.perf_counter() - t0
        print(
            f"insert_many 10k: plain {t_plain * 1e3:.0f} ms, indexed (2 indexes) "
            f"{t_ix * 1e3:.0f} ms, ratio {t_ix / t_plain:.2f}"
        )
        if cluster:
            co.remove_batch_hook(trips)
            await backend.close()
            return
        info_before = await raw.info("memory")
        total_keys = await raw.dbsize()
        used = info_before["used_memory"]
        print(f"used_memory {used} bytes for {total_keys} keys")
        row_key = Item._schema.key((5,))
        row_bytes = await raw.memory_usage(row_key)
        bucket = "~ix:item:{item.0}"
        per_index: dict[str, float] = {}
        for field in ("group", "rating"):
            eq_keys = [k async for k in raw.scan_iter(match=f"{bucket}:e:{field}:*")]
            eq_total = 0
            for k in eq_keys[:200]:
                eq_total += await raw.memory_usage(k) or 0
            eq_total = eq_total * len(eq_keys) / max(1, min(200, len(eq_keys)))
            num_total = await raw.memory_usage(f"{bucket}:n:{field}", samples=0) or 0
            per_index[field] = (eq_total + num_total) / (rows + 10000)
        shared = 0
        for suffix in (":x", ":t"):
            shared += await raw.memory_usage(bucket + suffix, samples=0) or 0
        print(
            f"MEMORY USAGE: row {row_bytes} bytes; per row per index "
            + ", ".join(f"{k} {v:.0f} B" for k, v in per_index.items())
            + f"; per-row bookkeeping (expiry set + entry list) {shared / (rows + 10000):.0f} B"
        )
        co.remove_batch_hook(trips)
        await backend.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--cluster", action="store_true", help="a 3-master Redis Cluster")
    args = parser.parse_args()
    asyncio.run(main(args.rows, [args.rows], args.cluster))
