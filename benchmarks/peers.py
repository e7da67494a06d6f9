"""acacheorm against the other object mappers for Redis, on one standalone Redis started here
(loopback, free port), with the same 10,000 rows of an equivalent model, in one run:

- bulk write: the 10,000 rows (built beforehand) in the peer's bulk call, or its loop;
- bulk read: the 10,000 rows by id in the peer's bulk call, or a gather of single reads
  where it has none;
- single read: sequential reads of one row by id, one await after another.

Each contender is also timed against raw redis-py in the same run (msgpack + pipelined
``SET ... EX`` / ``MGET`` / ``GET``); ratio = contender time / raw time, below 1 is faster.

    pip install -e '.[peers]'
    python -m benchmarks.peers --rounds 3

A peer that is not installed, or an operation a peer cannot do on a plain Redis (one that
needs a Redis module), is skipped with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import enum
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Optional

from benchmarks import cases
from benchmarks.__main__ import RESULTS
from tests import servers as srv

TTL = cases.TTL
Op = Callable[[], Awaitable[int]]
OPERATIONS = ("bulk write", "bulk read", "single read")


class Gender(enum.IntEnum):
    UNKNOWN = 0
    MALE = 1
    FEMALE = 2


CREATED = datetime.datetime(2026, 11, 23, 12, tzinfo=datetime.UTC)


def fields(i: int) -> dict[str, Any]:
    """The row of every contender, in Python types (the raw side stores cases.raw_row)."""
    return {
        "name": f"user{i}",
        "height": 1.5 + (i % 50) / 100,
        "married": i % 2 == 0,
        "gender": Gender(i % 3),
        "email": f"u{i}@example.com",
        "phones": ["+1 555 0100"],
        "created_at": CREATED,
    }


class Contender:
    """One mapper: ``setup`` connects and builds the rows, then one coroutine per operation
    (each returns the number of rows it handled); an operation it cannot do is left out of
    ``ops`` and explained in ``notes``."""

    name = ""
    package = ""

    def __init__(self, url: str, rows: int, singles: int) -> None:
        self.url = url
        self.rows = rows
        self.singles = singles
        self.ops: dict[str, Op] = {}
        self.notes: dict[str, str] = {}

    async def setup(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class Raw(Contender):
    name = "redis-py (raw)"
    package = "redis"

    async def setup(self) -> None:
        self.raw = cases.RawRedis(self.url, False)
        self.dumps, self.loads = cases.codec("msgpack")
        self.ops = {
            "bulk write": self.write,
            "bulk read": self.read_many,
            "single read": self.read_one,
        }
        self.notes = {"bulk write": "pipeline of SET EX", "bulk read": "MGET"}
        await self.write()

    async def write(self) -> int:
        dumps = self.dumps
        await self.raw.set_many(
            [(f"raw:{i}", dumps(cases.raw_row(i))) for i in range(self.rows)], TTL
        )
        return self.rows

    async def read_many(self) -> int:
        loads = self.loads
        values = await self.raw.mget([f"raw:{i}" for i in range(self.rows)])
        rows = [dict(loads(v)) for v in values if v is not None]
        assert len(rows) == self.rows
        return self.rows

    async def read_one(self) -> int:
        get, loads = self.raw.get, self.loads
        for i in range(self.singles):
            dict(loads(await get(f"raw:{i}")))
        return self.singles

    async def close(self) -> None:
        await self.raw.close()


class Acacheorm(Contender):
    name = "acacheorm"
    package = "acacheorm"

    async def setup(self) -> None:
        import acacheorm as co
        from acacheorm.cli._demo import define_models

        self.backend = co.RedisBackend(self.url, namespace="peer-acacheorm")
        self.User, _, _ = define_models(self.backend, "msgpack")
        self.built = [self.User(**cases.orm_row(i)) for i in range(self.rows)]
        self.ops = {
            "bulk write": self.write,
            "bulk read": self.read_many,
            "single read": self.read_one,
        }
        self.notes = {
            "bulk write": "insert_many, ttl",
            "bulk read": "query_many",
            "single read": "get_by_id",
        }

    async def write(self) -> int:
        await self.User.insert_many(*self.built, ttl=TTL)
        return self.rows

    async def read_many(self) -> int:
        rows = await self.User.query_many(*range(self.rows))
        assert rows[-1] is not None
        return self.rows

    async def read_one(self) -> int:
        get = self.User.get_by_id
        for i in range(self.singles):
            await get(i)
        return self.singles

    async def close(self) -> None:
        await self.backend.clear()
        await self.backend.close()


class RedisOM(Contender):
    name = "redis-om"
    package = "redis-om"

    async def setup(self) -> None:
        import redis.asyncio as redis
        from aredis_om import HashModel

        # the raw side's pool: 100 connections, waiting for a free one
        pool = redis.BlockingConnectionPool.from_url(
            self.url, max_connections=100, decode_responses=True
        )
        db = redis.Redis(connection_pool=pool)
        self.db = db

        class User(HashModel, index=True):  # type: ignore[call-arg]
            name: str
            height: float
            married: bool
            gender: int
            email: str | None = None
            # a HashModel holds flat fields only: the list of phones is kept as one string
            phones: str = ""
            created_at: datetime.datetime

            class Meta:
                database = db
                global_key_prefix = "peer-redisom"

        self.User = User
        self.built = [
            User(pk=str(i), **{**fields(i), "gender": i % 3, "phones": "+1 555 0100"})
            for i in range(self.rows)
        ]
        self.ops = {
            "bulk write": self.write,
            "bulk read": self.read_many,
            "single read": self.read_one,
        }
        self.notes = {
            "bulk write": "HashModel.add (pipeline), no TTL; phones flattened to a string",
            "bulk read": "gather of get (find() needs the RediSearch module)",
            "single read": "get",
        }

    async def write(self) -> int:
        await self.User.add(self.built)
        return self.rows

    async def read_many(self) -> int:
        get = self.User.get
        rows = await asyncio.gather(*(get(str(i)) for i in range(self.rows)))
        assert rows[-1] is not None
        return self.rows

    async def read_one(self) -> int:
        get = self.User.get
        for i in range(self.singles):
            await get(str(i))
        return self.singles

    async def close(self) -> None:
        keys = [k async for k in self.db.scan_iter("peer-redisom*", count=1000)]
        for start in range(0, len(keys), 1000):
            await self.db.delete(*keys[start : start + 1000])
        await self.db.aclose()


class PydanticRedis(Contender):
    name = "pydantic-redis"
    package = "pydantic-redis"

    async def setup(self) -> None:
        from pydantic_redis.asyncio import Model, RedisConfig, Store

        port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        store = Store(
            name="peer-pydanticredis",
            redis_config=RedisConfig(host=srv.HOST, port=port, db=0),
            life_span_in_seconds=TTL,
        )
        self.store = store

        class User(Model):
            _primary_key_field: str = "id"
            id: int
            name: str
            height: float
            married: bool
            gender: Gender
            # pydantic-redis does not take ``str | None``
            email: Optional[str] = None  # noqa: UP045
            phones: list[str] = []
            created_at: datetime.datetime

        store.register_model(User)
        self.User = User
        self.built = [User(id=i, **fields(i)) for i in range(self.rows)]
        self.ops = {
            "bulk write": self.write,
            "bulk read": self.read_many,
            "single read": self.read_one,
        }
        self.notes = {
            "bulk write": "insert(list), life span",
            "bulk read": "select(ids=...)",
            "single read": "select(ids=[id]) (no get by id)",
        }

    async def write(self) -> int:
        await self.User.insert(self.built)
        return self.rows

    async def read_many(self) -> int:
        rows = await self.User.select(ids=list(range(self.rows)))
        assert len(rows) == self.rows
        return self.rows

    async def read_one(self) -> int:
        select = self.User.select
        for i in range(self.singles):
            await select(ids=[i])
        return self.singles

    async def close(self) -> None:
        client = self.store.redis_store
        await client.flushdb()  # this Redis serves this benchmark alone
        await client.aclose()


class Beanis(Contender):
    name = "beanis"
    package = "beanis"

    async def setup(self) -> None:
        import redis.asyncio as redis
        from beanis import Document, init_beanis

        self.client = redis.Redis.from_url(self.url, decode_responses=True)

        class User(Document):
            name: str
            height: float
            married: bool
            gender: Gender
            email: str | None = None
            phones: list[str] = []
            created_at: datetime.datetime

            class Settings:
                key_prefix = "peer-beanis"

        # beanis finds the class of a stored row again by module and name
        User.__name__ = User.__qualname__ = "BeanisUser"
        globals()["BeanisUser"] = User
        await init_beanis(database=self.client, document_models=[User])
        self.User = User
        self.built = [User(id=str(i), **fields(i)) for i in range(self.rows)]
        self.ops = {
            "bulk write": self.write,
            "bulk read": self.read_many,
            "single read": self.read_one,
        }
        self.notes = {
            "bulk write": "insert_many, ttl",
            "bulk read": "get_many",
            "single read": "get",
        }

    async def write(self) -> int:
        await self.User.insert_many(self.built, ttl=TTL)
        return self.rows

    async def read_many(self) -> int:
        rows = await self.User.get_many([str(i) for i in range(self.rows)])
        assert rows[-1] is not None
        return self.rows

    async def read_one(self) -> int:
        get = self.User.get
        for i in range(self.singles):
            await get(str(i))
        return self.singles

    async def close(self) -> None:
        await self.User.delete_all()
        await self.client.aclose()


class Distobjects(Contender):
    name = "distobjects"
    package = "distobjects"

    async def setup(self) -> None:
        import redis
        from distobjects import DObject, RedisBackend
        from distobjects.fields import TextField

        self.client = redis.Redis.from_url(self.url)
        store = RedisBackend(self.client, prefix="peer-distobjects:")

        class User(DObject):
            name = TextField()
            height = TextField()
            married = TextField()
            gender = TextField()
            email = TextField()
            phones = TextField()
            created_at = TextField()

            class Meta:
                backend = store

        self.User = User
        self.names = list(fields(0))
        self.values = [
            {
                **{k: str(v) for k, v in fields(i).items()},
                "gender": str(i % 3),
                "phones": "+1 555 0100",
                "created_at": CREATED.isoformat(),
            }
            for i in range(self.rows)
        ]
        self.ops = {
            "bulk write": self.write,
            "bulk read": self.read_many,
            "single read": self.read_one,
        }
        note = "synchronous client, one HSET/HGET round trip per field, text fields only"
        self.notes = {
            "bulk write": f"attribute sets ({note})",
            "bulk read": "attribute reads in a loop (no bulk read)",
            "single read": "reads the 7 attributes",
        }

    async def write(self) -> int:
        User = self.User
        for i, values in enumerate(self.values):
            obj = User(i)
            for k, v in values.items():
                setattr(obj, k, v)
        return self.rows

    def _read(self, i: int) -> dict[str, Any]:
        obj = self.User(i)
        return {k: getattr(obj, k) for k in self.names}

    async def read_many(self) -> int:
        rows = [self._read(i) for i in range(self.rows)]
        assert rows[-1]["name"] == f"user{self.rows - 1}"
        return self.rows

    async def read_one(self) -> int:
        for i in range(self.singles):
            self._read(i)
        return self.singles

    async def close(self) -> None:
        keys = list(self.client.scan_iter("peer-distobjects:*", count=1000))
        for start in range(0, len(keys), 1000):
            self.client.delete(*keys[start : start + 1000])
        self.client.close()


CONTENDERS: list[type[Contender]] = [Raw, Acacheorm, RedisOM, PydanticRedis, Beanis, Distobjects]


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


async def timed(op: Op) -> float:
    """rows/s of one call."""
    start = time.perf_counter()
    count = await op()
    return count / (time.perf_counter() - start)


async def run_contender(contender: Contender, raw: Contender, rounds: int) -> list[dict[str, Any]]:
    """Each operation of ``contender`` against the raw client, alternating rounds so that drift
    hits both alike; bulk write comes first so that the reads find the rows."""
    out: list[dict[str, Any]] = []
    for op in OPERATIONS:
        row: dict[str, Any] = {"contender": contender.name, "operation": op}
        fn = contender.ops.get(op)
        if fn is None:
            row["note"] = contender.notes.get(op, "not supported")
            out.append(row)
            continue
        try:
            await fn()  # warm-up (and, for bulk write, the rows the reads need)
            await raw.ops[op]()
            mine: list[float] = []
            theirs: list[float] = []
            for _ in range(rounds):
                mine.append(await timed(fn))
                theirs.append(await timed(raw.ops[op]))
        except Exception as e:
            row["note"] = f"failed: {type(e).__name__}: {e}"[:160]
            out.append(row)
            continue
        row["ops"] = statistics.median(mine)
        row["raw_ops"] = statistics.median(theirs)
        row["ratio"] = row["raw_ops"] / row["ops"]
        row["note"] = contender.notes.get(op, "")
        out.append(row)
    return out


def print_row(r: dict[str, Any]) -> None:
    if "ratio" not in r:
        print(f"{r['contender']:<16} {r['operation']:<12} {'skipped':>12}  {r['note']}", flush=True)
        return
    print(
        f"{r['contender']:<16} {r['operation']:<12} {r['ops']:>12,.0f} {r['raw_ops']:>12,.0f} "
        f"{r['ratio']:>7.2f}  {r['note']}",
        flush=True,
    )


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--singles", type=int, default=2_000, help="sequential single reads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated contender names")
    args = parser.parse_args(argv)
    print(f"{'contender':<16} {'operation':<12} {'rows/s':>12} {'raw rows/s':>12} {'ratio':>7}")
    results: list[dict[str, Any]] = []
    versions: dict[str, str] = {}
    server = srv.RedisServer()
    server.start()
    try:
        raw = Raw(server.url, args.rows, args.singles)
        await raw.setup()
        try:
            for kind in CONTENDERS[1:]:
                if args.only and kind.name not in args.only.split(","):
                    continue
                versions[kind.name] = version(kind.package)
                contender = kind(server.url, args.rows, args.singles)
                try:
                    await contender.setup()
                except ImportError as e:
                    print(f"{kind.name:<16} {'':<12} {'skipped':>12}  not installed ({e.name})")
                    results.append({"contender": kind.name, "note": "not installed"})
                    continue
                try:
                    for r in await run_contender(contender, raw, args.rounds):
                        print_row(r)
                        results.append(r)
                finally:
                    await contender.close()
        finally:
            await raw.close()
    finally:
        server.stop()
    versions["redis-py"] = version("redis")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"peers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "python": sys.version,
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "rows": args.rows,
                "singles": args.singles,
                "rounds": args.rounds,
                "versions": versions,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"\nversions: {versions}\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
