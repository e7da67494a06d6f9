"""Secondary index benchmarks on Redis, against hand-written raw redis-py in the same run.

    python -m benchmarks.indexes --rows 100000        # starts its own redis-server
    python -m benchmarks.indexes --sizes 10000,100000,1000000 [--cluster]

Prints, at each table size (the table grows from one size to the next): an equality filter
selecting 100 rows (vs SMEMBERS + MGET + decode), order_by + limit 20, round trips of
count(); then insert_many of 10k rows of a model with 2 indexes vs a plain one (the median
of several rounds, alternating), and MEMORY USAGE bytes per row per index.
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


async def timed_pair(
    a: Callable[[], Awaitable[Any]], b: Callable[[], Awaitable[Any]], rounds: int = 51
) -> tuple[float, float]:
    """The median times of ``a`` and ``b``, called alternately (so that drift on a shared
    machine hits both alike), after a few untimed calls of each."""
    for _ in range(3):
        await a()
        await b()
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(rounds):
        for fn, times in ((a, ta), (b, tb)):
            start = time.perf_counter()
            await fn()
            times.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


class Trips:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, event: co.BatchEvent) -> None:
        self.n += 1


async def main(sizes: list[int], cluster: bool, rounds: int = 7) -> None:
    server = servers.RedisCluster() if cluster else servers.RedisServer()
    with servers.running(server):
        backend = co.RedisBackend(server.url, cluster=cluster)
        raw = backend.client
        Item, PlainItem = models(backend)
        trips = Trips()
        co.add_batch_hook(trips)
        written = 0
        for rows in sorted(sizes):
            # values that do not depend on the table size: a larger size only adds rows
            def item(i: int) -> Any:
                return Item(id=i, group=i // 100, rating=i * 7919 % 1_000_003, name=f"item {i}")

            for start in range(written, rows, 5000):
                await Item.insert_many(*(item(i) for i in range(start, min(rows, start + 5000))))
            written = rows
            # the hand-written equivalent: a set per group, rows as msgpack maps
            await raw.delete("raw:{g7}")
            pipe = raw.pipeline(transaction=False)
            for i in range(700, 800):
                # one hash tag per group: the hand-written best case, one node per group
                pipe.sadd("raw:{g7}", f"raw:{{g7}}:{i}")
                pipe.set(f"raw:{{g7}}:{i}", msgpack.packb({"id": i, "group": 7, "name": "i"}))
            await pipe.execute()

            async def orm_eq() -> None:
                got = await Item.filter(group=7)
                assert len(got) == 100

            async def raw_eq() -> None:
                keys = await raw.smembers("raw:{g7}")
                values = await raw.mget(list(keys))
                assert len([msgpack.unpackb(v) for v in values]) == 100

            t_orm, t_raw = await timed_pair(orm_eq, raw_eq)
            trips.n = 0
            await orm_eq()
            print(
                f"[{rows}] eq filter selecting 100: orm {t_orm * 1e3:.2f} ms, raw "
                f"SMEMBERS+MGET+decode {t_raw * 1e3:.2f} ms, ratio {t_orm / t_raw:.2f}, "
                f"{trips.n} round trip(s)"
            )

            async def top_only() -> None:
                got = await Item.filter(rating__gte=500_000).order_by("-rating").limit(20)
                assert len(got) == 20

            t = await timed(top_only)
            trips.n = 0
            await top_only()
            print(
                f"[{rows}] filter(rating__gte).order_by(-rating).limit(20): "
                f"{t * 1e3:.2f} ms, {trips.n} round trip(s)"
            )
            trips.n = 0
            n = await Item.filter(group=3).count()
            print(f"[{rows}] count() on an indexed condition: {n} rows, {trips.n} round trip(s)")

        rows = max(sizes)
        ratios, t_plains, t_ixs, cpu_ratios = [], [], [], []

        async def server_cpu() -> float:
            """CPU seconds the server(s) used so far (every node of a Cluster)."""
            if cluster:
                got = await raw.info("cpu", target_nodes=raw.PRIMARIES)
                nodes = list(got.values())
            else:
                nodes = [await raw.info("cpu")]
            return sum(n["used_cpu_user"] + n["used_cpu_sys"] for n in nodes)

        async def run(model: Any, objs: list[Any]) -> tuple[float, float]:
            """Wall time, and CPU time of this process plus the server(s): the second is
            what a loaded machine distorts least."""
            s0, c0, t0 = await server_cpu(), time.process_time(), time.perf_counter()
            await model.insert_many(*objs)
            t, c = time.perf_counter() - t0, time.process_time() - c0
            return t, c + await server_cpu() - s0

        for r in range(rounds):
            base = 10**7 + r * 10000
            plain = [
                PlainItem(id=base + i, group=i % 100, rating=i % 1000, name=f"p {i}")
                for i in range(10000)
            ]
            indexed = [
                Item(id=base + i, group=i % 100, rating=i % 1000, name=f"p {i}")
                for i in range(10000)
            ]
            t_plain, c_plain = await run(PlainItem, plain)
            t_ix, c_ix = await run(Item, indexed)
            t_plains.append(t_plain)
            t_ixs.append(t_ix)
            ratios.append(t_ix / t_plain)
            cpu_ratios.append(c_ix / c_plain)
        print(
            f"insert_many 10k (median of {rounds}): plain {statistics.median(t_plains) * 1e3:.0f} "
            f"ms, indexed (2 indexes) {statistics.median(t_ixs) * 1e3:.0f} ms, ratio "
            f"{statistics.median(ratios):.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)}); "
            f"CPU (client + server) ratio {statistics.median(cpu_ratios):.2f}"
        )
        if cluster:
            co.remove_batch_hook(trips)
            await backend.close()
            return
        total = rows + rounds * 10000
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
            per_index[field] = (eq_total + num_total) / total
        shared = 0
        for suffix in (":x", ":t"):
            shared += await raw.memory_usage(bucket + suffix, samples=0) or 0
        print(
            f"MEMORY USAGE: row {row_bytes} bytes; per row per index "
            + ", ".join(f"{k} {v:.0f} B" for k, v in per_index.items())
            + f"; per-row bookkeeping (expiry set + entry list) {shared / total:.0f} B"
        )
        co.remove_batch_hook(trips)
        await backend.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000, help="one table size")
    parser.add_argument(
        "--sizes", default=None, help="several table sizes, e.g. 10000,100000,1000000"
    )
    parser.add_argument("--cluster", action="store_true", help="a 3-master Redis Cluster")
    parser.add_argument("--rounds", type=int, default=7, help="insert_many rounds")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else [args.rows]
    asyncio.run(main(sizes, args.cluster, args.rounds))
