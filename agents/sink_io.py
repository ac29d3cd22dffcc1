"""What the sink reports and runs: its Prometheus series (served by the worker at /metrics, per
stream like GET /v1/streams/{id}/metrics) and the Lua scripts it runs in Redis, one call per
batch of windows and one per metrics flush (ARCHITECTURE.md "Output")."""

from prometheus_client import Counter, Histogram

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

WINDOWS = Counter("bond_worker_windows_total", "windows emitted", ["stream_id"])
MSGS_IN = Counter(
  "bond_worker_msgs_in_total", "raw events merged into emitted windows", ["stream_id"]
)
LATE = Counter(
  "bond_worker_late_total", "events that arrived after their window was out", ["stream_id"]
)
DROPPED = Counter(
  "bond_worker_dropped_total", "windows that could never be sent, dropped", ["stream_id"]
)
EMIT_LAG = Histogram(
  "bond_worker_emit_lag_seconds",
  "window emitted minus window end",
  ["stream_id"],
  buckets=LAG_BUCKETS,
)
LATENCY = Histogram(
  "bond_worker_processing_latency_seconds", "raw event received (ts_ingest) to aggregated", ["stream_id"],
  buckets=LAG_BUCKETS,
)  # fmt: skip


SCRIPTS = {
  # KEYS: ring of each window; ARGV: min id, then (entry id, body) per window. Returns, per
  # window, 0 written, 1 already there (equal or smaller id), 2 refused otherwise.
  "rings": """
local out = {}
for i, key in ipairs(KEYS) do
  local r = redis.pcall('XADD', key, 'MINID', '=', ARGV[1], ARGV[2 * i], 'e', ARGV[2 * i + 1])
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'equal or smaller', 1, true) then out[i] = 1 else out[i] = 2 end
  else
    out[i] = 0
  end
end
return out
""",
  # KEYS: metrics hashes; ARGV per key: n_incr, n_set, n_incr items (field, n), n_set items
  # (field, value).
  "metrics": """
local at = 1
for _, key in ipairs(KEYS) do
  local ni, ns = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  at = at + 2
  for i = at, at + ni - 1, 2 do redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1]) end
  at = at + ni
  if ns > 0 then redis.call('HSET', key, unpack(ARGV, at, at + ns - 1)) end
  at = at + ns
end
return #KEYS
""",
}
