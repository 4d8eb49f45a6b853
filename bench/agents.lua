-- Virtual device agents for wrk (bench/wrk.py runs it).
--
--   wrk -s bench/agents.lua URL -- DEVICES_FILE MODE PATH_TEMPLATE SEED [CLOSE_EVERY]
--
-- DEVICES_FILE: one device a line, "uuid key etag". Every request is the next
-- device's request, rotating over the file from a point chosen by SEED, so
-- that each device sends its own key and its own ETag.
-- MODE: poll304 (GET with the device's ETag in If-None-Match), poll200 (GET
-- without), report (PATCH of a small state report).
-- PATH_TEMPLATE: the path, "{uuid}" replaced by the device's uuid.
-- CLOSE_EVERY: every this many requests, one asks the server to close its
-- connection (Connection: close) and wrk opens a new one (0: never). A
-- keep-alive connection stays with the gunicorn worker that accepted it; if
-- all were opened once, at the start, their split between the workers would
-- be decided once, by chance, and often all to one. Real agents connect
-- anew for nearly every poll, and a new connection goes to a worker that is
-- free to accept it.
-- done() prints one line of JSON: requests, seconds, errors, latency
-- percentiles (microseconds) and the count of each HTTP status.

local threads = {}

function setup(thread)
  thread:set("thread_number", #threads + 1)
  table.insert(threads, thread)
end

local devices = {}
local count = 0
local index = 0
local mode
local close_every = 0
local sent = 0
-- Global, so that done() can read it from each thread.
statuses = {}
local report_body = '{"target_version": 1, "services": {"web": {"image": '
  .. '"docker.io/bench/http", "tag": "v1.0.0", "status": "running", "health": "healthy"}}}'

function init(args)
  local file, template, seed = args[1], args[3], tonumber(args[4])
  mode = args[2]
  close_every = tonumber(args[5] or "0")
  for line in io.lines(file) do
    local uuid, key, etag = line:match("^(%S+) (%S+) (%S+)$")
    count = count + 1
    devices[count] = {
      path = (template:gsub("{uuid}", uuid)),
      authorization = "Bearer " .. key,
      etag = etag,
    }
  end
  -- Threads and runs start at different devices.
  index = (seed * 9973 + thread_number * 7919) % count
end

function request()
  index = index % count + 1
  local device = devices[index]
  local headers = { ["Authorization"] = device.authorization }
  sent = sent + 1
  if close_every > 0 and sent % close_every == 0 then
    headers["Connection"] = "close"
  end
  if mode == "poll304" then
    headers["If-None-Match"] = device.etag
    return wrk.format("GET", device.path, headers)
  elseif mode == "poll200" then
    return wrk.format("GET", device.path, headers)
  end
  headers["Content-Type"] = "application/json"
  return wrk.format("PATCH", device.path, headers, report_body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[#counts + 1] = string.format('"%d": %d', status, n)
    end
  end
  local errors = summary.errors
  io.write(string.format(
    '\nWRK_JSON {"requests": %d, "seconds": %.6f, "errors": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration / 1e6,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    table.concat(counts, ", ")))
end
