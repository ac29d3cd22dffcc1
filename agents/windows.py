"""Stage 2 adapter: read `bond.panes` in large batches into `bond.windowing.Stage2`, tick its
deadline heap, and keep it told which partitions and streams this worker owns (ARCHITECTURE.md
"Stage 2" and "When a window goes out").

Emission is driven by the panes and by a 20 ms timer that pops only the streams due, not by
Faust's window-close callback, which fires up to 30 s late. The core's state lives in the
changelog-backed `stage2` table, keyed so each key falls in its bond.panes partition.

The panes are read by one plain consumer, as stage 1 reads the raw topics: through a Faust
agent each record cost more than composing its windows, and at 100 streams panes reached
stage 2 seconds after they were sent. Partition *n* of bond.panes is read by the worker
whose stage-2 changelog partition *n* is active, from the position stored in the table after
the state it produced.
"""

import asyncio
import json
import logging
import time
from typing import Any

from aiokafka import TopicPartition

from bond.agents.app import app, settings
from bond.agents.outbox import Recent
from bond.agents.panes import PANE_MS, settled
from bond.agents.reading import TableReader, position, position_key
from bond.agents.sink import sink
from bond.agents.state import partition_for, state
from bond.topics import PANES
from bond.windowing import PaneRecord, Stage2, WatermarkPolicy, WireError

log = logging.getLogger(__name__)

STATE_FLUSH_MS = 200  # stage-2 state goes to its changelog at most this often
STATE_WRITES_PER_TICK = 100  # and at most this many writes per 20 ms tick
table = app.Table(
  "stage2",
  default=None,
  partitions=PANES.partitions,
  use_partitioner=True,
  key_type=bytes,  # raw keys, chosen by the core to fall in their bond.panes partition
)


def now_ms() -> int:
  """Return the wall clock in epoch ms (the clock the core is given)."""
  return int(time.time() * 1000)


class WindowDriver:
  """Moves records between Faust and the stage-2 core, and keeps it in step with the worker.

  Ownership (the bond.panes partitions assigned to this worker) is read once per batch or
  tick and handed to the core only when it changes (a rebalance); the stream registry is
  handed over only when its version changes.
  """

  def __init__(self) -> None:
    self.policy = WatermarkPolicy.from_settings(settings)
    self.core = Stage2(pane_ms=PANE_MS, policy=self.policy, out=sink, store=table, clock=now_ms,
                       partition_of=lambda key: partition_for(key, PANES.partitions),
                       flush_every_ms=STATE_FLUSH_MS, last_writes=self._position_writes,
                       auto_flush=False)  # fmt: skip
    # How far each partition was read since the last flush: stored after the state.
    self._positions: dict[int, int] = {}
    self.owned: frozenset[int] | None = None
    self._version = -1
    self.writable = asyncio.Event()  # set once the producer knows the changelog's partitions
    # How old the newest pane record of each batch is when stage 2 gets it (ms; /bond/stats).
    self.read_delay_ms = Recent(512)

  def sync(self) -> bool:
    """Bring the core up to date with ownership and the registry; return whether settled."""
    if not settled() or not self.writable.is_set():
      self.policy.unsettled()
      return False
    self.policy.settled(now_ms())
    if state.version != self._version:
      self._version = state.version
      self.core.set_streams(state.stream_defs())
    owned = owned_partitions()
    if owned != self.owned:
      gained = owned - (self.owned or frozenset())
      self.owned = owned
      # The sink reads what the previous owner sent before sending any of their windows.
      sink.moved([sid for sid, d in state.stream_defs().items() if d.partition in gained])
      self._positions.clear()  # the core drops what it did not store: both go back to the table
      self.core.assign(owned, list(table.items()))
    return True

  def owns(self, stream_id: str) -> bool:
    """Return whether this worker owns the stream now (its bond.panes partition)."""
    if self.owned is None:
      return False
    d = state.stream_defs().get(stream_id)  # its partition, computed once per registry change
    part = d.partition if d is not None else partition_for(stream_id, PANES.partitions)
    return part in self.owned

  def on_batch(self, messages: list[Any]) -> None:
    """Apply a batch of bond.panes records (aiokafka ConsumerRecords). How far each partition
    was read is stored with the next flush, after the state (same changelog partition)."""
    if messages:
      self.read_delay_ms.add(float(now_ms() - messages[-1].timestamp))
    records = []
    last: dict[int, int] = {}
    for msg in messages:
      last[msg.partition] = msg.offset
      try:
        records.append((msg.partition, msg.offset, PaneRecord.from_wire(json.loads(msg.value))))
      except (ValueError, WireError) as err:
        log.warning("panes: skipping record at offset %d: %s", msg.offset, err)
    self._positions.update(last)
    self.core.on_records(records)

  def _position_writes(self) -> list[tuple[bytes, Any]]:
    """Return how far each partition was read, as writes that go after a flush's state."""
    writes = [(position_key("panes", part, PANES.partitions), position(offset))
              for part, offset in self._positions.items()]  # fmt: skip
    self._positions.clear()
    return writes


def owned_partitions() -> frozenset[int]:
  """Return the bond.panes partitions this worker owns: its active stage-2 changelog ones."""
  changelog = table.changelog_topic.get_topic_name()
  return frozenset(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == changelog)


class PaneReader(TableReader):
  """Reads bond.panes for stage 2 in large batches, following the partitions the worker owns."""

  task_name = "stage 2"

  def __init__(self, driver: WindowDriver) -> None:
    super().__init__()
    self.driver = driver
    self.read_to: dict[int, int] = {}  # the next offset to read, per partition

  def lag(self) -> int | None:
    """Return how many records of the owned partitions are not read yet (None: not known)."""
    if self.consumer is None or not self.assigned:
      return None
    total = 0
    for tp in self.assigned:
      high = self.consumer.highwater(tp)
      if high is None or tp.partition not in self.read_to:
        return None
      total += max(0, high - self.read_to[tp.partition])
    return total

  async def _reassign(self, wanted: set[TopicPartition]) -> None:
    assert self.consumer is not None
    self.consumer.assign(sorted(wanted))
    for tp in wanted:
      await self.seek_stored(tp, table.get(position_key("panes", tp.partition, PANES.partitions)))
    self.read_to.clear()
    log.info("stage 2 reads %s", sorted(f"{tp.topic}:{tp.partition}" for tp in wanted))
    self.assigned = wanted

  async def run(self) -> None:
    """Read panes into the core until stopped."""
    await state.ready.wait()
    self.consumer = self.new_consumer()
    await self.consumer.start()
    try:
      while True:
        if not self.driver.sync():
          if self.assigned:
            self.consumer.assign([])
            self.assigned = set()
          await asyncio.sleep(0.05)
          continue
        wanted = {TopicPartition(PANES.name, p) for p in self.driver.owned or ()}
        if wanted != self.assigned:
          await self._reassign(wanted)
        if not self.assigned:
          await asyncio.sleep(0.1)
          continue
        batches = await self.consumer.getmany(timeout_ms=20, max_records=5000)
        owned = self.driver.owned
        if batches and self.driver.sync() and owned == {tp.partition for tp in self.assigned}:
          # (Ownership moved meanwhile: the batch is dropped and read again from the stored
          # positions after the reassignment.)
          self.driver.on_batch([m for records in batches.values() for m in records])
          for tp, records in batches.items():
            self.read_to[tp.partition] = records[-1].offset + 1
    finally:
      await self.consumer.stop()
      self.consumer = None


# The worker's stage-2 driver (its state is the `stage2` table) and the reader of its panes
# (started by ready.py once the registry is loaded, stopped on shutdown).
driver = WindowDriver()
reader = PaneReader(driver)


def _owned(stream_id: str) -> bool:
  """Return whether this worker owns the stream (the sink asks, per stream)."""
  return driver.owns(stream_id)


@app.timer(0.02)
async def deadline_timer() -> None:
  """Write a slice of stage 2's state (and take a new flush when it is all written and it is
  time), then emit the windows whose time has come (lateness, quiet or dead feeds).

  State goes out between emission rounds and in slices: each write is a changelog record,
  and hundreds at once held the loop for tens of ms, windows waiting behind them.
  """
  if driver.sync():
    core = driver.core
    if not core.write(STATE_WRITES_PER_TICK):
      core.maybe_flush(now_ms())  # written from the next tick on
    core.tick()
