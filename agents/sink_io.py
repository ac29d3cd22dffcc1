"""What the sink reports and runs: its Prometheus series (served by the worker at /metrics, per
stream like GET /v1/streams/{id}/metrics) and the Lua scripts it runs in Redis, one call per
batch of windows and one per metrics flush (ARCHITECTURE.md "Output")."""

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
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
  "bond_worker_processing_latency_seconds", "raw event received (ts_ingest) to aggregated, per feed",
  ["feed", "partition"],
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
  # KEYS: metrics hashes; ARGV[1]: a JSON array with, per key, [counters, values]: counters
  # a flat [field, n, ...] added with HINCRBY, values a flat [field, value, ...] set with
  # HSET, every n and value a string. One argument for the lot: redis-py packs each argument
  # in Python, and twenty per stream a second was most of the metrics' cost.
  "metrics": """
local entries = cjson.decode(ARGV[1])
for i, key in ipairs(KEYS) do
  local incr, set = entries[i][1], entries[i][2]
  for j = 1, #incr, 2 do redis.call('HINCRBY', key, incr[j], incr[j + 1]) end
  if #set > 0 then redis.call('HSET', key, unpack(set)) end
end
return #KEYS
""",
}


async def last_records(
  consumer: AIOKafkaConsumer, topics: list[str], timeout_sec: float = 10.0
) -> dict[str, bytes | None]:
  """Return the last record of each (one-partition) topic, None for an empty one.

  `consumer` is a started consumer without a group; it is assigned these partitions for the
  read and nothing after it. Raises TimeoutError when a last record could not be read in time.
  """
  tps = [TopicPartition(topic, 0) for topic in topics]
  out: dict[str, bytes | None] = {topic: None for topic in topics}
  # Assigned first, so one metadata request covers every topic: asked for offsets of topics
  # it does not track, aiokafka adds them one per retry (100 ms each), and the tails of a
  # few hundred new streams took longer than its 40 s timeout.
  consumer.assign(tps)
  try:
    ends = await consumer.end_offsets(tps)
    starts = await consumer.beginning_offsets(tps)
    wanted = {tp: ends[tp] - 1 for tp in tps if ends[tp] > starts[tp]}
    if not wanted:
      return out
    consumer.assign(list(wanted))
    for tp, offset in wanted.items():
      consumer.seek(tp, offset)
    deadline = asyncio.get_running_loop().time() + timeout_sec
    while wanted:
      left = deadline - asyncio.get_running_loop().time()
      if left <= 0:
        raise TimeoutError(f"last record of {len(wanted)} topic(s) not read in {timeout_sec}s")
      batch = await consumer.getmany(*wanted, timeout_ms=int(min(left, 1.0) * 1000))
      for tp, messages in batch.items():
        for message in messages:
          if tp in wanted and message.offset >= wanted[tp]:
            out[tp.topic] = message.value
            del wanted[tp]
            consumer.pause(tp)
  finally:
    consumer.unsubscribe()  # drops the manual assignment
  return out


class TopicTails:
  """Reads the last window of stream topics (one consumer, one read at a time), and leaves
  out of a read's answer the streams taken over while it was under way (read them again)."""

  def __init__(self, bootstrap: str) -> None:
    self._bootstrap = bootstrap
    self._consumer: AIOKafkaConsumer | None = None
    self._lock = asyncio.Lock()
    self._moves = 0  # ownership changes so far; the last one each stream was part of:
    self._moved: dict[str, int] = {}

  def moved(self, sids: list[str]) -> None:
    """Note that these streams were just taken over."""
    self._moves += 1
    for sid in sids:
      self._moved[sid] = self._moves

  def forget(self, sid: str) -> None:
    self._moved.pop(sid, None)

  async def read(self, topics: dict[str, str]) -> dict[str, bytes | None]:
    """Return the last record of each stream's topic (`{stream: topic}`), None when empty."""
    moves = self._moves
    async with self._lock:
      if self._consumer is None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
        await consumer.start()
        self._consumer = consumer
      last = await last_records(self._consumer, list(topics.values()))
    return {sid: last[t] for sid, t in topics.items() if self._moved.get(sid, 0) <= moves}

  async def stop(self) -> None:
    consumer, self._consumer = self._consumer, None
    if consumer is not None:
      await consumer.stop()
