"""The Lua script: one call decides the per-minute token bucket and the daily quota.

KEYS[1]  hash {t = tokens (float), ts = last update, ms}   the per-minute bucket
KEYS[2]  hash {d = UTC day number, n = requests that day}  the daily quota
         Both keys share a hash tag ({module:caller}), so they live in one Cluster slot.
ARGV[1]  per-minute limit (bucket capacity; refill = limit / 60 s)
ARGV[2]  daily quota (0 = none)
ARGV[3]  "" in production; tests pass a time in ms to stand in for the server clock
Returns  {limited_by (0 admitted, 1 rate, 2 quota), remaining, reset_ms, retry_after_ms}

Time is Redis's own (TIME), so gateways with skewed clocks still share one bucket exactly.
The quota is checked first and a refused request spends nothing. Keys expire when they no
longer matter: the bucket once it would be full again, the quota at the end of the UTC day.
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
local rate = capacity / 60000

local b = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = capacity
elseif now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
end

local day = math.floor(now / 86400000)
local until_midnight = 86400000 - (now % 86400000)
local used = 0
if quota > 0 then
  local q = redis.call('HMGET', KEYS[2], 'd', 'n')
  if tonumber(q[1]) == day then used = tonumber(q[2]) or 0 end
  if used >= quota then
    return {2, 0, until_midnight, until_midnight}
  end
end

if tokens < 1 then
  local retry = math.ceil((1 - tokens) / rate)
  local reset = math.ceil((capacity - tokens) / rate)
  redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', KEYS[1], reset + 1000)
  return {1, 0, reset, retry}
end

tokens = tokens - 1
local reset = math.ceil((capacity - tokens) / rate)
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], reset + 1000)
if quota > 0 then
  redis.call('HSET', KEYS[2], 'd', day, 'n', used + 1)
  redis.call('PEXPIRE', KEYS[2], until_midnight + 60000)
end
return {0, math.floor(tokens), reset, 0}
"""
