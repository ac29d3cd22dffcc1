"""Stage 2 adapter: feed `bond.panes` records to `bond.windowing.Stage2`, tick its deadline
heap, and keep it told which partitions and streams this worker owns (ARCHITECTURE.md
"Stage 2" and "When a window goes out").

Emission is driven by the panes and by a 20 ms timer that pops only the streams due, not by
Faust's window-close callback, which fires up to 30 s late. The core's state lives in the
changelog-backed `stage2` table, keyed so each key falls in its bond.panes partition.
"""

import asyncio
import json
import logging
import time
from typing import Any

from bond.agents.app import app, settings
from bond.agents.panes import PANE_MS, settled
from bond.agents.sink import sink
from bond.agents.state import partition_for, state
from bond.topics import PANES
from bond.windowing import PaneRecord, Stage2, WatermarkPolicy, WireError

log = logging.getLogger(__name__)

panes_in = app.topic(
  PANES.name, key_type=bytes, value_serializer="raw", partitions=PANES.partitions
)
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
                       partition_of=lambda key: partition_for(key, PANES.partitions))  # fmt: skip
    self.owned: frozenset[int] | None = None
    self._version = -1
    self._settled = asyncio.Event()
    self.writable = asyncio.Event()  # set once the producer knows the changelog's partitions

  def sync(self) -> bool:
    """Bring the core up to date with ownership and the registry; return whether settled."""
    if not settled() or not self.writable.is_set():
      self.policy.unsettled()
      self._settled.clear()
      return False
    self.policy.settled(now_ms())
    self._settled.set()
    if state.version != self._version:
      self._version = state.version
      self.core.set_streams(state.stream_defs())
    owned = frozenset(
      tp.partition for tp in app.assignor.assigned_actives() if tp.topic == PANES.name
    )
    if owned != self.owned:
      gained = owned - (self.owned or frozenset())
      self.owned = owned
      # The sink reads what the previous owner sent before sending any of their windows.
      sink.moved([sid for sid, d in state.stream_defs().items() if d.partition in gained])
      self.core.assign(owned, list(table.items()))
    return True

  def owns(self, stream_id: str) -> bool:
    """Return whether this worker owns the stream now (its bond.panes partition)."""
    if self.owned is None:
      return False
    d = state.stream_defs().get(stream_id)  # its partition, computed once per registry change
    part = d.partition if d is not None else partition_for(stream_id, PANES.partitions)
    return part in self.owned

  async def on_batch(self, messages: list[Any]) -> None:
    """Apply a batch of bond.panes messages (once ownership is known: none is dropped)."""
    while not self.sync():
      await self._settled.wait()  # set by the timer's sync once the worker settles
    records = []
    for msg in messages:
      try:
        records.append((msg.partition, msg.offset, PaneRecord.from_wire(json.loads(msg.value))))
      except (ValueError, WireError) as err:
        log.warning("panes: skipping record at offset %d: %s", msg.offset, err)
    self.core.on_records(records)


# The worker's stage-2 driver (its state is the `stage2` table; nothing to close on shutdown).
driver = WindowDriver()


def _owned(stream_id: str) -> bool:
  """Return whether this worker owns the stream (the sink asks, per stream)."""
  return driver.owns(stream_id)


@app.agent(panes_in, name="bond.stage2")
async def stage2(stream) -> None:  # type: ignore[no-untyped-def]
  """Merge closed panes into their streams' pending windows and emit what is complete."""
  await state.ready.wait()
  async for batch in stream.take_events(2000, within=0.005):
    await driver.on_batch([event.message for event in batch])


@app.timer(0.02)
async def deadline_timer() -> None:
  """Emit the windows whose time has come (lateness, quiet or dead feeds)."""
  if driver.sync():
    driver.core.tick()
