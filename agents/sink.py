"""Where windows go: the stream's Kafka topic, its Redis Stream, and its metrics.

The Redis Stream entry id is `<seq>-0`, so a window emitted twice (after a crash) is
refused by Redis rather than stored twice; the gateway also sends only increasing seqs.

Output cost does not grow with what one stream does to the others:
- each stream's windows go to Kafka in order, one batch per stream in flight; a stream
  whose batch is stuck or backing off (`Backoff`) holds up no other stream;
- a window that can never be sent (over `BOND_MAX_WINDOW_BYTES`, or refused by Kafka as
  too large or invalid) is dropped, counted in the stream's `dropped` and logged once;
- Redis gets the windows of a round in one script call (an XADD each, trimmed by time as
  it goes in): redis-py's cost is per command, and it was most of the output's CPU;
- metrics are one script call a second per 200 streams, with one JSON argument (redis-py
  packs each argument in Python), their percentiles read from sorted reservoirs (latency
  ones per feed, shared by the streams of the same feeds).
"""

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict, deque
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.exceptions import NoScriptError, RedisError

from bond.agents.app import settings
from bond.agents.outbox import Outbox, Recent, Window, is_poison
from bond.agents.sink_io import (
  DROPPED,
  EMIT_LAG,
  LATE,
  LATENCY,
  MSGS_IN,
  SCRIPTS,
  WINDOWS,
  TopicTails,
)
from bond.agents.sink_metrics import MetricsOut
from bond.connectors.backoff import Backoff
from bond.topics import stream_topic
from bond.topics.admin import TopicAdmin
from bond.windowing.stage2_state import TrackId
from bond.wire import stream_key

log = logging.getLogger(__name__)

RESERVOIR = 1024
BATCH_PER_STREAM = 500  # windows of one stream in one Kafka batch (catching up after downtime)
REDIS_BATCH = 100  # windows per Redis command (script call: one holds the loop while packed)
REDIS_BATCH_BYTES = 4 * 1024 * 1024
REDIS_QUEUE_MAX = 200_000
MAXLEN_TRIM_SEC = 10.0  # how often a ring is also trimmed to BOND_RING_MAXLEN  # windows waiting for Redis (an outage): the oldest go first
KAFKA_RETRY = Backoff(base_sec=0.1, max_sec=2.0, jitter=0.2)
REDIS_RETRY = Backoff(base_sec=0.05, max_sec=2.0, jitter=0.5)
PREPARE_RETRY = Backoff(base_sec=0.25, max_sec=5.0)
WARN_EVERY_SEC = 5.0  # transient trouble is logged at most this often, with a count


class Sink(MetricsOut):
  """Buffers emitted windows and metrics, and writes them out from background tasks."""

  def __init__(self, max_window_bytes: int = settings.bond_max_window_bytes) -> None:
    self.outbox = Outbox(self._dropped, max_window_bytes, backoff=KAFKA_RETRY)
    self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    self.latency_ms: dict[TrackId, Recent] = {}  # per (partition, feed)
    self.lag_ms: dict[str, Recent] = {}
    self._fresh: set[str] = set()  # streams with samples since the last metrics flush
    self.stats = {"emitted": 0, "dropped": 0, "redis_dupes": 0, "redis_errors": 0,
                  "redis_dropped": 0, "kafka_errors": 0}  # fmt: skip
    self._redis: aioredis.Redis | None = None
    self._topics: dict[str, str] = {}
    self.redis_queue: deque[tuple[str, Window]] = deque()
    self.redis_ready = asyncio.Event()
    self.wake = asyncio.Event()
    self._producer: AIOKafkaProducer | None = None
    self._admin: TopicAdmin | None = None
    self._prepared: set[str] = set()
    self._admin_lock = asyncio.Lock()
    self.tails = TopicTails(settings.kafka_bootstrap)  # what stream topics already hold
    self._tasks: set[asyncio.Task[None]] = set()
    self._preparing: asyncio.Task[None] | None = None
    self._prepare_attempt = 0
    self._prepare_after = 0.0
    self._drop_logged: set[str] = set()
    self._warned_at = 0.0
    self._partition: dict[str, int] = {}
    self._maxlen_trimmed: dict[str, float] = {}
    self._prom: dict[str, tuple[Any, Any, Any]] = {}
    self._shas: dict[str, str] = {}
    # From a batch's first send to Kafka's last acknowledgement (ms; /bond/stats): how long
    # the broker and this producer's one request in flight make a window wait.
    self.kafka_ack_ms = Recent(512)

  # ------------------------------------------------------------------ called by stage 2

  def emit(
    self, sid: str, event: dict[str, Any], msgs_in: int, lag_ms: int, backfilled: bool = False
  ) -> None:
    """Queue one window for Kafka and Redis (called without awaiting, from agents and timers).

    A backfilled window (computed after the fact) does not count in the emit lag.
    """
    self.stats["emitted"] += 1
    windows, msgs, emit_lag = self._children(sid)
    if backfilled:
      self.counts[sid]["backfilled"] += 1
    else:
      self._sample(self.lag_ms, sid).add(float(lag_ms))
      emit_lag.observe(max(0, lag_ms) / 1000)
    try:
      window = Window(int(event["seq"]), json.dumps(event, separators=(",", ":")).encode())
    except (KeyError, TypeError, ValueError) as err:  # a window no client could read
      self._dropped(sid, 1, f"window cannot be serialised: {err!r}")
      return
    if not self.outbox.put(sid, window):
      return
    counts = self.counts[sid]
    counts["windows_out"] += 1
    counts["msgs_in"] += msgs_in
    windows.inc()
    msgs.inc(msgs_in)
    self.wake.set()

  def _children(self, sid: str) -> tuple[Any, Any, Any]:
    """Return the stream's Prometheus children (labels() per window costs more than the rest)."""
    got = self._prom.get(sid)
    if got is None:
      got = self._prom[sid] = (WINDOWS.labels(sid), MSGS_IN.labels(sid), EMIT_LAG.labels(sid))
    return got

  def count(self, sid: str, field: str, n: int) -> None:
    self.counts[sid][field] += n
    if field == "late":
      LATE.labels(sid).inc(n)

  def latency(self, track: TrackId, samples: list[float]) -> None:
    """Keep a feed's ingest-to-pane samples, per partition (each partition's pane record has
    its own): once per pane, whatever the number of streams using the feed."""
    recent = self.latency_ms.get(track)
    if recent is None:
      recent = self.latency_ms[track] = Recent(RESERVOIR)
    recent.extend(samples)
    hist = LATENCY.labels(track[1], str(track[0]))
    for sample in samples:
      hist.observe(sample / 1000)

  def forget(self, sid: str) -> None:
    self._prepared.discard(sid)
    self._drop_logged.discard(sid)
    self._fresh.discard(sid)
    self.outbox.forget(sid)
    stores: tuple[dict[str, Any], ...] = (self.counts, self.lag_ms, self._topics,
                                          self._partition, self._maxlen_trimmed, self._prom)  # fmt: skip
    for store in stores:
      store.pop(sid, None)
    self.tails.forget(sid)
    for metric in (WINDOWS, MSGS_IN, LATE, DROPPED, EMIT_LAG):
      with contextlib.suppress(KeyError):
        metric.remove(sid)

  def _sample(self, store: dict[str, Recent], sid: str) -> Recent:
    self._fresh.add(sid)
    recent = store.get(sid)
    if recent is None:
      recent = store[sid] = Recent(RESERVOIR)
    return recent

  def _dropped(self, sid: str, n: int, reason: str) -> None:
    """Count windows that will never be sent; log the first time per stream."""
    self.counts[sid]["dropped"] += n
    self.stats["dropped"] += n
    DROPPED.labels(sid).inc(n)
    if sid not in self._drop_logged:
      self._drop_logged.add(sid)
      log.error("stream %s: dropping %d window(s): %s (further drops counted in its metrics)",
                sid, n, reason)  # fmt: skip

  async def stop(self) -> None:
    """Close the producer, the admin client and Redis; safe to call twice."""
    for task in list(self._tasks):
      task.cancel()
    producer, self._producer = self._producer, None
    if producer is not None:
      await producer.stop()
    admin, self._admin = self._admin, None
    if admin is not None:
      await admin.stop()
    await self.tails.stop()
    client, self._redis = self._redis, None
    if client is not None:
      await client.aclose()

  # ------------------------------------------------------------------ Kafka

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
      # A short linger gathers the windows of many streams into one produce request.
      producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        linger_ms=2,
        max_request_size=max(1_048_576, self.outbox.max_window_bytes + 65_536),
      )
      await producer.start()
      if self._producer is None:
        self._producer = producer
      else:
        await producer.stop()  # another task got there first
    return self._producer

  async def prepare(self, sids: list[str]) -> None:
    """Make sure these streams' topics exist and their metadata is known before their first
    window; otherwise the first window of every new stream waits ~100 ms for both. One admin
    call for all of them.
    """
    producer = await self._started()
    async with self._admin_lock:
      admin = await self._admin_started()
      await admin.ensure([stream_topic(sid) for sid in sids])
    topics = [stream_topic(sid).name for sid in sids]
    await asyncio.gather(*(producer.partitions_for(topic) for topic in topics))
    tails = await self.tails.read(dict(zip(sids, topics, strict=True)))
    for sid, topic in zip(sids, topics, strict=True):
      if sid not in tails:
        continue  # taken over while its tail was read: read again
      self._topics[sid] = topic
      self._prepared.add(sid)
      self._note_tail(sid, tails[sid])
    self.wake.set()

  def _note_tail(self, sid: str, body: bytes | None) -> None:
    """Take the last window already in a stream's topic: what this worker must not send again.

    After a kill -9 or a move, stage 2 composes again the windows it sent but had not yet
    recorded as sent, possibly from more of the data; the copy in Kafka, which clients may
    have seen, stays the only one. The copy also goes to Redis (refused if already there), in
    case the crash came between Kafka and Redis.
    """
    if body is None:
      return
    try:
      seq = int(json.loads(body)["seq"])
    except (KeyError, TypeError, ValueError):
      return
    self.outbox.delivered(sid, seq)
    self.redis_queue.append((sid, Window(seq, body)))
    self.redis_ready.set()

  def moved(self, sids: list[str]) -> None:
    """These streams were just taken over: read their topic's tail again before sending."""
    self.tails.moved(sids)
    for sid in sids:
      self._topics.pop(sid, None)
      self._prepared.discard(sid)
      self.outbox.sent_seq.pop(sid, None)

  async def _admin_started(self) -> TopicAdmin:
    if self._admin is None:
      admin = TopicAdmin(settings.kafka_bootstrap)
      await admin.start()
      self._admin = admin
    return self._admin

  async def kafka_loop(self) -> None:
    """Send every stream's queued windows, each stream on its own, forever."""
    producer = await self._started()
    while True:
      self.wake.clear()
      for sid, batch in self.outbox.take_ready(self._topics.__contains__, BATCH_PER_STREAM):
        task = asyncio.create_task(self._deliver(producer, sid, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
      self._prepare_missing()
      timeout = self.outbox.next_retry_in()
      if self.outbox.pending.keys() - self._topics.keys():
        timeout = min(timeout if timeout is not None else 1.0, 1.0)
      with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(self.wake.wait(), timeout)

  def _prepare_missing(self) -> None:
    """Create the topics of streams with windows but no topic yet, in the background."""
    missing = [sid for sid in self.outbox.pending if sid not in self._topics]
    if not missing or self._preparing is not None or time.monotonic() < self._prepare_after:
      return

    async def run() -> None:
      try:
        await self.prepare(missing)
        self._prepare_attempt = 0
      except (KafkaError, OSError, TimeoutError) as err:
        self._prepare_attempt += 1
        delay = PREPARE_RETRY.delay(self._prepare_attempt)
        self._prepare_after = time.monotonic() + delay
        log.warning("sink: topics of %d streams not ready (%r); retrying in %.1fs",
                    len(missing), err, delay)  # fmt: skip
      finally:
        self._preparing = None
        self.wake.set()

    self._preparing = asyncio.create_task(run())

  async def _deliver(self, producer: AIOKafkaProducer, sid: str, batch: list[Window]) -> None:
    """Send one stream's batch in order; settle what went, what is dropped, what waits."""
    retry = batch
    try:
      retry = await self._send(producer, sid, batch)
    finally:
      delay = self.outbox.settle(sid, retry)
      self.wake.set()
    if delay is not None:
      self.stats["kafka_errors"] += 1
      self._warn(
        f"{len(retry)} window(s) of stream {sid} not in Kafka yet; retrying in {delay:.1f}s"
      )

  async def _send(self, producer: AIOKafkaProducer, sid: str, batch: list[Window]) -> list[Window]:
    """Send a batch; hand delivered windows to Redis and return those to send again."""
    topic, key = self._topics[sid], sid.encode()
    errors: list[BaseException | None] = [None] * len(batch)
    futures: list[tuple[int, asyncio.Future[Any]]] = []
    sent = len(batch)
    started = time.monotonic()
    for i, window in enumerate(batch):
      try:
        futures.append((i, await producer.send(topic, window.body, key=key)))
      except (KafkaError, OSError) as err:
        errors[i] = err
        if not is_poison(err):
          sent = i  # transient: this window and the rest wait, in order
          break
    results = await asyncio.gather(*(f for _, f in futures), return_exceptions=True)
    self.kafka_ack_ms.add((time.monotonic() - started) * 1000)
    for (i, _), result in zip(futures, results, strict=True):
      if isinstance(result, BaseException):
        if not isinstance(result, (KafkaError, OSError)):
          raise result
        errors[i] = result
    delivered: list[Window] = []
    retry: list[Window] = []
    for i, window in enumerate(batch):
      failure = errors[i] if i <= sent else None
      if i > sent or (failure is not None and not is_poison(failure)) or retry:
        # After a transient failure everything of this stream goes again, in order
        # (Redis and the gateway skip what was already there by `seq`).
        retry.append(window)
      elif failure is not None:
        self._dropped(sid, 1, f"Kafka refuses window {window.seq}: {failure!r}")
      else:
        delivered.append(window)
    if delivered:
      self.outbox.delivered(sid, delivered[-1].seq)
      self.redis_queue.extend((sid, w) for w in delivered)
      self.redis_ready.set()
    return retry

  def _warn(self, text: str) -> None:
    now = time.monotonic()
    if now - self._warned_at >= WARN_EVERY_SEC:
      self._warned_at = now
      log.warning("sink: %s (%d windows waiting in all)", text, self.outbox.waiting())

  # ------------------------------------------------------------------ Redis

  async def redis_loop(self) -> None:
    """Write delivered windows to the Redis rings, in order, retrying through outages."""
    while True:
      await self.redis_ready.wait()
      self.redis_ready.clear()
      while self.redis_queue:
        over = len(self.redis_queue) - REDIS_QUEUE_MAX
        for _ in range(max(0, over)):
          self.redis_queue.popleft()  # older than any ring would keep by now
        self.stats["redis_dropped"] += max(0, over)
        batch: list[tuple[str, Window]] = []
        size = 0
        while self.redis_queue and len(batch) < REDIS_BATCH and size < REDIS_BATCH_BYTES:
          batch.append(self.redis_queue.popleft())
          size += len(batch[-1][1].body)
        await self._to_redis(batch)

  async def _to_redis(self, batch: list[tuple[str, Window]]) -> None:
    attempt = 0
    while True:
      # Windows older than the ring would be trimmed at once: drop them instead of writing.
      min_id = int(time.time() * 1000) - settings.bond_ring_seconds * 1000
      batch = [(sid, w) for sid, w in batch if w.seq >= min_id]
      if not batch:
        return
      try:
        # One command for the whole batch (redis-py's cost is per command, not per byte).
        args: list[bytes | str | int] = [min_id]
        for _sid, w in batch:
          args += [f"{w.seq}-0", w.body]
        results = await self._script("rings", [stream_key(sid) for sid, _ in batch], args)
        self.stats["redis_dupes"] += results.count(1)  # already there (a window sent twice)
        self.stats["redis_errors"] += results.count(2)  # refused for good: retrying won't help
        await self._trim_maxlen({sid for sid, _ in batch})
        return
      except (RedisError, OSError) as err:
        self.stats["redis_errors"] += 1
        attempt += 1
        delay = REDIS_RETRY.delay(attempt)
        self._warn(f"Redis: {err}; {len(batch)} windows retry in {delay:.2f}s")
        await asyncio.sleep(delay)

  async def _trim_maxlen(self, sids: set[str]) -> None:
    """Trim rings to BOND_RING_MAXLEN now and then (the time bound is applied on every write)."""
    now = time.monotonic()
    due = [sid for sid in sids if now - self._maxlen_trimmed.get(sid, 0.0) >= MAXLEN_TRIM_SEC]
    if not due:
      return
    pipe = self.redis.pipeline(transaction=False)
    for sid in due:
      self._maxlen_trimmed[sid] = now
      pipe.xtrim(stream_key(sid), maxlen=settings.bond_ring_maxlen, approximate=True)
    await pipe.execute(raise_on_error=False)

  async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
    """Run one of SCRIPTS by its hash, loading it first (again after a Redis restart)."""
    for _ in range(2):
      sha = self._shas.get(name)
      if sha is None:
        sha = self._shas[name] = await self.redis.script_load(SCRIPTS[name])
      try:
        return await self.redis.evalsha(sha, len(keys), *keys, *args)  # type: ignore[misc]
      except NoScriptError:
        self._shas.pop(name, None)
    raise RedisError(f"script {name} could not be loaded")


sink = Sink()
