-- wrk script of `make bench` (bench/bench.py): a fixed number of responses,
-- every one checked for status 200.
--
-- Environment (read by every Lua state wrk creates):
--   BENCH_TOTAL         responses to collect in all; thread k of n stops after
--                       its share (TOTAL / n, the first TOTAL % n threads one more)
--   BENCH_THREADS       wrk's -t
--   BENCH_TOKENS        optional: a file of bearer tokens, one a line; then every
--                       request carries the next unused one (threads interleave,
--                       so no token is sent twice while the file lasts)
--   BENCH_TOKEN_OFFSET  index of the first token to use (warm-up and measured
--                       runs use disjoint ranges)
-- Static headers (a fixed token, a cookie, Basic) are given with wrk's -H.
--
-- wrk's own duration is its -d, whatever the scripts do (thread:stop() ends a
-- thread's event loop, not wrk's sleep), so the time is measured here with
-- LuaJIT's FFI (CLOCK_MONOTONIC): from the end of the first thread's init()
-- (just before wrk starts that thread) to the last counted response.  Each
-- thread prints BENCH_THREAD_DONE on stderr when it has its share; bench.py
-- then sends wrk SIGINT, which ends its sleep.
--
-- done() prints one line:  BENCH key=value ...  that bench.py parses.

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now()
   ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
   return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local total = tonumber(os.getenv("BENCH_TOTAL") or "1000")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
local token_file = os.getenv("BENCH_TOKENS")
if token_file == "" then token_file = nil end
local offset = tonumber(os.getenv("BENCH_TOKEN_OFFSET") or "0")

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function init(args)
   limit = math.floor(total / nthreads)
   if id < total % nthreads then limit = limit + 1 end
   responses, non200, sent, wrapped = 0, 0, 0, 0
   if token_file then
      tokens = {}
      for line in io.lines(token_file) do
         if line ~= "" then tokens[#tokens + 1] = line end
      end
   end
   t_start = now()
   t_end = 0
end

if token_file then
   function request()
      local i = offset + id + sent * nthreads
      sent = sent + 1
      if i >= #tokens then wrapped = wrapped + 1 end
      local t = tokens[(i % #tokens) + 1]
      return wrk.format(nil, nil, {["Authorization"] = "Bearer " .. t})
   end
end

function response(status, headers, body)
   responses = responses + 1
   if status ~= 200 then
      non200 = non200 + 1
      if first_bad == nil then first_bad = status end
   end
   if responses == limit then
      t_end = now()
      io.stderr:write("BENCH_THREAD_DONE\n")
      io.stderr:flush()
      wrk.thread:stop()
   end
end

function done(summary, latency, requests)
   local bad, counted, reused, first = 0, 0, 0, 0
   local t0, t1, finished = math.huge, 0, 0
   for _, t in ipairs(threads) do
      t0 = math.min(t0, t:get("t_start"))
      if t:get("t_end") > 0 then finished = finished + 1 end
      t1 = math.max(t1, t:get("t_end"))
      bad = bad + (t:get("non200") or 0)
      counted = counted + (t:get("responses") or 0)
      reused = reused + (t:get("wrapped") or 0)
      if first == 0 and t:get("first_bad") then first = t:get("first_bad") end
   end
   -- a thread that never got its share ran until wrk's -d: fall back to wrk's duration
   local duration_us = summary.duration
   if finished == #threads and t1 > t0 then duration_us = (t1 - t0) * 1e6 end
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d finished_threads=%d counted=%d non200=%d first_bad_status=%d "
      .. "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d status_errors=%d reused_tokens=%d "
      .. "p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f\n",
      summary.requests, duration_us, finished, counted, bad, first,
      e.connect, e.read, e.write, e.timeout, e.status, reused,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
