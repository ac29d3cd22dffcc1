"""Stage 1 adapter: read the raw topics in large batches, drive `bond.windowing.Stage1`, send
the panes it closes to `bond.panes` (ARCHITECTURE.md "Stage 1").

State per raw-topic key (a `KeyState`) lives in a changelog-backed table, together with each
raw partition's read position, so a restarted worker recovers it; records replayed after a
crash are skipped by offset, so nothing is counted twice.
"""

import asyncio
import json
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from bond.agents.app import app, settings
from bond.agents.outbox import Recent
from bond.agents.reading import TableReader, position, position_key
from bond.agents.state import state
from bond.connectors.backoff import Backoff
from bond.topics import PANES, RAW_TOPICS
from bond.windowing import KeyState, PaneOut, PaneRecord, Stage1, WireError

log = logging.getLogger(__name__)

PANE_MS = settings.bond_pane_ms
PARTIAL_CHECK_MS = 100
STATE_FLUSH_MS = 200
SEND_RETRY = Backoff(base_sec=0.1, max_sec=2.0, jitter=0.2)

TABLES = {
  source: app.Table(
    f"stage1-{source}",
    default=None,
    partitions=spec.partitions,
    use_partitioner=True,
    key_type=bytes,  # raw keys: a key's changelog partition is its raw partition
  )
  for source, spec in RAW_TOPICS.items()
}


def now_ms() -> int:
  """Return the wall clock in epoch ms (the clock the core is given)."""
  return int(time.time() * 1000)


def settled() -> bool:
  """Return whether the registry is loaded and no rebalance or table recovery is under way."""
  recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
  return state.ready.is_set() and recovered and not app.rebalancing and not app.in_recovery


class RawReader(TableReader):
  """Reads the raw topics for stage 1, following the Faust assignment of the stage-1 tables.

  Faust's per-message machinery costs more than the aggregation itself, so the raw topics
  are read in large batches by one plain consumer. A raw partition is read by the worker
  whose stage-1 changelog partition of the same number is active, so state and input move
  together on a rebalance. Each partition's position is stored in the table after the key
  states of the batch, in the same changelog partition (the key is chosen to hash there),
  so a recovered position never runs ahead of the state.
  """

  task_name = "stage 1"

  def __init__(self) -> None:
    super().__init__()
    self.core = Stage1(PANE_MS, now_ms)
    self.producer: AIOKafkaProducer | None = None
    self.sources = {spec.name: source for source, spec in RAW_TOPICS.items()}
    self.partials_checked = 0
    self.stats: dict[str, int] = {"panes_out": 0, "partials_out": 0}
    self.pos_keys = {
      (source, p): position_key(source, p, spec.partitions)
      for source, spec in RAW_TOPICS.items()
      for p in range(spec.partitions)
    }
    # Key states and read positions changed since the last write to the table.
    self._pending: dict[tuple[str, str], KeyState] = {}
    self._positions: dict[tuple[str, int], int] = {}
    self._flushed_ms = 0
    # How old the newest raw record of each batch is when stage 1 reads it (ms): shown in
    # /bond/stats, it tells a worker that falls behind its input from one that keeps up.
    self.read_delay_ms = Recent(512)

  def counters(self) -> dict[str, int | float | None]:
    """Return stage 1's counters (the core's and the adapter's) and its read delay."""
    return {**self.core.stats, **self.stats, **self.read_delay_ms.summary("read_delay")}

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

  def _state(self, source: str, key: str) -> KeyState:
    pending = self._pending.get((source, key))
    if pending is not None:
      return pending
    data = TABLES[source].get(key.encode())
    if data is None:
      return KeyState()
    try:
      return KeyState.from_wire(data)
    except WireError as err:
      log.warning("stage 1: state of %s/%s unreadable (%s); starting it afresh", source, key, err)
      return KeyState()

  async def _reassign(self, wanted: set[TopicPartition]) -> None:
    assert self.consumer is not None
    self.consumer.assign(sorted(wanted))
    for tp in wanted:
      source = self.sources[tp.topic]
      await self.seek_stored(tp, TABLES[source].get(self.pos_keys[(source, tp.partition)]))
    log.info("stage 1 reads %s", sorted(f"{tp.topic}:{tp.partition}" for tp in wanted))
    self.assigned = wanted
    self.core.forget_quiet()

  async def run(self) -> None:
    """Read, aggregate and close panes until stopped."""
    await state.ready.wait()
    self.consumer = self.new_consumer()
    self.producer = AIOKafkaProducer(
      bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=2, enable_idempotence=True
    )
    await self.consumer.start()
    await self.producer.start()
    try:
      while True:
        if not settled():
          if self.assigned:
            self._discard_state()
            self.consumer.assign([])
            self.assigned = set()
          await asyncio.sleep(0.05)
          continue
        wanted = self.wanted()
        if wanted != self.assigned:
          self._discard_state()
          await self._reassign(wanted)
        if not self.assigned:
          await asyncio.sleep(0.1)
          continue
        batches = await self.consumer.getmany(timeout_ms=20, max_records=20_000)
        if batches:
          await self._process(batches)
        self._flush_state()
        await self._send_partials()
    finally:
      await self.consumer.stop()
      self.consumer = None
      await self.producer.stop()
      self.producer = None

  def _records(self, outs: list[PaneOut]) -> list[tuple[int, bytes]]:
    """Return the bond.panes records of these panes: one per partition, naming its streams."""
    out = []
    for o in outs:
      progress = None if o.partial else o.start_ms + PANE_MS
      # The pane's own end: a later pane of the same batch may not have arrived yet.
      for part, sids in state.feed_partitions(o.feed_id, PANES.partitions).items():
        rec = PaneRecord(o.feed_id, o.start_ms, o.pane, sids, progress, o.opened)
        out.append((part, json.dumps(rec.to_wire(), separators=(",", ":")).encode()))
    return out

  async def _send(self, sends: list[tuple[int, bytes]]) -> int:
    """Send pane records and wait until Kafka has them all (the state that says they were
    sent is written after). Its own producer: Faust's send path cost more than the panes."""
    if not sends:
      return 0
    assert self.producer is not None
    attempt = 0
    while True:
      try:
        futures = [
          await self.producer.send(PANES.name, value, key=b"p%d" % part, partition=part)
          for part, value in sends
        ]
        await asyncio.gather(*futures)
        return len(futures)
      except KafkaError as err:
        # Sent again whole: stage 2 skips a closed pane it already has (ARCHITECTURE.md).
        attempt += 1
        delay = SEND_RETRY.delay(attempt)
        log.warning("stage 1: sending %d panes failed (%r); again in %.1fs", len(sends), err, delay)
        await asyncio.sleep(delay)

  async def _process(self, batches: dict[TopicPartition, list[Any]]) -> None:
    """Apply a fetch of every raw partition, send the panes it closed in one go, and only
    then keep the states and positions that say they were sent."""
    stats = self.core.stats
    stats["first_batch_ms"] = stats.get("first_batch_ms") or now_ms()
    started = time.perf_counter()
    applied: list[tuple[str, int, int, dict[str, KeyState]]] = []
    outs: list[PaneOut] = []
    for tp, records in batches.items():
      source = self.sources[tp.topic]
      self.read_delay_ms.add(float(now_ms() - records[-1].timestamp))
      dirty = self._apply(source, records)
      for st in dirty.values():
        outs += self.core.close(st)
      applied.append((source, tp.partition, records[-1].offset, dirty))
    sends = self._records(outs)
    busy = time.perf_counter() - started  # sending yields to other tasks: not counted
    # The panes must be in Kafka before the state that says they were sent.
    self.stats["panes_out"] += await self._send(sends)
    for source, partition, offset, dirty in applied:
      for key, st in dirty.items():
        self._pending[(source, key)] = st
      self._positions[(source, partition)] = offset
    stats["last_batch_ms"] = now_ms()
    stats["busy_us"] = stats.get("busy_us", 0) + int(busy * 1e6)

  def _apply(self, source: str, records: list[Any]) -> dict[str, KeyState]:
    """Apply one partition's records to their keys' states; return the states touched."""
    dirty: dict[str, KeyState] = {}
    for msg in records:
      key = msg.key.decode() if msg.key is not None else ""
      st = dirty.get(key)
      if st is None:
        st = dirty[key] = self._pending.get((source, key)) or self._state(source, key)
      try:
        self.core.apply(st, source, key, msg.offset, json.loads(msg.value))
      except (ValueError, KeyError, TypeError) as err:
        log.warning("%s: skipping malformed record at offset %d: %s", msg.topic, msg.offset, err)
    return dirty

  def _discard_state(self) -> None:
    """Forget what was not written yet: partitions may be moving, so nothing is written now.

    Every partition is read again from its stored position (kept or moved alike); the panes
    re-sent that way are skipped by stage 2.
    """
    self._pending.clear()
    self._positions.clear()

  def _flush_state(self, force: bool = False) -> None:
    """Write the changed key states, then the read positions, to the changelog table.

    At most every STATE_FLUSH_MS: a changelog record per raw key per batch would flood the
    producer. A crash loses at most that much state; the raw records after the stored
    position are read again and their panes re-sent, which stage 2 recognises and skips.
    """
    now = now_ms()
    if not force and now - self._flushed_ms < STATE_FLUSH_MS:
      return
    self._flushed_ms = now
    for (source, key), st in self._pending.items():
      TABLES[source][key.encode()] = st.to_wire()
    for (source, partition), offset in self._positions.items():
      TABLES[source][self.pos_keys[(source, partition)]] = position(offset)
    self._pending.clear()
    self._positions.clear()

  async def _send_partials(self) -> None:
    """Send what the open panes of quiet feeds hold so far (see `Stage1.partials`)."""
    now = now_ms()
    if now - self.partials_checked < PARTIAL_CHECK_MS:
      return
    self.partials_checked = now
    outs: list[PaneOut] = []
    for source, key, feed_id in self.core.quiet():
      outs += self.core.partials(self._state(source, key), feed_id)
    self.stats["partials_out"] += await self._send(self._records(outs))


# The worker's stage-1 reader: started by ready.py once the registry is loaded, stopped on
# shutdown; feeds.py follows its raw-partition ownership.
reader = RawReader()
