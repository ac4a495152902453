"""The Lua script: one call decides the per-minute token bucket and the daily quota.

KEYS[1]  hash {t = tokens (float), ts = last update, ms}   the per-minute bucket
KEYS[2]  hash {d = UTC day number, n = requests that day}  the daily quota
         Both keys share a hash tag ({module:caller}), so they live in one Cluster slot.
ARGV[1]  per-minute limit (bucket capacity; refill = limit / 60 s)
ARGV[2]  daily quota (0 = none)
ARGV[3]  "" in production; tests pass a time in ms to stand in for the server clock
ARGV[4]  requests the calling gateway admitted without Redis (its local fallback) since its
         last reply for this bucket, charged now: "0" in normal operation
ARGV[5]  the gateway's mirror of the bucket's tokens, refilled to now ("" = none)
ARGV[6]  the gateway's mirror of today's count ("0" = none)
Returns  {limited_by (0 admitted, 1 rate, 2 quota), remaining, reset_ms, retry_after_ms,
          tokens left (a decimal string), today's count}

Time is Redis's own (TIME), so gateways with skewed clocks still share one bucket exactly.
The quota is checked first and a refused request spends nothing. Keys expire when they no
longer matter: the bucket once it would be full again, the quota at the end of the UTC day.

Strategy (coming back from a fallback mints nothing):
- Requests a gateway admitted without Redis are charged when it reaches Redis again, but
  never below what its mirror says is left: over a long fallback the mirror spent refills that
  Redis's copy capped at the capacity, so the plain difference would take the bucket far below
  zero. Tokens never go below zero.
- A bucket or count that Redis does not have but the gateway's mirror does (Redis restarted or
  was flushed) starts from the mirror, not full: a restart gives no caller a fresh bucket.
"""

from __future__ import annotations

TOKEN_BUCKET_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local now
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local capacity = tonumber(ARGV[1])
local quota = tonumber(ARGV[2])
local spent = tonumber(ARGV[4])
local mirror = tonumber(ARGV[5])
local rate = capacity / 60000

local b = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = capacity
  if mirror ~= nil and mirror < tokens then tokens = math.max(mirror, 0) end
else
  if now > ts then tokens = math.min(capacity, tokens + (now - ts) * rate) end
  if spent > 0 then
    tokens = math.max(tokens - spent, math.min(tokens, math.max(mirror or 0, 0)))
  end
end

local function store_bucket()
  local reset = math.ceil((capacity - tokens) / rate)
  redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', KEYS[1], reset + 1000)
  return reset
end

local day = math.floor(now / 86400000)
local until_midnight = 86400000 - (now % 86400000)
local used = 0
local carried = false
if quota > 0 then
  local q = redis.call('HMGET', KEYS[2], 'd', 'n')
  local stored = tonumber(q[1])
  if stored == day then
    used = (tonumber(q[2]) or 0) + spent
    carried = spent > 0
  elseif stored == nil then
    used = tonumber(ARGV[6])
    carried = used > 0
  end
end

local function store_day()
  redis.call('HSET', KEYS[2], 'd', day, 'n', used)
  redis.call('PEXPIRE', KEYS[2], until_midnight + 60000)
end

if quota > 0 and used >= quota then
  if carried or spent > 0 then
    store_bucket()
    store_day()
  end
  return {2, 0, until_midnight, until_midnight, tostring(tokens), used}
end

if tokens < 1 then
  local retry = math.ceil((1 - tokens) / rate)
  local reset = store_bucket()
  if carried then store_day() end
  return {1, 0, reset, retry, tostring(tokens), used}
end

tokens = tokens - 1
local reset = store_bucket()
if quota > 0 then
  used = used + 1
  store_day()
end
return {0, math.floor(tokens), reset, 0, tostring(tokens), used}
"""
