"""Secondary indexes on Redis: `IndexedWrite` and `IndexRead` as Lua scripts.

Keys of one index bucket ``B`` (``IndexedWrite.bucket``, hash tag included, so on Cluster
every key of a bucket, and every row key tagged with it, is in one slot):

=====================  ==================================================================
``B:x``                sorted set: row key -> expiry (ms since the epoch) of the rows that
                       have one
``B:t``                hash: row key -> its entries (msgpack: expiry, entries, unique
                       values), so writes and deletes replace them without the client
                       reading the row (JSON lists of an earlier version are read too)
``B:e:<field>:<val>``  sorted set: row key -> expiry: ``ZRANGEBYSCORE (now +inf`` lists the
                       live rows holding ``val``; ``ZCOUNT`` counts them exactly. Not kept
                       for the values a numeric field's ``B:n`` set finds exactly (integers
                       below 2**53, finite floats: see `num_route`)
``B:n:<field>``        sorted set: row key -> numeric value (ranges, ordering, equality)
``B:l:<field>``        sorted set, score 0: ``value NUL row key`` (ranges of strings by
                       ``ZRANGEBYLEX``, ``startswith``)
``B:u:<field NUL val>`` string: the row key holding a unique value, expiring with the row
=====================  ==================================================================

The rows of a batch in one slot are written by one script call (atomic on Cluster too,
all-or-nothing: see `WRITE_LUA`); it also reclaims the entries of a few expired rows (the
``B:x`` sweep), and so does each index read. Reads never depend on the sweep: they compare
expiries with the server's clock. Range reads, and equality reads answered by ``B:n``, check
each candidate's expiry in ``B:x`` server-side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import repeat
from typing import Any

from ..._commands import KEEP_TTL, NOT_READ, IndexedWrite, IndexRead
from ..._exceptions import IntegrityError

# Both scripts read the stored entry lists (``B:t``) with this function (a script cannot
# call another's).
_ENTRY_LIST_LUA = """\
-- A row's stored entry list as {expiry, nterms, terms..., nuniq, uniques...}: msgpack, or a
-- JSON list written by an earlier version.
local function entry_list(blob)
  if string.sub(blob, 1, 1) == '[' then
    local e = cjson.decode(blob)
    local l = {-1, #e[1]}
    for _, term in ipairs(e[1]) do
      l[#l + 1] = term[2]
      l[#l + 1] = term[1]
      l[#l + 1] = tostring(term[3])
    end
    l[#l + 1] = #e[2]
    for _, u in ipairs(e[2]) do l[#l + 1] = u end
    return l
  end
  return {cmsgpack.unpack(blob)}
end
"""

# KEYS: the row keys (one slot). ARGV: the number of buckets, their names, '1' if a row has
# unique values (else '0'), then runs of rows sharing bucket (1-based), mode and ttl ('K'
# keep, 'N' none, or PX): the number of rows of the run, bucket, mode, ttl, then per row:
# value, token (cas only), and its entries as one msgpack string of strs: the number of
# entries, each as (kind, field, value), the number of unique values, the values (what
# ``B:t`` stores after the expiry: the script stores it as it came, and unpacks it only
# when it needs the entries). Reply per row: 1 written, 0 not (mode), or {'U', unique
# value, holder}.
#
# Three phases. Reads: the bucket's expired entries (the sweep), every row's stored entries
# (one HMGET), existence, tokens, unique holders. Then the rows are applied in order to a
# model of the keys (duplicates, unique values claimed by an earlier row of the call), and
# the net changes are grouped by key: one ZADD/ZREM per index key with all its members, one
# HSET of the entry lists, one ZADD of the expiry set, one MSET of the rows without TTL.
# Every key the writes touch is type-checked before the first write, which is a row SET:
# Redis refuses a script's first write under maxmemory and never a later one, so a call is
# refused whole or runs whole.
#
# The common call, fresh rows (one bucket, mode 'set', no TTL, no unique values, no key
# twice: `_fresh_argv`), comes in a layout of its own, the index entries already grouped by
# index key: when no row has stored entries and the bucket has no expired row to reclaim,
# it is one MSET, a ZADD per index key and one HSET after the same checks (about 40% fewer
# server instructions than the three phases); otherwise its rows take the three phases.
WRITE_LUA = (
    _ENTRY_LIST_LUA
    + """\
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local unpack, tonumber, type = unpack, tonumber, type
local function fail(msg) error({err = msg}) end
-- a key in an error message, NUL bytes shown as \\0 (a NUL would end the message)
local function show(k) return (string.gsub(k, '%z', '\\\\0')) end
-- A read whose error would otherwise abort the script with a message naming no key.
local function read(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    fail(r.err .. ' (' .. cmd .. ' ' .. show(key) .. '); nothing written')
  end
  return r
end
-- The writes. The first one is a row SET where there is one: under maxmemory it is
-- refused before anything changed (Redis checks memory at a script's first write only).
local first = true
local function write(...)
  if first then  -- refused under maxmemory only if nothing was written before it
    first = false
    local r = redis.pcall(...)
    if type(r) == 'table' and r.err then
      local e = r.err
      if string.sub(e, 1, 4) == 'OOM ' then e = 'OOM out of memory: ' .. string.sub(e, 5) end
      fail(e .. ' (index write); nothing written')
    end
    return r
  end
  return redis.call(...)
end
-- A zset key in a write's way: the call fails naming it, before any write.
local function zset_only(key)
  local ty = redis.call('TYPE', key)['ok']
  if ty ~= 'zset' and ty ~= 'none' then
    fail('WRONGTYPE index key ' .. show(key) .. ' holds a ' .. ty
      .. ', not a sorted set; nothing written')
  end
end
local n = #KEYS
local mpunpack = cmsgpack.unpack
local nb, B, anyu
-- per row: bucket, mode, ttl, value, token, entries (msgpack), entries (list), nterms
local rb, rmode, rttl, rval, rtok, rblob, rl, rnt = {}, {}, {}, {}, {}, {}, {}, {}
if ARGV[1] == 'F' then
  -- The fresh layout, for rows of one bucket written with mode 'set', no TTL, no unique
  -- values, no key twice. ARGV: 'F', bucket, each row's value, each row's stored entry
  -- list (expiry -1, then its entries as above), then per index key: its suffix (after
  -- the bucket), then 'R' and one score per row (the members are the row keys, in order),
  -- or the number of ZADD arguments and the arguments (score, member). When no row has
  -- stored entries and the bucket has no expired row to reclaim, the call is an MSET of
  -- the rows, a ZADD per index key and an HSET of the entry lists, after the checks the
  -- general path makes (and the same writes as it makes for such rows); else the rows go
  -- the general way.
  local b = ARGV[2]
  local hs = 3 + n  -- where the entry lists start
  local zs = hs + n  -- where the index keys start
  local na = #ARGV
  local fresh = #read('ZRANGEBYSCORE', b .. ':x', '-inf', now, 'LIMIT', 0, 1) == 0
  for s = 1, fresh and n or 0, 4000 do
    local got = read('HMGET', b .. ':t', unpack(KEYS, s, math.min(n, s + 3999)))
    for i = 1, #got do
      if got[i] then fresh = false; break end
    end
    if not fresh then break end
  end
  if fresh then
    local a = zs
    while a <= na do
      zset_only(b .. ARGV[a])
      local c = ARGV[a + 1]
      if c == 'R' then a = a + 2 + n else a = a + 2 + tonumber(c) end
    end
    -- cmd [key] then, for each row, its key and ARGV[s + r] (at most 2000 rows per
    -- command; l is reused, its first m places are the arguments)
    local l = {}
    local function pairs_of(cmd, key, s)
      for i = 1, n, 2000 do
        local j = math.min(i + 1999, n)
        local m = 0
        for r = i, j do
          l[m + 1] = KEYS[r]
          l[m + 2] = ARGV[s + r]
          m = m + 2
        end
        if key then write(cmd, key, unpack(l, 1, m)) else write(cmd, unpack(l, 1, m)) end
      end
    end
    pairs_of('MSET', nil, 2)
    a = zs
    while a <= na do
      local c = ARGV[a + 1]
      if c == 'R' then
        -- ZADD wants score, member: the scores in the odd places
        local key = b .. ARGV[a]
        for i = 1, n, 2000 do
          local j = math.min(i + 1999, n)
          local m = 0
          for r = i, j do
            l[m + 1] = ARGV[a + 1 + r]
            l[m + 2] = KEYS[r]
            m = m + 2
          end
          write('ZADD', key, unpack(l, 1, m))
        end
        a = a + 2 + n
      else
        c = tonumber(c)
        for i = a + 2, a + 1 + c, 4000 do
          write('ZADD', b .. ARGV[a], unpack(ARGV, i, math.min(i + 3999, a + 1 + c)))
        end
        a = a + 2 + c
      end
    end
    pairs_of('HSET', b .. ':t', hs - 1)
    local out = {}
    for r = 1, n do out[r] = 1 end
    return out
  end
  nb, B, anyu = 1, {b}, false
  for r = 1, n do
    rb[r], rmode[r], rttl[r], rval[r] = b, 'set', 'N', ARGV[2 + r]
    rblob[r] = string.sub(ARGV[hs - 1 + r], 2)
  end
else
-- ARGV: nb, bucket names, any unique ('1'/'0'), then runs of rows sharing bucket, mode and
-- ttl: the number of rows, bucket index, mode, ttl, then per row: value, token (cas only),
-- entries (msgpack: nterms, nterms x (kind, field, value), nuniq, uniques).
nb = tonumber(ARGV[1])
B = {}
for i = 1, nb do B[i] = ARGV[1 + i] end
-- whether any row of the call has unique values
anyu = ARGV[nb + 2] == '1'
do
  local a, r = nb + 3, 0
  while r < n do
    local cnt, b, mode, tt = tonumber(ARGV[a]), B[tonumber(ARGV[a + 1])], ARGV[a + 2], ARGV[a + 3]
    a = a + 4
    local cas = mode == 'cas'
    for _ = 1, cnt do
      r = r + 1
      rb[r], rmode[r], rttl[r], rval[r] = b, mode, tt, ARGV[a]
      if cas then rtok[r] = ARGV[a + 1]; a = a + 1 end
      rblob[r] = ARGV[a + 1]
      a = a + 2
    end
  end
end
end
-- Row r's entries as a list (unpacked once, when first needed).
local function row_entries(r)
  local l = rl[r]
  if not l then
    l = {mpunpack(rblob[r])}
    rl[r], rnt[r] = l, tonumber(l[1])
  end
  return l
end
-- Entries: a row number r (row r's new entries) or a stored list {expiry, nterms, terms...,
-- nuniq, uniques...}; span(e) gives the list, its terms and its uniques.
local function span(e)
  if type(e) == 'number' then
    local l = row_entries(e)
    local nt = rnt[e]
    return l, 2, 1 + 3 * nt, 3 + 3 * nt, #l
  end
  local nt = tonumber(e[2])
  return e, 3, 2 + 3 * nt, 4 + 3 * nt, #e
end
-- Every key of the call and its bucket, in first-seen order: the rows, then the rows of
-- the sweep (expired rows whose entries are reclaimed).
local bk, order, norder = {}, {}, 0
for r = 1, n do
  local k = KEYS[r]
  if not bk[k] then bk[k] = rb[r]; norder = norder + 1; order[norder] = k end
end
local purge = {}
do
  for i = 1, nb do
    local b = B[i]
    local stale = read('ZRANGEBYSCORE', b .. ':x', '-inf', now, 'LIMIT', 0, 8)
    for _, k in ipairs(stale) do
      if not bk[k] then
        bk[k] = b
        order[#order + 1] = k
        purge[#purge + 1] = k
      end
    end
  end
end
-- The entries each key holds now (nil: none).
local old = {}
do
  local per = {}
  if nb == 1 then  -- every key is the bucket's (the rows' and the sweep's)
    per[B[1]] = order
  else
    for _, k in ipairs(order) do
      local b = bk[k]
      local l = per[b]
      if not l then l = {}; per[b] = l end
      l[#l + 1] = k
    end
  end
  for b, l in pairs(per) do
    for s = 1, #l, 4000 do
      local e = math.min(s + 3999, #l)
      local got = read('HMGET', b .. ':t', unpack(l, s, e))
      for i = 1, #got do
        local g = got[i]
        if g then old[l[s + i - 1]] = entry_list(g) end
      end
    end
  end
end
-- Apply the rows in order to a model of the keys (nothing is written until every check
-- has passed): ex exists, cur value, ttl ('N', a PX, nil: the server's), ents entries.
local ex, cur, ttl, ents, rowop, touched = {}, {}, {}, {}, {}, {}
local function exists(k)
  local e = ex[k]
  if e == nil then e = redis.call('EXISTS', k) == 1; ex[k] = e end
  return e
end
local uh, udirty, ulist = {}, {}, {}
local function holder(uk)
  local h = uh[uk]
  if h == nil then h = read('GET', uk) or false; uh[uk] = h end
  return h
end
local function dirty(uk)
  if not udirty[uk] then udirty[uk] = true; ulist[#ulist + 1] = uk end
end
local function release(k)
  local e = ents[k]
  if e == nil then e = old[k] end
  if not e then return end
  local l, _, _, ulo, uhi = span(e)
  if ulo > uhi then return end
  local b = bk[k]
  for i = ulo, uhi do
    local uk = b .. ':u:' .. l[i]
    if holder(uk) == k then uh[uk] = false; dirty(uk) end
  end
end
local purged = {}
for _, k in ipairs(purge) do
  if exists(k) then  -- alive: only its expiry entry is stale
    touched[k] = true
  else
    release(k)
    ents[k], purged[k] = false, true
  end
end
local out = {}
for r = 1, n do
  local k, mode = KEYS[r], rmode[r]
  local res = 1
  if mode == 'delete' then
    if not exists(k) then res = 0 end
    release(k)
    ents[k], ex[k], cur[k], ttl[k], rowop[k] = false, false, false, 'N', 'del'
  elseif mode == 'touch' then
    if not exists(k) then
      res = 0
    else
      local tt = rttl[r]
      if tt == 'N' then ttl[k] = 'N' else ttl[k] = tonumber(tt) end
      if rowop[k] == nil then rowop[k] = 'ttl' end
      touched[k] = true
    end
  else
    if mode == 'set' then
      -- nothing to check
    elseif mode == 'add' then
      if exists(k) then res = 0 end
    elseif not exists(k) then  -- replace, cas
      res = 0
    elseif mode == 'cas' then
      local v = cur[k]
      if v == nil then v = read('GET', k) end
      if v ~= rtok[r] then res = 0 end
    end
    local rl_, ulo, uhi = nil, 1, 0
    if anyu then
      rl_ = row_entries(r)
      ulo, uhi = 3 + 3 * rnt[r], #rl_
    end
    if res == 1 and ulo <= uhi then
      local b = rb[r]
      for j = ulo, uhi do
        local h = holder(b .. ':u:' .. rl_[j])
        if h and h ~= k then
          local live = ex[h]
          if live == nil then live = exists(h) end
          if live then res = {'U', rl_[j], h}; break end
        end
      end
    end
    if res == 1 then
      local tt = rttl[r]
      if tt == 'N' then ttl[k] = 'N' elseif tt ~= 'K' then ttl[k] = tonumber(tt) end
      if ents[k] ~= nil or old[k] then release(k) end
      ents[k] = r
      if ulo <= uhi then
        local b = rb[r]
        for j = ulo, uhi do
          local uk = b .. ':u:' .. rl_[j]
          holder(uk)
          uh[uk] = k
          dirty(uk)
        end
      end
      ex[k], cur[k], rowop[k] = true, rval[r], 'set'
    end
  end
  out[r] = res
end
-- The expiry (ms since the epoch, -1: none) of a key with entries.
local expms = {}
local function exp_of(k)
  local e = expms[k]
  if e then return e end
  local tt = ttl[k]
  if tt == 'N' then
    e = -1
  elseif tt == nil then
    local p = redis.call('PTTL', k)
    if p >= 0 then e = now + p else e = -1 end
  else
    e = now + tt
  end
  expms[k] = e
  return e
end
-- The net index changes, grouped by index key; every key checked before the first write.
local zrem, zadd, zkeys = {}, {}, {}
local names = {}  -- bucket -> kind -> field -> key of an ordered index
local function zk(key)
  if not zrem[key] then zrem[key] = {}; zadd[key] = {}; zkeys[#zkeys + 1] = key end
end
local function ordered_key(b, kind, fld)
  local nb_ = names[b]
  if not nb_ then nb_ = {num = {}, lex = {}}; names[b] = nb_ end
  local key = nb_[kind][fld]
  if not key then
    if kind == 'num' then key = b .. ':n:' .. fld else key = b .. ':l:' .. fld end
    nb_[kind][fld] = key
    zk(key)
  end
  return key
end
local hset, hdel, xadd, xrem = {}, {}, {}, {}
local function push(t, b, ...)
  local l = t[b]
  if not l then l = {}; t[b] = l end
  for i = 1, select('#', ...) do l[#l + 1] = select(i, ...) end
end
local function same(e0, e1)
  local l0, t0, _, _, u0 = span(e0)
  local l1, t1, _, _, u1 = span(e1)
  if u1 - t1 ~= u0 - t0 then return false end
  for i = 0, u1 - t1 do if l0[t0 + i] ~= l1[t1 + i] then return false end end
  return true
end
-- the msgpack of an expiry, by expiry
local pexp = {}
local numkeys = {}  -- bucket -> field -> B:n:<field>
for _, k in ipairs(order) do
  local e1 = ents[k]
  local e0 = old[k]
  if not e0 and type(e1) == 'number' and not touched[k] and not purged[k] then
    -- the common case, a row without entries before: its entries added, its list stored
    local b = bk[k]
    local exp = -1
    if ttl[k] ~= 'N' then exp = exp_of(k) end
    local l = {mpunpack(rblob[e1])}  -- needed here only
    local score = exp
    if exp < 0 then score = 'inf' end
    local nk = numkeys[b]
    if not nk then nk = {}; numkeys[b] = nk end
    for i = 2, 1 + 3 * tonumber(l[1]), 3 do
      local kind, fld, v = l[i], l[i + 1], l[i + 2]
      local key, s, m
      if kind == 'num' then
        key = nk[fld]
        if not key then key = ordered_key(b, kind, fld); nk[fld] = key end
        s, m = v, k
      elseif kind == 'eq' then
        key, s, m = b .. ':e:' .. fld .. ':' .. v, score, k
        zk(key)
      else
        key, s, m = ordered_key(b, kind, fld), 0, v .. '\0' .. k
      end
      local z = zadd[key]
      local zn = #z
      z[zn + 1] = s
      z[zn + 2] = m
    end
    local hs = hset[b]
    if not hs then hs = {}; hset[b] = hs end
    local p = pexp[exp]
    if not p then p = cmsgpack.pack(exp); pexp[exp] = p end
    local hn = #hs
    hs[hn + 1] = k
    hs[hn + 2] = p .. rblob[e1]
    if exp >= 0 then push(xadd, b, exp, k) end
  elseif e1 ~= nil or touched[k] then
    if e1 == nil then e1 = e0 end
    local b = bk[k]
    local exp = -1
    if e1 then exp = exp_of(k) end
    if not (e0 and e1 and tonumber(e0[1]) == exp and same(e0, e1)) then
      local have, had = nil, nil
      local kept = e0 and tonumber(e0[1]) == exp
      if e0 then
        local l, lo, hi = span(e0)
        had = {}
        for i = lo, hi, 3 do had[l[i] .. '\\0' .. l[i + 1] .. '\\0' .. l[i + 2]] = true end
        if e1 then
          have = {}
          local l, lo, hi = span(e1)
          for i = lo, hi, 3 do have[l[i] .. '\\0' .. l[i + 1] .. '\\0' .. l[i + 2]] = true end
        end
        for i = lo, hi, 3 do
          local kind, fld, v = l[i], l[i + 1], l[i + 2]
          if not (have and have[kind .. '\\0' .. fld .. '\\0' .. v]) then
            local key, m
            if kind == 'eq' then key, m = b .. ':e:' .. fld .. ':' .. v, k; zk(key)
            elseif kind == 'num' then key, m = ordered_key(b, kind, fld), k
            else key, m = ordered_key(b, kind, fld), v .. '\\0' .. k end
            local z = zrem[key]
            z[#z + 1] = m
          end
        end
      end
      if e1 then
        local l, lo, hi, ulo, uhi = span(e1)
        local score = exp
        if exp < 0 then score = 'inf' end
        for i = lo, hi, 3 do
          local kind, fld, v = l[i], l[i + 1], l[i + 2]
          -- an entry the row had already: ordered ones stay, equality ones unless their
          -- score (the expiry) moved
          if not (had and had[kind .. '\\0' .. fld .. '\\0' .. v] and (kept or kind ~= 'eq')) then
            local key, s, m
            if kind == 'eq' then
              key, s, m = b .. ':e:' .. fld .. ':' .. v, score, k
              zk(key)
            elseif kind == 'num' then
              key, s, m = ordered_key(b, kind, fld), v, k
            else
              key, s, m = ordered_key(b, kind, fld), 0, v .. '\\0' .. k
            end
            local z = zadd[key]
            z[#z + 1] = s
            z[#z + 1] = m
          end
        end
        if touched[k] then
          for i = ulo, uhi do
            local uk = b .. ':u:' .. l[i]
            holder(uk)
            dirty(uk)
          end
        end
        -- stored as expiry, nterms, terms..., nuniq, uniques...
        local hs = hset[b]
        if not hs then hs = {}; hset[b] = hs end
        hs[#hs + 1] = k
        if type(e1) == 'number' then
          hs[#hs + 1] = cmsgpack.pack(exp) .. rblob[e1]
        else
          hs[#hs + 1] = cmsgpack.pack(exp, unpack(l, lo - 1, uhi))
        end
      elseif e0 then
        push(hdel, b, k)
      end
      if exp >= 0 then
        push(xadd, b, exp, k)
      elseif e0 or purged[k] then
        push(xrem, b, k)
      end
    end
  end
end
for _, key in ipairs(zkeys) do zset_only(key) end
local uset = {}
for _, uk in ipairs(ulist) do
  local h = uh[uk]
  if h then uset[uk] = exp_of(h) end
end
-- Writes (`write`): the first one is a row SET where there is one.
local function chunks(cmd, key, l, step)
  for s = 1, #l, step do
    local e = math.min(s + step - 1, #l)
    if key then write(cmd, key, unpack(l, s, e)) else write(cmd, unpack(l, s, e)) end
  end
end
local mset, dels, ttls, nmset = {}, {}, {}, 0
for _, k in ipairs(order) do
  local op = rowop[k]
  if op == 'set' then
    local tt = ttl[k]
    if tt == 'N' then
      mset[nmset + 1] = k
      mset[nmset + 2] = cur[k]
      nmset = nmset + 2
    elseif tt == nil then
      write('SET', k, cur[k], 'KEEPTTL')
    else
      write('SET', k, cur[k], 'PX', tt)
    end
  elseif op == 'del' then
    dels[#dels + 1] = k
  elseif op == 'ttl' then
    ttls[#ttls + 1] = k
  end
end
chunks('MSET', nil, mset, 4000)
for _, k in ipairs(ttls) do
  if ttl[k] == 'N' then write('PERSIST', k) else write('PEXPIRE', k, ttl[k]) end
end
chunks('DEL', nil, dels, 4000)
for _, key in ipairs(zkeys) do
  if #zrem[key] > 0 then chunks('ZREM', key, zrem[key], 4000) end
end
for _, key in ipairs(zkeys) do
  if #zadd[key] > 0 then chunks('ZADD', key, zadd[key], 4000) end
end
for b, l in pairs(hset) do chunks('HSET', b .. ':t', l, 4000) end
for b, l in pairs(hdel) do chunks('HDEL', b .. ':t', l, 4000) end
for b, l in pairs(xrem) do chunks('ZREM', b .. ':x', l, 4000) end
for b, l in pairs(xadd) do chunks('ZADD', b .. ':x', l, 4000) end
for _, uk in ipairs(ulist) do
  local h = uh[uk]
  if h then
    local e = uset[uk]
    if e >= 0 then
      write('SET', uk, h, 'PX', math.max(1, e - now))
    else
      write('SET', uk, h)
    end
  else
    write('DEL', uk)
  end
end
return out
"""
)

# KEYS[1] the bucket. ARGV: 1 op, 2 field, 3 count_only ('1'/'0'), 4 rows (how many of the
# first rows listed come with their value), then for 'eq' the values; for 'range'/'prefix':
# 5 kind, 6 lo, 7 hi (Redis range syntax), 8 desc, 9 offset, 10 count (-1: all).
# Replies: a count, or [keys, values (empty for 'eq'), the rows of the first `rows` keys].
READ_LUA = (
    _ENTRY_LIST_LUA
    + """\
local b, op, field, count_only = KEYS[1], ARGV[1], ARGV[2], ARGV[3] == '1'
local cap = tonumber(ARGV[4])
-- the server's time in ms, asked only when an expiry is compared with it (`clock`): a
-- bucket none of whose rows expires needs none
local now = nil
local function clock()
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now
end
local timed = nil  -- whether any row of the bucket has an expiry (false: none has)
-- A step of the sweep, so that entries of expired rows go without further writes too:
-- the entries of at most 4 expired rows of the bucket are removed (reads never depend on
-- it). A row whose keys cannot all be changed (a key of another type) is left alone; its
-- expiry entry goes last, so no entry of it ever looks like a live row's.
do
  local xkey = b .. ':x'
  -- an empty expiry set (no row of the bucket expires) needs no sweep
  local xn = redis.pcall('ZCARD', xkey)
  local stale = {}
  if type(xn) == 'number' then
    if xn > 0 then
      timed = true
      stale = redis.pcall('ZRANGEBYSCORE', xkey, '-inf', clock(), 'LIMIT', 0, 4)
    else
      timed = false
    end
  end
  if type(stale) == 'table' and not stale.err then
    for _, k in ipairs(stale) do
      local p = redis.call('PTTL', k)
      if p >= 0 then  -- alive: only its expiry entry was stale
        redis.pcall('ZADD', xkey, now + p, k)
      elseif p == -1 then
        redis.pcall('ZREM', xkey, k)
      else
        local blob = redis.pcall('HGET', b .. ':t', k)
        local e = {}
        if type(blob) == 'string' then e = entry_list(blob) end
        local ok = type(blob) ~= 'table'
        local rem, uks = {}, {}
        if ok and #e > 0 then
          local nt = tonumber(e[2])
          for i = 3, 2 + 3 * nt, 3 do
            local kind, fld, v = e[i], e[i + 1], e[i + 2]
            local key, m = b .. ':e:' .. fld .. ':' .. v, k
            if kind == 'num' then key = b .. ':n:' .. fld
            elseif kind == 'lex' then key, m = b .. ':l:' .. fld, v .. '\0' .. k end
            local ty = redis.call('TYPE', key)['ok']
            if ty ~= 'zset' and ty ~= 'none' then ok = false end
            rem[#rem + 1] = {key, m}
          end
          for i = 4 + 3 * nt, #e do
            local uk = b .. ':u:' .. e[i]
            local h = redis.pcall('GET', uk)
            if type(h) == 'table' then ok = false elseif h == k then uks[#uks + 1] = uk end
          end
        end
        if ok then
          for _, r in ipairs(rem) do redis.call('ZREM', r[1], r[2]) end
          for _, uk in ipairs(uks) do redis.call('DEL', uk) end
          redis.call('HDEL', b .. ':t', k)
          redis.call('ZREM', xkey, k)
        end
      end
    end
  end
end
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
  for i = 5, #ARGV, 2 do
    local route, v = ARGV[i], ARGV[i + 1]
    if route == 'e' then
      local k = b .. ':e:' .. field .. ':' .. v
      if count_only then
        total = total + redis.call('ZCOUNT', k, '(' .. clock(), '+inf')
      else
        local got = redis.call('ZRANGEBYSCORE', k, '(' .. clock(), '+inf')
        if #ks == 0 then
          ks = got
        else
          for _, m in ipairs(got) do ks[#ks + 1] = m end
        end
      end
    else
      -- the "num" entries scored v, less the rows the expiry set says are gone
      local k = b .. ':n:' .. field
      if timed == nil then timed = redis.call('ZCARD', b .. ':x') > 0 end
      if count_only and not timed then
        total = total + redis.call('ZCOUNT', k, v, v)
      else
        local got = redis.call('ZRANGE', k, v, v, 'BYSCORE')
        if not timed and not count_only and #ks == 0 then
          -- no row of the bucket expires: every entry is a live row's
          ks = got
          total = #got
          got = {}
        end
        for s = 1, #got, 4000 do
          local e = math.min(s + 3999, #got)
          local exps = {}
          if timed then exps = redis.call('ZMSCORE', b .. ':x', unpack(got, s, e)); clock() end
          for j = s, e do
            local x = exps[j - s + 1]
            if (not x) or tonumber(x) > now then
              total = total + 1
              if not count_only then ks[#ks + 1] = got[j] end
            end
          end
        end
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
  -- the expiries of the page's rows in one call (false: no expiry); none to ask for when
  -- no row of the bucket expires
  local exps = {}
  if timed ~= false then
    exps = redis.call('ZMSCORE', xkey, unpack(cand))
    clock()
  end
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
)


#: In an `IndexRead` result with ``rows``: the row was not included (beyond ``rows``).
_NOT_READ = NOT_READ


def _num(v: float | None, open_: bool, low: bool) -> str:
    if v is None or (math.isinf(v) and (v < 0) == low):
        return "-inf" if low else "+inf"
    text = repr(float(v))
    return f"({text}" if open_ else text


def lex_bytes(v: str) -> bytes:
    """A string value as it is kept in "lex" entries (``value NUL key``): its UTF-8 with
    0x01 written 0x01 0x02 and NUL written 0x01 0x01. The escape keeps the byte order of the
    values (which is Python's order of the strings) and leaves the separator the first NUL
    of an entry, so a value holding NUL neither cuts its entry short nor sorts among the
    longer values it prefixes."""
    raw = v.encode("utf-8", "surrogatepass")
    if b"\x00" in raw or b"\x01" in raw:
        raw = raw.replace(b"\x01", b"\x01\x02").replace(b"\x00", b"\x01\x01")
    return raw


def lex_text(raw: bytes) -> str:
    """The string value of a "lex" entry's value part (the inverse of `lex_bytes`)."""
    if b"\x01" in raw:
        raw = raw.replace(b"\x01\x01", b"\x00").replace(b"\x01\x02", b"\x01")
    return raw.decode("utf-8", "surrogatepass")


def _lex(v: str | None, open_: bool, low: bool) -> bytes:
    if v is None:
        return b"-" if low else b"+"
    raw = lex_bytes(v)
    if low:
        # members are value NUL key: 'v' itself is excluded by (v NUL \xff
        return b"(" + raw + b"\x00\xff" if open_ else b"[" + raw
    return b"(" + raw if open_ else b"[" + raw + b"\x00\xff"


def _str(raw: bytes) -> bytes:
    """``raw`` as a msgpack str, as the server's ``cmsgpack.pack`` writes a string."""
    n = len(raw)
    if n < 32:
        return bytes((0xA0 | n,)) + raw
    if n < 0x100:
        return b"\xd9" + bytes((n,)) + raw
    if n < 0x10000:
        return b"\xda" + n.to_bytes(2, "big") + raw
    return b"\xdb" + n.to_bytes(4, "big") + raw


#: msgpack str of the counts 0..255 (``"0"``, ``"1"``, ...).
_COUNTS = [_str(str(n).encode()) for n in range(256)]
#: An entry (`_entry`), by entry: built once per value seen (at most _ENTRIES_MAX entries
#: whose msgpack text has up to _ENTRY_KEPT bytes; the cache starts over when full).
_ENTRIES: dict[Any, tuple[bytes, bytes, bytes, bytes | None, bool]] = {}
_ENTRIES_MAX = 1 << 16
_ENTRY_KEPT = 96


def _entry(term: Any) -> tuple[bytes, bytes, bytes, bytes | None, bool]:
    """An entry as ``kind``, ``field``, ``value`` msgpack strs (what the script stores);
    for the fresh layout (`_fresh_argv`): the suffix of its index key after the bucket
    name, its score, and for a "lex" entry the head of its member (``value NUL``, the row
    key follows; None for the others, whose member is the row key); and whether it is an
    "eq" entry that the field's "num" entry answers when one follows it (`num_route`: the
    "eq" entry is then left out)."""
    field, kind, value = term
    name = field.encode("utf-8", "surrogatepass")
    head = None
    routed = False
    if kind == "eq":
        raw = value.encode("utf-8", "surrogatepass")
        suffix, score = b":e:" + name + b":" + raw, b"inf"
        routed = num_route(value) is not None
    elif kind == "num":
        # + 0.0: -0.0 and 0.0 are one key of the cache, and one score
        raw = repr(value + 0.0).encode()
        suffix, score = b":n:" + name, raw
    else:
        raw = lex_bytes(value)
        suffix, score, head = b":l:" + name, b"0", raw + b"\x00"
    return _str(kind.encode()) + _str(name) + _str(raw), suffix, score, head, routed


def _count(n: int) -> bytes:
    return _COUNTS[n] if n < 256 else _str(str(n).encode())


def fresh(cmds: Sequence[IndexedWrite]) -> bool:
    """Whether these rows go to `WRITE_LUA` in its fresh layout: one bucket, mode "set", no
    TTL, no unique values, no key twice."""
    bucket = cmds[0].bucket
    for cmd in cmds:
        if cmd.mode != "set" or cmd.ttl is not None or cmd.unique or cmd.bucket != bucket:
            return False
    return len({cmd.key for cmd in cmds}) == len(cmds)


def write_argv(cmds: Sequence[IndexedWrite], prefix: str) -> list[Any]:
    """ARGV of `WRITE_LUA` for these rows."""
    if len(_ENTRIES) > _ENTRIES_MAX:
        _ENTRIES.clear()
    if fresh(cmds):
        return _fresh_argv(cmds, (prefix + cmds[0].bucket).encode())
    buckets: dict[str, int] = {}
    rows: list[Any] = []
    add = rows.extend
    append = rows.append
    cache = _ENTRIES
    run: Any = None  # (bucket, mode, ttl) of the current run of rows
    count_at = 0  # where the current run's count is
    anyu = "0"
    for cmd in cmds:
        b = buckets.get(cmd.bucket)
        if b is None:
            b = buckets[cmd.bucket] = len(buckets) + 1
        ttl = cmd.ttl
        mode = cmd.mode
        head = (
            b,
            mode,
            "K" if ttl is KEEP_TTL else "N" if ttl is None else max(1, math.ceil(ttl * 1000)),
        )
        if head == run:
            rows[count_at] += 1
        else:
            run, count_at = head, len(rows)
            append(1)
            add(head)
        terms: Sequence[Any] = cmd.terms
        parts: list[bytes] = [b""]
        last = len(terms) - 1
        for i, term in enumerate(terms):
            got = cache.get(term)
            if got is None:
                got = _entry(term)
                if len(got[0]) <= _ENTRY_KEPT:
                    cache[term] = got
            if got[4] and i < last:
                nxt = terms[i + 1]
                if nxt[1] == "num" and nxt[0] == term[0]:
                    continue  # the "num" entry answers equality
            parts.append(got[0])
        parts[0] = _count(len(parts) - 1)
        unique = cmd.unique
        parts.append(_count(len(unique)))
        if unique:
            anyu = "1"
            parts += (_str(u.encode("utf-8", "surrogatepass")) for u in unique)
        if mode == "cas":
            add((cmd.value, cmd.token, b"".join(parts)))
        else:
            add((cmd.value, b"".join(parts)))
    return [len(buckets), *((prefix + b).encode() for b in buckets), anyu, *rows]


def _fresh_argv(cmds: Sequence[IndexedWrite], bucket: bytes) -> list[Any]:
    """ARGV of `WRITE_LUA` in its fresh layout (rows of one bucket, mode "set", no TTL, no
    unique values, no key twice): the rows' values and entry lists, then the ZADD
    arguments of each index key, as the script writes them for rows without stored
    entries."""
    values: list[bytes] = []
    lists: list[bytes] = []
    # per index key: its scores and members (a row's key, or for "lex" entries value NUL key)
    runs: dict[bytes, tuple[list[bytes], list[Any]]] = {}
    cache = _ENTRIES
    counts = _COUNTS
    none = counts[0]
    for cmd in cmds:
        terms: Sequence[Any] = cmd.terms
        parts: list[bytes] = [b"\xff", b""]  # the expiry, -1: none; the number of entries
        last = len(terms) - 1
        for i, term in enumerate(terms):
            got = cache.get(term)
            if got is None:
                got = _entry(term)
                if len(got[0]) <= _ENTRY_KEPT:
                    cache[term] = got
            if got[4] and i < last:
                nxt = terms[i + 1]
                if nxt[1] == "num" and nxt[0] == term[0]:
                    continue  # the "num" entry answers equality
            parts.append(got[0])
            run = runs.get(got[1])
            if run is None:
                run = runs[got[1]] = ([], [])
            run[0].append(got[2])
            head = got[3]
            run[1].append(
                cmd.key if head is None else head + cmd.key.encode("utf-8", "surrogatepass")
            )
        kept = len(parts) - 2
        parts[1] = counts[kept] if kept < 256 else _count(kept)
        parts.append(none)
        values.append(cmd.value)
        lists.append(b"".join(parts))
    argv: list[Any] = ["F", bucket, *values, *lists]
    n = len(cmds)
    for suffix, (scores, members) in runs.items():
        if len(scores) == n and suffix[1] != 0x6C:  # not ":l:"
            # an entry of every row, in row order, whose member is the row key
            argv += (suffix, "R")
            argv += scores
        else:
            argv += (suffix, 2 * len(scores))
            for score, m in zip(scores, members, strict=True):
                argv += (score, m.encode("utf-8", "surrogatepass") if type(m) is str else m)
    return argv


def num_route(text: Any) -> str | None:
    """The score text that finds the rows holding the value of canonical text ``text`` in a
    numeric field's ``"num"`` entries, exactly: an integer of at most 15 digits (below 2**53,
    so its score is exact) or a finite float; None for any other value (null, NaN, infinite,
    larger integers), which keeps its equality entry."""
    if not isinstance(text, str) or len(text) < 2:
        return None
    head, rest = text[0], text[1:]
    if head == "i":
        return rest if len(rest.lstrip("-")) <= 15 else None
    if head == "f" and rest not in ("inf", "-inf", "nan"):
        return rest
    return None


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
        # per value: 'n' and its score (the "num" entries), or 'e' and its text
        for text in cmd.values:
            route = num_route(text) if cmd.kind == "num" else None
            head += ("e", text) if route is None else ("n", route)
        return head
    if cmd.op == "prefix":
        p = lex_bytes(cmd.values[0])
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
    if cmd.count_only:
        return int
    eq = cmd.op == "eq"
    num = cmd.kind == "num" and cmd.op == "range"
    with_rows = bool(cmd.rows)
    decode = bytes.decode

    def convert(reply: Any) -> Any:
        raw_keys, raw_values, rows = reply
        if cut:
            keys = [k.decode()[cut:] for k in raw_keys]
        else:
            keys = list(map(decode, raw_keys))
        values: Any
        if eq:
            values = repeat(None, len(keys))
        elif num:
            values = [float(v) for v in raw_values]
        else:
            values = [lex_text(v) for v in raw_values]
        if not with_rows:
            return list(zip(keys, values, strict=True))
        if len(rows) < len(keys):  # the keys beyond the first `rows`: their rows not read
            rows = [*rows, *[_NOT_READ] * (len(keys) - len(rows))]
        return list(zip(keys, values, rows, strict=True))

    return convert
