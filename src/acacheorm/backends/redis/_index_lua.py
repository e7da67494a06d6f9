"""Secondary indexes on Redis: `IndexedWrite` and `IndexRead` as Lua scripts.

Keys of one index bucket ``B`` (``IndexedWrite.bucket``, hash tag included, so on Cluster
every key of a bucket, and every row key tagged with it, is in one slot):

=====================  ==================================================================
``B:x``                sorted set: row key -> expiry (ms since the epoch) of the rows that
                       have one
``B:t``                hash: row key -> its entries (JSON), so writes and deletes replace
                       them without the client reading the row
``B:e:<field>:<val>``  sorted set: row key -> expiry: ``ZRANGEBYSCORE (now +inf`` lists the
                       live rows holding ``val``; ``ZCOUNT`` counts them exactly
``B:n:<field>``        sorted set: row key -> numeric value (ranges, ordering)
``B:l:<field>``        sorted set, score 0: ``value NUL row key`` (ranges of strings by
                       ``ZRANGEBYLEX``, ``startswith``)
``B:u:<field NUL val>`` string: the row key holding a unique value, expiring with the row
=====================  ==================================================================

A row write is one script in the row's slot (atomic on Cluster too): it checks the mode
(add / replace / compare-and-swap), the unique values, writes the row, replaces the row's
entries and reclaims the entries of a few expired rows (the ``B:x`` sweep; reads never
depend on it: they compare expiries with the server's clock). Range reads check each
candidate's expiry in ``B:x`` server-side.
"""

from __future__ import annotations

import math
from typing import Any

from ..._commands import KEEP_TTL, NOT_READ, IndexedWrite, IndexRead
from ..._exceptions import IntegrityError

# KEYS[r] the row keys (one slot). ARGV, 7 per row: bucket, mode, value, ttl ('K' keep,
# 'N' none, or PX), token (cas), the row's new entries (JSON: [[field, kind, value], ...]),
# the unique values (JSON list). Reply per row: 1 written, 0 not (mode), or
# {'U', unique value, holder}.
WRITE_LUA = """\
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function drop(b, k)
  local old = redis.call('HGET', b .. ':t', k)
  if old then
    local e = cjson.decode(old)
    for _, term in ipairs(e[1]) do
      local f, kind, v = term[1], term[2], term[3]
      if kind == 'eq' then
        redis.call('ZREM', b .. ':e:' .. f .. ':' .. v, k)
      elseif kind == 'num' then
        redis.call('ZREM', b .. ':n:' .. f, k)
      else
        redis.call('ZREM', b .. ':l:' .. f, v .. '\\0' .. k)
      end
    end
    for _, u in ipairs(e[2]) do
      local uk = b .. ':u:' .. u
      if redis.call('GET', uk) == k then redis.call('DEL', uk) end
    end
    redis.call('HDEL', b .. ':t', k)
    redis.call('ZREM', b .. ':x', k)
  end
end
local swept = {}
local function sweep(b)
  if swept[b] then return end
  swept[b] = true
  local stale = redis.call('ZRANGEBYSCORE', b .. ':x', '-inf', now, 'LIMIT', 0, 8)
  for _, k in ipairs(stale) do
    if redis.call('EXISTS', k) == 0 then drop(b, k) else redis.call('ZREM', b .. ':x', k) end
  end
end
local function write(key, a)
  local b, mode = ARGV[a + 1], ARGV[a + 2]
  sweep(b)
  local exists = mode ~= 'set' and redis.call('EXISTS', key) == 1
  if mode == 'delete' then
    drop(b, key)
    if exists then redis.call('DEL', key) return 1 end
    return 0
  end
  if mode == 'touch' then
    if not exists then return 0 end
    local ttl = ARGV[a + 4]
    local exp = 'inf'
    if ttl == 'N' then
      redis.call('PERSIST', key)
      redis.call('ZREM', b .. ':x', key)
    else
      redis.call('PEXPIRE', key, ttl)
      exp = now + tonumber(ttl)
      redis.call('ZADD', b .. ':x', exp, key)
    end
    local old = redis.call('HGET', b .. ':t', key)
    if old then
      local e = cjson.decode(old)
      for _, term in ipairs(e[1]) do
        if term[2] == 'eq' then
          redis.call('ZADD', b .. ':e:' .. term[1] .. ':' .. term[3], exp, key)
        end
      end
      for _, u in ipairs(e[2]) do
        if ttl == 'N' then
          redis.call('PERSIST', b .. ':u:' .. u)
        else
          redis.call('PEXPIRE', b .. ':u:' .. u, ttl)
        end
      end
    end
    return 1
  end
  if mode == 'add' and exists then return 0 end
  if (mode == 'replace' or mode == 'cas') and not exists then return 0 end
  if mode == 'cas' and redis.call('GET', key) ~= ARGV[a + 5] then return 0 end
  local uniques = {}
  if ARGV[a + 7] ~= '[]' then uniques = cjson.decode(ARGV[a + 7]) end
  for _, u in ipairs(uniques) do
    local holder = redis.call('GET', b .. ':u:' .. u)
    if holder and holder ~= key and redis.call('EXISTS', holder) == 1 then
      return {'U', u, holder}
    end
  end
  local ttl = ARGV[a + 4]
  if ttl == 'K' then
    redis.call('SET', key, ARGV[a + 3], 'KEEPTTL')
  elseif ttl == 'N' then
    redis.call('SET', key, ARGV[a + 3])
  else
    redis.call('SET', key, ARGV[a + 3], 'PX', ttl)
  end
  drop(b, key)
  local pttl = -1
  if ttl ~= 'N' then pttl = redis.call('PTTL', key) end
  local exp = 'inf'
  if pttl >= 0 then
    exp = now + pttl
    redis.call('ZADD', b .. ':x', exp, key)
  end
  local terms = cjson.decode(ARGV[a + 6])
  for _, term in ipairs(terms) do
    local f, kind, v = term[1], term[2], term[3]
    if kind == 'eq' then
      redis.call('ZADD', b .. ':e:' .. f .. ':' .. v, exp, key)
    elseif kind == 'num' then
      redis.call('ZADD', b .. ':n:' .. f, v, key)
    else
      redis.call('ZADD', b .. ':l:' .. f, 0, v .. '\\0' .. key)
    end
  end
  for _, u in ipairs(uniques) do
    if pttl >= 0 then
      redis.call('SET', b .. ':u:' .. u, key, 'PX', pttl)
    else
      redis.call('SET', b .. ':u:' .. u, key)
    end
  end
  redis.call('HSET', b .. ':t', key, '[' .. ARGV[a + 6] .. ',' .. ARGV[a + 7] .. ']')
  return 1
end
local out = {}
for r = 1, #KEYS do
  out[r] = write(KEYS[r], (r - 1) * 7)
end
return out
"""

# KEYS[1] the bucket. ARGV: 1 op, 2 field, 3 count_only ('1'/'0'), 4 rows (how many of the
# first rows listed come with their value), then for 'eq' the values; for 'range'/'prefix':
# 5 kind, 6 lo, 7 hi (Redis range syntax), 8 desc, 9 offset, 10 count (-1: all).
# Replies: a count, or [keys, values (empty for 'eq'), the rows of the first `rows` keys].
READ_LUA = """\
local b, op, field, count_only = KEYS[1], ARGV[1], ARGV[2], ARGV[3] == '1'
local cap = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ks, vs = {}, {}
-- The reply: {keys, values, rows}: the selected keys, their values (empty for 'eq') and the
-- rows of the first `cap` keys, read by MGET (one call per 1000 keys, not a GET per row).
local function reply()
  local m = math.min(cap, #ks)
  local rows = {}
  if m > 0 and m <= 1000 then
    rows = redis.call('MGET', unpack(ks, 1, m))
  else
    for s = 1, m, 1000 do
      local got = redis.call('MGET', unpack(ks, s, math.min(s + 999, m)))
      for i = 1, #got do rows[s + i - 1] = got[i] end
    end
  end
  return {ks, vs, rows}
end
if op == 'eq' then
  local total = 0
  for i = 5, #ARGV do
    local k = b .. ':e:' .. field .. ':' .. ARGV[i]
    if count_only then
      total = total + redis.call('ZCOUNT', k, '(' .. now, '+inf')
    else
      local got = redis.call('ZRANGEBYSCORE', k, '(' .. now, '+inf')
      if #ks == 0 then
        ks = got
      else
        for _, m in ipairs(got) do ks[#ks + 1] = m end
      end
    end
  end
  if count_only then return total end
  return reply()
end
local kind, lo, hi, desc = ARGV[5], ARGV[6], ARGV[7], ARGV[8] == '1'
local skip, left = tonumber(ARGV[9]), tonumber(ARGV[10])
local zkey, by = b .. ':n:' .. field, 'BYSCORE'
if kind == 'lex' then zkey, by = b .. ':l:' .. field, 'BYLEX' end
local a, z = lo, hi
if desc then a, z = hi, lo end
local xkey = b .. ':x'
local total, pos = 0, 0
while left ~= 0 do
  -- a page no longer than the members still wanted (each can be live), at most 256
  local want = 256
  if left > 0 and skip + left < want then want = skip + left end
  local args = {'ZRANGE', zkey, a, z, by}
  if desc then args[#args + 1] = 'REV' end
  args[#args + 1] = 'LIMIT'
  args[#args + 1] = pos
  args[#args + 1] = want
  if kind == 'num' then args[#args + 1] = 'WITHSCORES' end
  local got = redis.call(unpack(args))
  local step = kind == 'num' and 2 or 1
  if #got == 0 then break end
  local cand, cval = {}, {}
  for i = 1, #got, step do
    local m, v = got[i], got[i + 1]
    local k = m
    if kind == 'lex' then
      local cut = string.find(m, '\\0', 1, true)
      k, v = string.sub(m, cut + 1), string.sub(m, 1, cut - 1)
    end
    cand[#cand + 1] = k
    cval[#cval + 1] = v
  end
  -- the expiries of the page's rows in one call (false: no expiry)
  local exps = redis.call('ZMSCORE', xkey, unpack(cand))
  for i = 1, #cand do
    local exp = exps[i]
    if (not exp) or tonumber(exp) > now then
      if skip > 0 then
        skip = skip - 1
      else
        total = total + 1
        if not count_only then
          ks[#ks + 1] = cand[i]
          vs[#vs + 1] = cval[i]
        end
        if left > 0 then
          left = left - 1
          if left == 0 then break end
        end
      end
    end
  end
  pos = pos + #cand
  if #cand < want then break end
end
if count_only then return total end
return reply()
"""


#: In an `IndexRead` result with ``rows``: the row was not included (beyond ``rows``).
_NOT_READ = NOT_READ


def _num(v: float | None, open_: bool, low: bool) -> str:
    if v is None or (math.isinf(v) and (v < 0) == low):
        return "-inf" if low else "+inf"
    text = repr(float(v))
    return f"({text}" if open_ else text


def _lex(v: str | None, open_: bool, low: bool) -> bytes:
    if v is None:
        return b"-" if low else b"+"
    raw = v.encode()
    if low:
        # members are value NUL key: 'v' itself is excluded by (v NUL \xff
        return b"(" + raw + b"\x00\xff" if open_ else b"[" + raw
    return b"(" + raw if open_ else b"[" + raw + b"\x00\xff"


def write_args(cmd: IndexedWrite, prefix: str) -> list[Any]:
    """ARGV of `WRITE_LUA` for ``cmd``."""
    import json

    ttl = cmd.ttl
    mode: Any = "K" if ttl is KEEP_TTL else "N" if ttl is None else max(1, math.ceil(ttl * 1000))
    terms = [[t.field, t.kind, t.value] for t in cmd.terms]
    token = cmd.token if cmd.mode == "cas" else b""
    return [
        (prefix + cmd.bucket).encode(),
        cmd.mode,
        cmd.value,
        mode,
        token,
        json.dumps(terms),
        json.dumps(list(cmd.unique)),
    ]


def write_result(reply: Any) -> Any:
    if isinstance(reply, list):
        u = reply[1].decode() if isinstance(reply[1], bytes) else reply[1]
        holder = reply[2].decode() if isinstance(reply[2], bytes) else reply[2]
        err = IntegrityError(f"unique value taken by {holder!r}")
        err.unique = u  # type: ignore[attr-defined]
        return err
    return bool(reply)


def read_args(cmd: IndexRead) -> list[Any]:
    """ARGV of `READ_LUA` for ``cmd``."""
    head: list[Any] = [cmd.op, cmd.field, "1" if cmd.count_only else "0", cmd.rows]
    if cmd.op == "eq":
        return [*head, *cmd.values]
    if cmd.op == "prefix":
        p = cmd.values[0].encode()
        lo, hi, kind = b"[" + p, b"(" + p + b"\xff", "lex"
    elif cmd.kind == "lex":
        lo, hi, kind = _lex(cmd.lo, cmd.lo_open, True), _lex(cmd.hi, cmd.hi_open, False), "lex"
    else:
        lo = _num(cmd.lo, cmd.lo_open, True).encode()
        hi = _num(cmd.hi, cmd.hi_open, False).encode()
        kind = "num"
    count = -1 if cmd.limit is None else cmd.limit
    return [*head, kind, lo, hi, "1" if cmd.desc else "0", cmd.offset, count]


def read_result(cmd: IndexRead, cut: int) -> Any:
    """The reply converter of an `IndexRead` (``cut``: the namespace length to strip)."""

    def convert(reply: Any) -> Any:
        if cmd.count_only:
            return int(reply)
        raw_keys, raw_values, rows = reply
        keys = [k.decode()[cut:] for k in raw_keys]
        if cmd.op == "eq":
            values: list[Any] = [None] * len(keys)
        elif cmd.kind == "num" and cmd.op == "range":
            values = [float(v) for v in raw_values]
        else:
            values = [v.decode() for v in raw_values]
        if not cmd.rows:
            return list(zip(keys, values, strict=True))
        if len(rows) < len(keys):  # the keys beyond the first `rows`: their rows not read
            rows = [*rows, *[_NOT_READ] * (len(keys) - len(rows))]
        return list(zip(keys, values, rows, strict=True))

    return convert
