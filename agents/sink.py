"""Where windows go: the stream's Kafka topic, its Redis Stream, and its metrics.

The Redis Stream entry id is `<seq>-0`, so a window emitted twice (after a crash) is
refused by Redis rather than stored twice; the gateway also sends only increasing seqs.
"""

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections import defaultdict, deque
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Histogram
from redis.exceptions import RedisError, ResponseError

from bond.agents.app import app, settings
from bond.agents.state import state
from bond.topics import stream_topic
from bond.topics.admin import TopicAdmin

log = logging.getLogger(__name__)

RESERVOIR = 1024
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Prometheus, served by the worker at /metrics (per stream, like GET /v1/streams/{id}/metrics).
WINDOWS = Counter("bond_worker_windows_total", "windows emitted", ["stream_id"])
MSGS_IN = Counter(
  "bond_worker_msgs_in_total", "raw events merged into emitted windows", ["stream_id"]
)
LATE = Counter(
  "bond_worker_late_total", "events that arrived after their window was out", ["stream_id"]
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


def percentile(values: list[float], q: float) -> float | None:
  """Return the q-quantile (0..1) of values by nearest rank, or None when empty."""
  if not values:
    return None
  ordered = sorted(values)
  return float(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))])


class Sink:
  """Buffers emitted windows and metrics, and writes them out from one background task."""

  def __init__(self) -> None:
    self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    self.latency_ms: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=RESERVOIR))
    self.lag_ms: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=RESERVOIR))
    self.stats = {"emitted": 0, "redis_dupes": 0, "redis_errors": 0, "kafka_errors": 0}
    self._redis: aioredis.Redis | None = None
    self._topics: dict[str, str] = {}
    self.redis_queue: deque[tuple[str, dict[str, Any]]] = deque()
    self.redis_ready = asyncio.Event()
    self._producer: AIOKafkaProducer | None = None
    self._admin: TopicAdmin | None = None
    self._prepared: set[str] = set()
    self._admin_lock = asyncio.Lock()

  def emit(
    self, sid: str, event: dict[str, Any], msgs_in: int, lag_ms: int, backfilled: bool = False
  ) -> None:
    """Queue one window for Kafka and Redis (called without awaiting, from agents and timers).

    A backfilled window (computed after the fact) does not count in the emit lag.
    """
    self.queue.put_nowait((sid, event))
    self.counts[sid]["windows_out"] += 1
    self.counts[sid]["msgs_in"] += msgs_in
    self.stats["emitted"] += 1
    WINDOWS.labels(sid).inc()
    MSGS_IN.labels(sid).inc(msgs_in)
    if backfilled:
      self.counts[sid]["backfilled"] += 1
      return
    self.lag_ms[sid].append(float(lag_ms))
    EMIT_LAG.labels(sid).observe(max(0, lag_ms) / 1000)

  def count(self, sid: str, field: str, n: int) -> None:
    self.counts[sid][field] += n
    if field == "late":
      LATE.labels(sid).inc(n)

  def latency(self, sid: str, samples: list[float]) -> None:
    self.latency_ms[sid].extend(samples)
    hist = LATENCY.labels(sid)
    for sample in samples:
      hist.observe(sample / 1000)

  def forget(self, sid: str) -> None:
    self._prepared.discard(sid)
    for store in (self.counts, self.latency_ms, self.lag_ms, self._topics):
      store.pop(sid, None)
    for metric in (WINDOWS, MSGS_IN, LATE, EMIT_LAG, LATENCY):
      with contextlib.suppress(KeyError):
        metric.remove(sid)

  @property
  def redis(self) -> aioredis.Redis:
    if self._redis is None:
      self._redis = aioredis.from_url(
        settings.redis_url, socket_timeout=5, health_check_interval=10
      )
    return self._redis

  async def _started(self) -> AIOKafkaProducer:
    if self._producer is None:
      # Its own producer: waiting for a new stream topic's metadata must not hold up the panes.
      producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=1
      )
      await producer.start()
      if self._producer is None:
        self._producer = producer
      else:
        await producer.stop()  # another task got there first
    return self._producer

  async def prepare(self, sids: list[str]) -> None:
    """Make sure these streams' topics exist and their metadata is known before their first
    window; otherwise the first window of every new stream waits ~100 ms for both, and the
    windows of other streams queued behind it wait too. One admin call for all of them.
    """
    producer = await self._started()
    async with self._admin_lock:
      admin = await self._admin_started()
      await admin.ensure([stream_topic(sid) for sid in sids])
    topics = [stream_topic(sid).name for sid in sids]
    await asyncio.gather(*(producer.partitions_for(topic) for topic in topics))
    for sid, topic in zip(sids, topics, strict=True):
      self._topics[sid] = topic
      self._prepared.add(sid)

  async def _admin_started(self) -> TopicAdmin:
    if self._admin is None:
      admin = TopicAdmin(settings.kafka_bootstrap)
      await admin.start()
      self._admin = admin
    return self._admin

  async def drain(self) -> None:
    """Write queued windows to Kafka, then to Redis, in order.

    A failure (Kafka away longer than the producer's own retries, a topic that cannot be
    created yet) never drops a window: the batch is sent again until it is in Kafka.
    Windows sent twice that way are refused by Redis (`<seq>-0`) and skipped by the gateway.
    """
    producer = await self._started()
    batch = [await self.queue.get()]
    while not self.queue.empty() and len(batch) < 500:
      batch.append(self.queue.get_nowait())
    bodies = [json.dumps(event, separators=(",", ":")).encode() for _, event in batch]
    attempt = 0
    while True:
      try:
        futures: list[asyncio.Future[Any]] = []
        for (sid, _event), body in zip(batch, bodies, strict=True):
          if sid not in self._topics:
            await self.prepare([sid])  # the API creates it; the timer may not have come yet
          topic = self._topics[sid]
          futures.append(await producer.send(topic, body, key=sid.encode()))
        await asyncio.gather(*futures)
        break
      except (KafkaError, OSError) as err:
        attempt += 1
        self.stats["kafka_errors"] += 1
        delay = min(2.0, 0.1 * 2**attempt)
        log.warning(
          "sink: %d windows not in Kafka yet (%r); retrying in %.1fs", len(batch), err, delay
        )
        await asyncio.sleep(delay)
    # Redis has its own queue and task: an outage there must not hold up live delivery.
    self.redis_queue.extend(batch)
    self.redis_ready.set()

  async def redis_loop(self) -> None:
    """Write queued windows to the Redis rings, in order, retrying through outages."""
    while True:
      await self.redis_ready.wait()
      self.redis_ready.clear()
      while self.redis_queue:
        batch = [self.redis_queue.popleft() for _ in range(min(500, len(self.redis_queue)))]
        await self._to_redis(batch)

  async def _to_redis(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
    attempt = 0
    while True:
      # Windows older than the ring would be trimmed at once: drop them instead of writing.
      min_id = int(time.time() * 1000) - settings.bond_ring_seconds * 1000
      batch = [(sid, ev) for sid, ev in batch if ev["seq"] >= min_id]
      if not batch:
        return
      try:
        pipe = self.redis.pipeline(transaction=False)
        for sid, event in batch:
          key = f"bond:stream:{sid}"
          pipe.xadd(key, {"e": json.dumps(event, separators=(",", ":"))}, id=f"{event['seq']}-0",
                    maxlen=settings.bond_ring_maxlen, approximate=True)  # fmt: skip
          pipe.xtrim(key, minid=min_id, approximate=False)
        results = await pipe.execute(raise_on_error=False)
        for result in results[::2]:
          if isinstance(result, ResponseError):
            self.stats["redis_dupes"] += 1  # equal or smaller id: this window is already there
        return
      except (RedisError, OSError) as err:
        self.stats["redis_errors"] += 1
        delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random() / 2)
        attempt += 1
        log.warning("redis sink: %s; retrying in %.2fs", err, delay)
        await asyncio.sleep(delay)

  async def flush_metrics(self) -> None:
    """Add counters to each stream's metrics hash and replace its percentiles."""
    from bond.agents.windows import _owned

    pipe = self.redis.pipeline(transaction=False)
    for sid in list(self.counts.keys() | self.latency_ms.keys() | self.lag_ms.keys()):
      key = f"bond:metrics:{sid}"
      counts = self.counts.pop(sid, {})
      for field, n in counts.items():
        if n:
          pipe.hincrby(key, field, n)
      if not _owned(sid):
        continue
      lat = list(self.latency_ms.get(sid, ()))
      lag = list(self.lag_ms.get(sid, ()))
      fields: dict[str, float | int] = {
        "latency_samples": len(lat),
        "updated_ms": int(time.time() * 1000),
      }
      for name, values in (("latency", lat), ("emit_lag", lag)):
        for q in (50, 95, 99):
          value = percentile(values, q / 100)
          if value is not None:
            fields[f"{name}_p{q}_ms"] = round(value, 3)
      pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
    try:
      await pipe.execute()
    except (RedisError, OSError) as err:
      log.warning("metrics: %s", err)


sink = Sink()


@app.task
async def sink_loop() -> None:
  """Drain emitted windows forever."""
  while True:
    await sink.drain()


@app.task
async def redis_loop() -> None:
  """Write windows to the Redis rings forever."""
  await sink.redis_loop()


PREPARE_PER_TICK = 500


@app.timer(0.25)
async def prepare_topics() -> None:
  """Get new streams' topics ready (created, metadata known) before their first window."""
  from bond.agents.windows import _owned

  todo = [sid for sid in list(state.streams) if sid not in sink._prepared and _owned(sid)]
  if not todo:
    return
  try:
    await sink.prepare(todo[:PREPARE_PER_TICK])
  except Exception as err:  # the first window creates its topic anyway; try again next tick
    log.warning("preparing %d stream topics failed: %r", len(todo[:PREPARE_PER_TICK]), err)


@app.timer(1.0)
async def metrics_loop() -> None:
  """Publish per-stream metrics once a second."""
  await sink.flush_metrics()
