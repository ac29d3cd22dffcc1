"""Backfill adapter: run the backfill of each new stream this worker owns (ARCHITECTURE.md
"Backfill").

The worker owning a stream's bond.panes partition owns its windows, so it runs its backfill:
stage 2 holds the stream's live windows (`Stage2.held`) until the backfilled ones are queued
on the same sink, in seq order, then releases them. Each backfill is a task of its own with
its own Kafka consumer (assigned, no group) reading the raw partitions of the stream's feeds
from a time before the first backfilled window, in bounded batches that yield to the event
loop; `BACKFILL_SLOTS` run at once per worker. Progress is a Redis hash (`wire.backfill_key`)
the API shows in GET /v1/streams/{id}.
"""

import asyncio
import contextlib
import json
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.exceptions import RedisError

from bond import wire
from bond.agents.app import app, settings
from bond.agents.panes import PANE_MS
from bond.agents.sink import sink
from bond.agents.state import partition_for
from bond.agents.windows import driver
from bond.topics import RAW_TOPICS
from bond.windowing.backfill import BackfillRun, plan_backfill

log = logging.getLogger(__name__)

BACKFILL_SLOTS = 1  # backfills running at once per worker
BATCH_RECORDS = 2000  # raw records per step; the event loop runs other tasks between steps
PROGRESS_EVERY_SEC = 0.5
SINK_HIGH_WATER = 5000  # queued windows: wait for the sink to drain before adding more
MAX_RUN_SEC = 3600.0  # a backfill still running after this fails (the live windows go on)


def now_ms() -> int:
  """Return the wall clock in epoch ms."""
  return int(time.time() * 1000)


async def _save(key: str, progress: dict[str, str | int]) -> None:
  await sink.redis.hset(key, mapping=progress)  # type: ignore[arg-type]  # dict keys invariant


def _text(value: bytes | str) -> str:
  return value.decode() if isinstance(value, bytes) else value


class Backfills:
  """Starts a task per held stream of this worker and releases the stream when it ends."""

  def __init__(self) -> None:
    self.slots = asyncio.Semaphore(BACKFILL_SLOTS)
    self.tasks: dict[str, asyncio.Task[None]] = {}

  def sync(self) -> None:
    """Start the backfills of held streams; stop those of streams no longer owned here."""
    core = driver.core
    for sid in list(self.tasks):
      if sid not in core.held:
        task = self.tasks.pop(sid)
        if not task.done():
          task.cancel()  # deleted or moved: its new owner runs it again
    for sid in sorted(core.held):
      if sid not in self.tasks:
        self.tasks[sid] = asyncio.ensure_future(self._guarded(sid))

  async def _guarded(self, sid: str) -> None:
    key = wire.backfill_key(sid)
    try:
      async with self.slots:
        await asyncio.wait_for(self._run(sid, key), MAX_RUN_SEC)
    except asyncio.CancelledError:
      raise
    except Exception as err:
      log.warning("backfill of %s failed: %r", sid, err)
      with contextlib.suppress(RedisError, OSError):
        await sink.redis.hset(key, mapping={"state": "failed", "error": repr(err)[:300]})
    finally:
      if self.tasks.get(sid) is asyncio.current_task():
        del self.tasks[sid]
      if sid in driver.core.held and driver.owns(sid):
        driver.core.release(sid)

  async def _run(self, sid: str, key: str) -> None:
    d = driver.core.defs.get(sid)
    if d is None:
      return
    done = await sink.redis.hgetall(key)
    found = {_text(k): _text(v) for k, v in done.items()}
    if found.get("state") in ("done", "failed"):
      return  # finished before this worker took the stream
    skip_upto = int(found.get("last_seq", 0))  # queued by an earlier owner
    plan = plan_backfill(d, d.backfill_sec, PANE_MS)
    run = BackfillRun(plan, PANE_MS, settings.bond_lateness_ms)
    progress: dict[str, str | int] = {
      "state": "running",
      "requested_sec": d.backfill_sec,
      "from_ms": plan.first_end_ms - plan.size_ms,
      "to_ms": plan.last_end_ms,
      "total_windows": plan.total_windows,
      "done_windows": 0,
      "last_seq": skip_upto,
      "started_ms": now_ms(),
    }
    await _save(key, progress)
    sources = {}
    tps = set()
    for feed in d.feeds:
      topic = RAW_TOPICS[feed.source]
      tp = TopicPartition(topic.name, partition_for(feed.raw_key, topic.partitions))
      tps.add(tp)
      sources[tp.topic] = feed.source
    consumer = AIOKafkaConsumer(
      bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
      consumer.assign(sorted(tps))
      starts = await consumer.offsets_for_times({tp: max(0, plan.read_from_ms) for tp in tps})
      for tp in sorted(tps):
        found_at = starts.get(tp)
        if found_at is None:
          await consumer.seek_to_end(tp)
        else:
          consumer.seek(tp, found_at.offset)
      log.info("backfill of %s: %d windows from %d, %d raw partitions", sid,
               plan.total_windows, plan.first_end_ms - plan.size_ms, len(tps))  # fmt: skip
      reported = 0.0
      while not run.done:
        batches = await consumer.getmany(timeout_ms=200, max_records=BATCH_RECORDS)
        for tp, msgs in sorted(batches.items()):
          run.add_batch(
            sources[tp.topic],
            ((m.key.decode() if m.key else "", json.loads(m.value)) for m in msgs),
          )
        if not batches:
          ends = await consumer.end_offsets(sorted(tps))
          if all([await consumer.position(tp) >= ends[tp] for tp in tps]):
            run.advance(now_ms())  # caught up: windows still waiting are decided as live ones
        for event, msgs_in in run.take():
          seq = int(event["seq"])
          if seq > skip_upto:
            sink.emit(sid, event, msgs_in=msgs_in, lag_ms=now_ms() - seq, backfilled=True)
            progress["last_seq"] = seq
          progress["done_windows"] = int(progress["done_windows"]) + 1
        if time.monotonic() - reported >= PROGRESS_EVERY_SEC or run.done:
          reported = time.monotonic()
          progress["records"] = run.records
          await _save(key, progress)
        # Yield: the live windows of other streams go first; let a long queue drain a little.
        await asyncio.sleep(0.05 if sink.outbox.waiting() > SINK_HIGH_WATER else 0)
    finally:
      await consumer.stop()
    progress.update(state="done", finished_ms=now_ms())
    await _save(key, progress)
    log.info("backfill of %s done: %d windows from %d raw records", sid,
             progress["done_windows"], run.records)  # fmt: skip


backfills = Backfills()


@app.timer(0.1)
async def backfill_timer() -> None:
  """Start the backfills of new streams this worker owns."""
  if driver.sync():
    backfills.sync()
