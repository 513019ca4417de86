-- wrk cross-check for bench/run.sh: 1 KiB GETs, direct or through an HTTP proxy (absolute-form).
-- Environment: WRK_URL (the upstream URL; absolute-form when WRK_PROXY=1), WRK_HOST (Host header),
-- WRK_EXPECT_LEN (body length every response must have).
-- Prints one line: WRK,<requests>,<duration_us>,<p50_ms>,<p99_ms>,<bad>,<socket_errors>
-- where bad = non-200 or wrong body length (checked in response(), counted per thread).

local url = os.getenv("WRK_URL")
local proxied = os.getenv("WRK_PROXY") == "1"
local expect_len = tonumber(os.getenv("WRK_EXPECT_LEN") or "0")

if proxied then
  -- Static request (no request() function, so wrk formats it once): the request target is the full URL.
  wrk.path = url
end
wrk.headers["Host"] = os.getenv("WRK_HOST")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
end

function response(status, headers, body)
  if status ~= 200 or #body ~= expect_len then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_bad = 0
  for _, t in ipairs(threads) do
    total_bad = total_bad + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format("WRK,%d,%d,%.3f,%.3f,%d,%d\n", summary.requests, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, total_bad,
    e.connect + e.read + e.write + e.timeout))
end
