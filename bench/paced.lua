-- wrk at a fixed request rate: `wrk -t1 -cN --latency -s bench/paced.lua URL -- RATE`.
--
-- Strategy: wrk calls delay() before every request of every connection, and the connections
-- of one thread share this Lua state, so delay() hands out the slots of one schedule (a
-- request every 1/RATE s) and returns how long the calling connection waits for its slot. A
-- slow response delays only that connection, not the schedule: the rate holds as long as some
-- connection is free when a slot comes, so run enough connections to cover the latency. A
-- connection that comes after its slot goes at once; past 100 missed slots the schedule
-- restarts from now rather than fire the whole backlog, and the Requests/sec wrk reports
-- falls short of RATE (check it). wrk times a request from when it is sent, so the latencies
-- exclude the wait; its timers have 1 ms resolution, so requests go up to 1 ms early.
-- Use -t1: with more threads each would run the whole RATE.
-- Needs wrk built with LuaJIT (Debian's is), for a monotonic clock through the FFI.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } paced_timespec;
  int clock_gettime(int clock_id, paced_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("paced_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local interval_ms, backlog_ms, next_slot

function init(args)
  local rate = tonumber(args[1])
  if rate == nil or rate <= 0 then
    error("paced.lua: pass the rate in requests/s after --")
  end
  interval_ms = 1000 / rate
  backlog_ms = 100 * interval_ms
end

function delay()
  local now = now_ms()
  if next_slot == nil or next_slot < now - backlog_ms then
    next_slot = now
  end
  local wait = next_slot - now
  next_slot = next_slot + interval_ms
  if wait < 0 then
    return 0
  end
  return wait
end
