"""Near-cache benchmarks (starts its own servers on loopback):

1. hot ``get_by_id`` through a near cache against a raw redis-py ``GET`` + msgpack decode
   (memory: a dict lookup + decode), and against the in-process backend without one;
2. invalidation delay: two backend objects on one server, from the moment the writer's call
   returns to the moment the reader sees the new value (median, p99 over 1,000 writes);
3. a read-heavy mix (95% reads, zipfian over 10k keys, 5% writes from another backend object),
   throughput with and without a near cache, and the stale reads observed: a read returning a
   version older than the last invalidation the reader had received when the read started;
4. memory per cached entry (tracemalloc).

    python -m benchmarks.near                      # memory, redis, redis-cluster
    python -m benchmarks.near --backends redis --quick
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import random
import statistics
import sys
import time
import tracemalloc
from typing import Any

import acacheorm as co
from acacheorm.cli._demo import define_models
from benchmarks.cases import RawMemory, RawRedis, Servers, codec, orm_row, raw_row


def _backend(servers: Servers, name: str, ns: str, near: co.NearCache | None) -> co.Backend:
    if name == "memory":
        return co.SimpleBackend(namespace=ns, near_cache=near)
    if name == "redis":
        assert servers.redis is not None
        return co.RedisBackend(servers.redis.url, namespace=ns, near_cache=near)
    assert servers.cluster is not None
    return co.RedisBackend(servers.cluster.url, cluster=True, namespace=ns, near_cache=near)


async def _ready(backend: co.Backend) -> None:
    if backend.near_cache is not None:
        assert await backend.near_cache.wait_ready(10)


async def _settle(backend: co.Backend, received: int) -> None:
    """Wait until the reader's near cache has heard ``received`` invalidated keys."""
    near = backend.near_cache
    assert near is not None
    deadline = time.monotonic() + 30
    while near._received < received and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def hot_get(servers: Servers, name: str, n: int, rounds: int) -> dict[str, float]:
    """ops/s of a hot get_by_id (every key held) against the raw twin."""
    keys = 1000
    backend = _backend(servers, name, "nearhot", co.NearCache())
    plain = co.SimpleBackend(namespace="plainhot")
    user, _, _ = define_models(backend, "msgpack")
    dumps, loads = codec("msgpack")
    raw: Any
    if name == "memory":
        raw = RawMemory()
    else:
        raw = RawRedis(
            servers.redis.url if name == "redis" else servers.cluster.url,  # type: ignore[union-attr]
            name == "redis-cluster",
        )
    try:
        await _ready(backend)
        await user.insert_many(*(orm_row(i) for i in range(keys)))
        await raw.set_many([(f"raw:{i}", dumps(raw_row(i))) for i in range(keys)], 3600)
        if backend.near_cache is not None and name != "memory":
            await _settle(backend, keys)
        for i in range(keys):  # fill
            await user.get_by_id(i)
        plain_user, _, _ = define_models(plain, "msgpack")
        await plain_user.insert_many(*(orm_row(i) for i in range(keys)))

        async def orm() -> float:
            get = user.get_by_id
            start = time.perf_counter()
            for i in range(n):
                await get(i % keys)
            return n / (time.perf_counter() - start)

        async def raw_side() -> float:
            get = raw.get
            start = time.perf_counter()
            for i in range(n):
                loads(await get(f"raw:{i % keys}"))
            return n / (time.perf_counter() - start)

        async def simple() -> float:
            get = plain_user.get_by_id
            start = time.perf_counter()
            for i in range(n):
                await get(i % keys)
            return n / (time.perf_counter() - start)

        await orm()
        await raw_side()
        o, r, s = [], [], []
        for _ in range(rounds):
            o.append(await orm())
            r.append(await raw_side())
            s.append(await simple())
        stats = backend.near_cache.stats()  # type: ignore[union-attr]
        out = {
            "near get_by_id ops/s": statistics.median(o),
            "raw GET+decode ops/s": statistics.median(r),
            "speedup": statistics.median(o) / statistics.median(r),
            "hit rate": stats.hits / max(1, stats.hits + stats.misses),
        }
        out["SimpleBackend get_by_id ops/s (no near cache)"] = statistics.median(s)
        out["near / SimpleBackend"] = statistics.median(o) / statistics.median(s)
        return out
    finally:
        await backend.clear()
        await backend.close()
        await raw.close()


async def invalidation_delay(servers: Servers, name: str, writes: int) -> dict[str, float]:
    """Seconds from the writer's call returning to the reader seeing the new value."""
    ns = "neardelay"
    reader = _backend(servers, name, ns, co.NearCache())
    writer = _backend(servers, name, ns, None)
    try:
        await _ready(reader)
        keys = [f"k{i}" for i in range(100)]
        await writer.set_many({k: b"0" for k in keys})
        await _settle(reader, len(keys))
        for k in keys:
            await reader.get(k)
        delays: list[float] = []
        for i in range(1, writes + 1):
            key = keys[i % len(keys)]
            value = str(i).encode()
            held = reader.near_cache._data  # type: ignore[union-attr]
            while True:  # held before the write, so that only an invalidation can show it
                await reader.get(key)
                if reader.full_key(key) in held:
                    break
                await asyncio.sleep(0)
            await writer.set(key, value)
            done = time.perf_counter()
            while await reader.get(key) != value:  # noqa: ASYNC110 - the measured poll
                await asyncio.sleep(0)  # let the invalidation in
            delays.append(time.perf_counter() - done)
        delays.sort()
        return {
            "median ms": statistics.median(delays) * 1000,
            "p99 ms": delays[int(len(delays) * 0.99) - 1] * 1000,
            "max ms": delays[-1] * 1000,
        }
    finally:
        await writer.clear()
        await reader.close()
        await writer.close()


async def read_mix(
    servers: Servers, name: str, ops: int, near: bool, keys: int = 10_000
) -> dict[str, float]:
    """95% reads (zipfian, s=1) over ``keys`` keys, 5% writes by another backend object."""
    ns = f"nearmix{int(near)}"
    reader = _backend(servers, name, ns, co.NearCache(max_entries=keys) if near else None)
    writer = _backend(servers, name, ns, None)
    rng = random.Random(12)
    cum = list(itertools.accumulate(1 / (i + 1) for i in range(keys)))
    names = [f"k{i}" for i in range(keys)]
    plan = [
        (rng.random() < 0.05, names[i]) for i in (rng.choices(range(keys), cum_weights=cum, k=ops))
    ]
    pad = b"x" * 100
    try:
        await _ready(reader)
        for start in range(0, keys, 1000):
            await writer.set_many({k: b"0:" + pad for k in names[start : start + 1000]})
        if near:
            await _settle(reader, keys)
        # The n-th invalidation of a key stands for its n-th write (one writer; Redis sends
        # a key's invalidations in order): a read that starts after the reader heard n of
        # them must return version n or later.
        heard: dict[str, int] = dict.fromkeys(names, 0)
        near_cache = reader.near_cache
        if near_cache is not None:
            original = near_cache._invalidate

            def counting(ks: Any) -> None:
                if ks is not None:
                    ks = list(ks)
                    for k in ks:
                        short = k[len(ns) + 1 :]
                        if short in heard:
                            heard[short] += 1
                original(ks)

            near_cache._invalidate = counting  # type: ignore[method-assign]
        version = dict.fromkeys(names, 0)
        stale = 0
        reads = 0
        start_t = time.perf_counter()
        for is_write, key in plan:
            if is_write:
                version[key] += 1
                await writer.set(key, b"%d:" % version[key] + pad)
            else:
                seen = heard[key]
                value = await reader.get(key)
                reads += 1
                assert value is not None
                if near_cache is not None and int(value.split(b":", 1)[0]) < seen:
                    stale += 1
        elapsed = time.perf_counter() - start_t
        out = {"ops/s": ops / elapsed, "stale reads": float(stale), "reads": float(reads)}
        if near_cache is not None:
            s = near_cache.stats()
            out["hit rate"] = s.hits / max(1, s.hits + s.misses)
        return out
    finally:
        await writer.clear()
        await reader.close()
        await writer.close()


def memory_per_entry(count: int = 20_000) -> dict[str, float]:
    """tracemalloc bytes per entry held (key, value bytes and bookkeeping)."""
    from acacheorm.backends.near import ENTRY_OVERHEAD

    user, _, _ = define_models(co.SimpleBackend(), "msgpack")
    value_len = len(user._schema.encode(user(**orm_row(1))))
    near = co.NearCache(max_entries=count + 1, max_bytes=None)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        key = f"app:user:{i}"
        near._store(key, b"x" * value_len, float("inf"))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per = (after - before) / count
    key_len = len("app:user:12345")
    return {
        "value bytes (a User row, msgpack)": value_len,
        "bytes per entry, measured": per,
        "of which beyond key and value payload": per - value_len - key_len,
        "accounted per entry (len(key)+len(value)+ENTRY_OVERHEAD)": key_len
        + value_len
        + ENTRY_OVERHEAD,
    }


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.near")
    parser.add_argument("--backends", default="memory,redis,redis-cluster")
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    args = parser.parse_args(argv)
    names = args.backends.split(",")
    n_get = 5_000 if args.quick else 20_000
    writes = 200 if args.quick else 1_000
    mix_ops = 20_000 if args.quick else 100_000
    async with Servers(names) as servers:
        for name in names:
            print(f"\n== {name}: hot get_by_id, near cache vs raw")
            for k, v in (await hot_get(servers, name, n_get, 5)).items():
                print(f"  {k:<48} {v:>14,.2f}")
        for name in [n for n in names if n != "memory"]:
            print(f"\n== {name}: invalidation delay over {writes} writes")
            for k, v in (await invalidation_delay(servers, name, writes)).items():
                print(f"  {k:<48} {v:>14,.3f}")
            print(f"\n== {name}: 95/5 zipfian mix over 10k keys, {mix_ops} ops")
            without = await read_mix(servers, name, mix_ops, near=False)
            with_near = await read_mix(servers, name, mix_ops, near=True)
            print(f"  {'without near cache ops/s':<48} {without['ops/s']:>14,.0f}")
            print(f"  {'with near cache ops/s':<48} {with_near['ops/s']:>14,.0f}")
            print(f"  {'speedup':<48} {with_near['ops/s'] / without['ops/s']:>14,.2f}")
            print(f"  {'near hit rate':<48} {with_near['hit rate']:>14,.3f}")
            stale = with_near["stale reads"]
            print(f"  {'stale reads (after an invalidation)':<48} {stale:>14,.0f}")
    print("\n== memory per cached entry")
    for k, v in memory_per_entry().items():
        print(f"  {k:<60} {v:>10,.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
