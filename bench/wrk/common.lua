-- Shared by every scenario: per-thread data, the token, and the summary the runner parses.
-- The runner prepends this file to the scenario's own script.

local next_thread = 0

function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  data = dofile(args[1])
  math.randomseed(1000003 * (thread_id + 1))
  headers = {
    ["Authorization"] = "Bearer " .. data.token,
    ["Accept"] = "application/fhir+json",
  }
  if on_init then on_init() end
end

function pick(list)
  return list[math.random(#list)]
end

function with(extra)
  local merged = {}
  for k, v in pairs(headers) do merged[k] = v end
  for k, v in pairs(extra) do merged[k] = v end
  return merged
end

-- The items of a list that belong to this thread (list index modulo thread count).
function share(list)
  local mine = {}
  for i, item in ipairs(list) do
    if (i - 1) % data.threads == thread_id then mine[#mine + 1] = item end
  end
  return mine
end

function fill(template, values)
  return (string.gsub(template, "@@(%u+)@@", values))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p95_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    latency.mean))
end
