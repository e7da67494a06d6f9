"""Random writes (with TTLs, updates, deletes), then random filters compared with a brute-force
evaluation over what was written."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

import acacheorm as co
from acacheorm.backends.base import Backend
from tests.backends.test_conformance import eventually

NAMES = ["", "a", "ab", "Ab", "b", "ba", "abc", "ABC", "cab"]
SHORT_TTL = 0.2

Row = dict[str, Any]
Pred = Callable[[Row], bool]


def define(backend: Backend, indexed: bool = False) -> type[co.Model]:
    class Thing(co.Model):
        id = co.IntegerField(primary_key=True)
        name = co.StringField(index=indexed)
        n = co.IntegerField(null=True, index=indexed)
        flag = co.BooleanField(default=False, index=indexed)
        score = co.FloatField(default=0.0, index=indexed)
        Meta = type("Meta", (), {"backend": backend, "serializer": "msgpack", "namespace": "r"})

    return Thing


def random_row(rng: random.Random, pk: int) -> Row:
    return {
        "id": pk,
        "name": rng.choice(NAMES),
        "n": rng.choice([None, *range(6)]),
        "flag": rng.random() < 0.5,
        "score": rng.choice([0.0, 0.5, 1.5, -2.0]),
    }


def random_lookup(rng: random.Random) -> tuple[str, Any, Pred]:
    """A keyword lookup and the same condition evaluated by hand."""
    kind = rng.randrange(14)
    v = rng.randrange(6)
    s = rng.choice(["a", "b", "A", "ab", "C", ""])
    if kind == 0:
        return "n", v, lambda r: r["n"] == v
    if kind == 1:
        op = rng.choice(["lt", "lte", "gt", "gte"])
        cmp = {
            "lt": lambda x: x < v,
            "lte": lambda x: x <= v,
            "gt": lambda x: x > v,
            "gte": lambda x: x >= v,
        }[op]
        return f"n__{op}", v, lambda r: r["n"] is not None and cmp(r["n"])
    if kind == 2:
        lo, hi = sorted((v, rng.randrange(6)))
        return "n__range", (lo, hi), lambda r: r["n"] is not None and lo <= r["n"] <= hi
    if kind == 3:
        vals = rng.sample(range(6), rng.randrange(4))
        return "n__in", vals, lambda r: r["n"] in vals
    if kind == 4:
        b = rng.random() < 0.5
        return "n__isnull", b, lambda r: (r["n"] is None) == b
    if kind == 5:
        b = rng.random() < 0.5
        return "flag", b, lambda r: r["flag"] is b
    if kind == 6:
        return "name", s, lambda r: r["name"] == s
    if kind == 7:
        return "name__iexact", s, lambda r: r["name"].lower() == s.lower()
    if kind == 8:
        return "name__contains", s, lambda r: s in r["name"]
    if kind == 9:
        return "name__icontains", s, lambda r: s.lower() in r["name"].lower()
    if kind == 10:
        op = rng.choice(["startswith", "istartswith"])
        if op == "startswith":
            return "name__startswith", s, lambda r: r["name"].startswith(s)
        return "name__istartswith", s, lambda r: r["name"].lower().startswith(s.lower())
    if kind == 11:
        op = rng.choice(["endswith", "iendswith"])
        if op == "endswith":
            return "name__endswith", s, lambda r: r["name"].endswith(s)
        return "name__iendswith", s, lambda r: r["name"].lower().endswith(s.lower())
    if kind == 12:
        f = rng.choice([0.0, 0.5, 1.0])
        return "score__gte", f, lambda r: r["score"] >= f
    pks = rng.sample(range(40), 5)
    return "pk__in", pks, lambda r: r["id"] in pks


def brute_order(rows: list[Row], field: str | None, desc: bool) -> list[Row]:
    """None first ascending and last descending; ties in primary key order."""
    rows = sorted(rows, key=lambda r: r["id"])
    if field is None:
        return rows
    present = [r for r in rows if r[field] is not None]
    absent = [r for r in rows if r[field] is None]
    if desc:
        return sorted(present, key=lambda r: (-r[field], r["id"])) + absent
    return absent + sorted(present, key=lambda r: (r[field], r["id"]))


@pytest.mark.parametrize("indexed", [False, True], ids=["scan", "indexed"])
@pytest.mark.parametrize("seed", [1, 2])
async def test_random_writes_and_filters(
    backend: Backend, backend_name: str, seed: int, indexed: bool
) -> None:
    if backend_name == "memcached":
        pytest.skip("memcached cannot list keys")
    if indexed and not backend.capabilities.indexes:
        pytest.skip(f"{backend_name} keeps no secondary indexes")
    rng = random.Random(seed)
    Thing = define(backend, indexed)
    state: dict[int, Row] = {}
    expiring: set[int] = set()

    for _ in range(200):
        op = rng.random()
        pk = rng.randrange(40)
        if op < 0.5:
            row = random_row(rng, pk)
            short = rng.random() < 0.2
            ttl = SHORT_TTL if short else rng.choice([None, 600])
            await Thing.insert(ttl=ttl, **row)
            state[pk] = row
            (expiring.add if short else expiring.discard)(pk)
        elif op < 0.7:
            n = rng.choice([None, *range(6)])
            got = await Thing.update(id=pk, n=n)
            if got is None:
                state.pop(pk, None)  # never written, deleted, or expired meanwhile
                expiring.discard(pk)
            else:
                state[pk]["n"] = n
        elif op < 0.85:
            await Thing.delete(id=pk)
            state.pop(pk, None)
            expiring.discard(pk)
        else:
            key, value, pred = random_lookup(rng)
            name = rng.choice(NAMES)
            await Thing.filter(**{key: value}).update(name=name)
            for row in state.values():
                if pred(row):
                    row["name"] = name

    # Rows written with the short TTL are gone once a key written after all of them is.
    await backend.set("sentinel", b"x", ttl=SHORT_TTL)

    async def sentinel_gone() -> bool:
        return not await backend.has("sentinel")

    await eventually(sentinel_gone)
    alive = [row for pk, row in state.items() if pk not in expiring]

    def as_row(obj: Any) -> Row:
        return {"id": obj.id, "name": obj.name, "n": obj.n, "flag": obj.flag, "score": obj.score}

    assert sorted(map(as_row, await Thing.all()), key=lambda r: r["id"]) == sorted(
        alive, key=lambda r: r["id"]
    )
    for _ in range(100):
        lookups = [random_lookup(rng) for _ in range(rng.randrange(1, 3))]
        kwargs = {k: v for k, v, _ in lookups}
        # a repeated keyword keeps its last value: evaluate the same way
        preds = list({k: p for k, _, p in lookups}.values())
        exclude = rng.random() < 0.3
        if exclude:
            expected = [r for r in alive if not all(p(r) for p in preds)]
            query = Thing.exclude(**kwargs)
        else:
            expected = [r for r in alive if all(p(r) for p in preds)]
            query = Thing.filter(**kwargs)
        field = rng.choice([None, "n", "score", "id"])
        desc = rng.random() < 0.5
        if field is not None:
            query = query.order_by(("-" if desc else "") + field)
        expected = brute_order(expected, field, desc)
        if rng.random() < 0.3:
            offset, limit = rng.randrange(3), rng.randrange(1, 6)
            query = query.offset(offset).limit(limit)
            expected = expected[offset : offset + limit]
        got = [as_row(o) for o in await query]
        assert got == expected, (kwargs, exclude, field, desc)
        assert await query.count() == len(expected)
        assert await query.exists() is bool(expected)
