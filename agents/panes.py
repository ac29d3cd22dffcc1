"""Stage 1: aggregate every raw event once, per feed, into 1 s panes; send closed panes on.

State per raw-topic key lives in a changelog-backed table (so a restarted worker recovers
it) together with the offset of the last record applied: records replayed after a crash
are skipped, so nothing is counted twice. A pane closes when its feed's progress (an event
or heartbeat timestamp) passes its end; every closed pane, empty ones too, goes to
`bond.panes` once for each stream that uses the feed.
"""

import asyncio
import json
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bond.agents.app import app, settings
from bond.agents.state import partition_for, state
from bond.aggregate import feed_of_raw, pane_add, window_start
from bond.topics import PANES, RAW_TOPICS

log = logging.getLogger(__name__)

PANE_MS = settings.bond_pane_ms
MAX_EMPTY_PANES = 3600  # after a long silence, jump ahead rather than emit hours of empty panes
LAT_SAMPLES = 8
# A feed with no event for this long has its open panes sent as partial (see `_partials`):
# live feeds send an event or a heartbeat at least every 250 ms.
QUIET_MS = 300
PARTIAL_CHECK_MS = 100

panes_topic = app.topic(
  PANES.name, key_type=str, value_serializer="raw", partitions=PANES.partitions
)
stats: dict[str, int] = {"events": 0, "late": 0, "replayed": 0, "panes_out": 0}
late_by_feed: dict[str, int] = {}


def _apply(
  source: str, st: dict[str, Any], key: str, raw: dict[str, Any], now_ms: int
) -> str | None:
  """Apply one raw record to its feed's panes; return the feed id if a pane took it."""
  feed = feed_of_raw(source, raw, key)
  fs = st["feeds"].get(feed.id)
  ts = int(raw["ts"])
  if fs is None:
    # Start one (empty) pane back, so even a feed first heard of through a heartbeat
    # closes a pane at once and tells stage 2 how far it has got.
    fs = st["feeds"][feed.id] = {"p": 0, "c": window_start(ts, PANE_MS) - PANE_MS, "panes": {}}
  if raw.get("heartbeat"):
    fs["p"] = max(fs["p"], ts)
    return None
  stats["events"] += 1
  if ts < fs["c"]:
    stats["late"] += 1
    late_by_feed[feed.id] = late_by_feed.get(feed.id, 0) + 1
    return None
  pane = fs["panes"].setdefault(str(window_start(ts, PANE_MS)), {})
  pane_add(pane, source, raw)
  ingest = raw.get("ts_ingest")
  if ingest:
    lat = pane.setdefault("lat", [])
    if len(lat) < LAT_SAMPLES:
      lat.append(max(0, now_ms - int(ingest)))
  fs["p"] = max(fs["p"], ts)
  return feed.id


def _pane_records(
  feed_id: str, start: int, pane: dict[str, Any], partial: bool
) -> list[tuple[int, bytes]]:
  """Return the bond.panes records of one pane: one per partition, naming its streams there."""
  out = []
  for part, sids in state.feed_partitions(feed_id, PANES.partitions).items():
    body: dict[str, Any] = {"f": feed_id, "s": start, "e": start + PANE_MS, "a": pane, "sids": sids}
    if partial:
      body["partial"] = True  # what the pane holds so far; claims no progress
    else:
      body["p"] = start + PANE_MS  # progress: this pane's own end
    out.append((part, json.dumps(body, separators=(",", ":")).encode()))
  return out


def _partials(st: dict[str, Any], feed_id: str) -> list[tuple[int, bytes]]:
  """Return records of what a quiet feed's open panes hold so far.

  A pane closes only when its feed's progress passes its end. When a feed goes quiet in
  the middle of a pane (its connection dropped, its exchange stopped), the trades already
  in that pane would reach stage 2 only when the feed comes back, after its windows went
  out as the lateness demands. Sent as partial, they are in those windows; the closed pane
  replaces them later, and whatever it adds to a window already out is counted late.
  """
  fs = st["feeds"].get(feed_id)
  if fs is None:
    return []
  out = []
  for start, pane in fs["panes"].items():
    if pane and int(start) >= fs["c"]:
      out += _pane_records(feed_id, int(start), {k: v for k, v in pane.items() if k != "lat"}, True)
  return out


def _close(st: dict[str, Any]) -> list[tuple[int, bytes]]:
  """Close every pane whose feed progressed past its end; return (stream_id, record) pairs."""
  out: list[tuple[int, bytes]] = []
  for feed_id, fs in st["feeds"].items():
    upto = window_start(fs["p"], PANE_MS)  # panes ending at or before progress are complete
    if upto <= fs["c"]:
      continue
    start = fs["c"]
    if (upto - start) // PANE_MS > MAX_EMPTY_PANES:
      start = max(start, upto - MAX_EMPTY_PANES * PANE_MS)
    panes = fs["panes"]
    while start < upto:
      # One record per bond.panes partition, naming the streams of that partition that use
      # the feed: stage 2 then reads one record per pane, not one per stream.
      # Progress is this pane's own end: a later pane of the same batch may not have arrived yet.
      out += _pane_records(feed_id, start, panes.pop(str(start), None) or {}, False)
      start += PANE_MS
    for stale in [k for k in panes if int(k) < upto]:
      panes.pop(stale)
    fs["c"] = upto
  return out


TABLES = {
  source: app.Table(
    f"panes-{source}",
    default=None,
    partitions=spec.partitions,
    use_partitioner=True,
    key_type=bytes,  # raw keys: a key's changelog partition is its raw partition
  )
  for source, spec in RAW_TOPICS.items()
}


def position_key(source: str, partition: int) -> bytes:
  """Return a table key that lands in `partition`, holding that raw partition's read position."""
  for n in range(10_000):
    key = f"\x00pos:{source}:{partition}:{n}"
    if partition_for(key, RAW_TOPICS[source].partitions) == partition:
      return key.encode()
  raise AssertionError("no position key found")  # cannot happen: murmur2 spreads keys evenly


class RawReader:
  """Reads the raw topics for stage 1, following the Faust assignment of the pane tables.

  Faust's per-message machinery costs more than the aggregation itself, so the raw
  topics are read in large batches by one plain consumer. A raw partition is read by
  the worker whose pane-table changelog partition of the same number is active, so
  state and input move together on a rebalance. Each partition's position is stored in
  the table after the key states of the batch, in the same changelog partition (the key
  is chosen to hash there), so a recovered position never runs ahead of the state.
  """

  def __init__(self) -> None:
    self.consumer: AIOKafkaConsumer | None = None
    self.assigned: set[TopicPartition] = set()
    self.sources = {spec.name: source for source, spec in RAW_TOPICS.items()}
    # (source, raw key, feed id) -> when a pane of that feed last took an event (wall ms)
    self.touched: dict[tuple[str, str, str], int] = {}
    self.partials_checked = 0
    self.pos_keys = {
      (source, p): position_key(source, p)
      for source, spec in RAW_TOPICS.items()
      for p in range(spec.partitions)
    }

  def wanted(self) -> set[TopicPartition]:
    """Return the raw partitions this worker owns now."""
    actives = app.assignor.assigned_actives()
    out = set()
    for source, table in TABLES.items():
      changelog = table.changelog_topic.get_topic_name()
      for tp in actives:
        if tp.topic == changelog:
          out.add(TopicPartition(RAW_TOPICS[source].name, tp.partition))
    return out

  async def _reassign(self, wanted: set[TopicPartition]) -> None:
    assert self.consumer is not None
    self.consumer.assign(sorted(wanted))
    for tp in wanted:
      record = TABLES[self.sources[tp.topic]].get(
        self.pos_keys[(self.sources[tp.topic], tp.partition)]
      )
      if record is None:
        await self.consumer.seek_to_beginning(tp)
      else:
        self.consumer.seek(tp, record["pos"] + 1)
    log.info("stage 1 reads %s", sorted(f"{tp.topic}:{tp.partition}" for tp in wanted))
    self.assigned = wanted
    self.touched.clear()

  async def run(self) -> None:
    """Read, aggregate and close panes forever."""
    await state.ready.wait()
    self.consumer = AIOKafkaConsumer(
      bootstrap_servers=settings.kafka_bootstrap,
      enable_auto_commit=False,
      auto_offset_reset="earliest",
      max_partition_fetch_bytes=4 * 1024 * 1024,
      fetch_max_wait_ms=5,
    )
    await self.consumer.start()
    try:
      while True:
        if not settled():
          if self.assigned:
            self.consumer.assign([])
            self.assigned = set()
          await asyncio.sleep(0.05)
          continue
        wanted = self.wanted()
        if wanted != self.assigned:
          await self._reassign(wanted)
        if not self.assigned:
          await asyncio.sleep(0.1)
          continue
        batches = await self.consumer.getmany(timeout_ms=20, max_records=20_000)
        for tp, records in batches.items():
          await self._process(self.sources[tp.topic], tp.partition, records)
        await self._send_partials()
    finally:
      await self.consumer.stop()

  async def _process(self, source: str, partition: int, records: list[Any]) -> None:
    table = TABLES[source]
    now_ms = int(time.time() * 1000)
    stats["first_batch_ms"] = stats.get("first_batch_ms") or now_ms
    started = time.perf_counter()
    dirty: dict[str, dict[str, Any]] = {}
    for msg in records:
      key = msg.key.decode() if msg.key is not None else ""
      st = dirty.get(key)
      if st is None:
        st = dirty[key] = table.get(key.encode()) or {"off": -1, "feeds": {}}
      if msg.offset <= st["off"]:
        stats["replayed"] += 1  # already in the state recovered after a crash
        continue
      st["off"] = msg.offset
      try:
        feed_id = _apply(source, st, key, json.loads(msg.value), now_ms)
      except (ValueError, KeyError, TypeError) as err:
        log.warning("%s: skipping malformed record at offset %d: %s", msg.topic, msg.offset, err)
        continue
      if feed_id is not None:
        self.touched[(source, key, feed_id)] = now_ms
    sends = []
    for st in dirty.values():
      sends += _close(st)
    busy = time.perf_counter() - started  # sending yields to other tasks: not counted
    # The panes must be in Kafka before the state that says they were sent.
    futures = [
      await panes_topic.send(key=b"p%d" % part, value=value, partition=part)
      for part, value in sends
    ]
    if futures:
      await asyncio.gather(*futures)
    stats["panes_out"] += len(futures)
    started = time.perf_counter()
    for key, st in dirty.items():
      table[key.encode()] = st
    table[self.pos_keys[(source, partition)]] = {"pos": records[-1].offset}
    stats["last_batch_ms"] = int(time.time() * 1000)
    busy += time.perf_counter() - started  # waiting for the pane acks is not stage 1's work
    stats["busy_us"] = stats.get("busy_us", 0) + int(busy * 1e6)

  async def _send_partials(self) -> None:
    """Send what the open panes of feeds quiet for QUIET_MS hold so far (see `_partials`)."""
    now_ms = int(time.time() * 1000)
    if now_ms - self.partials_checked < PARTIAL_CHECK_MS:
      return
    self.partials_checked = now_ms
    sends = []
    for entry, last in list(self.touched.items()):
      if now_ms - last < QUIET_MS:
        continue
      del self.touched[entry]  # once per quiet spell: a new event re-arms it
      source, key, feed_id = entry
      st = TABLES[source].get(key.encode())
      if st is not None:
        sends += _partials(st, feed_id)
    futures = [
      await panes_topic.send(key=b"p%d" % part, value=value, partition=part)
      for part, value in sends
    ]
    if futures:
      await asyncio.gather(*futures)
      stats["partials_out"] = stats.get("partials_out", 0) + len(futures)


def settled() -> bool:
  """Return whether the registry is loaded and no rebalance or table recovery is under way."""
  recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
  return state.ready.is_set() and recovered and not app.rebalancing and not app.in_recovery


reader = RawReader()


@app.task
async def stage1() -> None:
  """Run stage 1 for the raw partitions this worker owns."""
  await reader.run()
