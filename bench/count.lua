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
-- done() prints one line:  BENCH key=value ...  that bench.py parses.

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
   if responses >= limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
   local bad, counted, reused, first = 0, 0, 0, 0
   for _, t in ipairs(threads) do
      bad = bad + (t:get("non200") or 0)
      counted = counted + (t:get("responses") or 0)
      reused = reused + (t:get("wrapped") or 0)
      if first == 0 and t:get("first_bad") then first = t:get("first_bad") end
   end
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d counted=%d non200=%d first_bad_status=%d "
      .. "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d status_errors=%d reused_tokens=%d "
      .. "p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f\n",
      summary.requests, summary.duration, counted, bad, first,
      e.connect, e.read, e.write, e.timeout, e.status, reused,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
