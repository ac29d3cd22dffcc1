"""Backfill: a new stream's past windows, recomputed from raw events by the live core.

The raw records of the stream's feeds, read from a point before the first backfilled window,
go through a private `Stage1` and `Stage2` exactly as live records do (the panes even make
the same JSON round trip as through `bond.panes`). Only the clock differs: while replaying,
the core's clock stands still at 0, so the watermark policy never sends a window early and a
window goes out only once every feed has passed its end (`complete: true`); what it holds
then depends only on the records, not on how fast or in which interleaving they were read:
recomputation gives the same windows. Once the reader has caught up with the raw topics the
caller moves the clock to the wall clock (`advance`), and windows whose feeds are still
behind are decided by the same policy as live ones (ARCHITECTURE.md "Backfill").
"""

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from bond.windowing.aggregators import REGISTRY, Registry
from bond.windowing.clock import stream_first_end
from bond.windowing.pane import PaneRecord
from bond.windowing.policy import WatermarkPolicy
from bond.windowing.stage1 import KeyState, Stage1
from bond.windowing.stage2 import Stage2, StreamDef

# Raw records are read from this long before the first backfilled window starts, so each
# feed's stage-1 state (its progress, what is late) is the live one by then.
DEFAULT_MARGIN_MS = 30_000


@dataclass(frozen=True, slots=True)
class BackfillPlan:
  """Which windows a stream's backfill computes: ends first_end_ms ... live_end_ms - size."""

  stream: StreamDef
  first_end_ms: int  # the end of the first backfilled window
  live_end_ms: int  # the end of the stream's first live window (not backfilled)
  margin_ms: int = DEFAULT_MARGIN_MS

  @property
  def size_ms(self) -> int:
    """Return the window size."""
    return self.stream.size_ms

  @property
  def total_windows(self) -> int:
    """Return how many windows the backfill sends."""
    return (self.live_end_ms - self.first_end_ms) // self.size_ms

  @property
  def last_end_ms(self) -> int:
    """Return the end (and seq) of the last backfilled window."""
    return self.live_end_ms - self.size_ms

  @property
  def read_from_ms(self) -> int:
    """Return the time from which raw records are read."""
    return self.first_end_ms - self.size_ms - self.margin_ms


def plan_backfill(
  d: StreamDef, seconds: int, pane_ms: int, margin_ms: int = DEFAULT_MARGIN_MS
) -> BackfillPlan:
  """Return the plan of `seconds` of history before the stream's first live window.

  The windows are whole: `seconds` rounds up to a whole number of windows.
  """
  live_end = stream_first_end(d.created_ms, d.size_ms, pane_ms)
  count = max(0, -(-seconds * 1000 // d.size_ms))
  return BackfillPlan(d, live_end - count * d.size_ms, live_end, margin_ms)


class _Collect:
  """The private stage 2's sink: keeps the planned windows, drops counters."""

  def __init__(self, plan: BackfillPlan) -> None:
    self.plan = plan
    self.windows: list[tuple[dict[str, Any], int]] = []
    self.last_seq = 0

  def emit(self, sid: str, event: dict[str, Any], msgs_in: int, lag_ms: int) -> None:
    seq = int(event["seq"])
    if self.plan.first_end_ms <= seq <= self.plan.last_end_ms:
      event["backfilled"] = True
      self.windows.append((event, msgs_in))
      self.last_seq = seq

  def count(self, sid: str, field: str, n: int) -> None:
    pass

  def latency(self, track: tuple[int, str], samples: list[float]) -> None:
    pass

  def forget(self, sid: str) -> None:
    pass


class BackfillRun:
  """Feeds raw records through a private stage 1 and stage 2 and collects the windows."""

  def __init__(
    self, plan: BackfillPlan, pane_ms: int, lateness_ms: int, registry: Registry = REGISTRY
  ) -> None:
    self.plan = plan
    self.pane_ms = pane_ms
    self.registry = registry
    self.now_ms = 0  # the core's clock: still while replaying, the wall clock once caught up
    d = plan.stream
    self.stream_id = d.stream_id
    self.feed_ids = {f.id for f in d.feeds}
    self.raw_keys = {f.raw_key for f in d.feeds}
    self.stage1 = Stage1(pane_ms, self._clock, registry, latency_samples=0)
    policy = WatermarkPolicy(lateness_ms=lateness_ms, pane_ms=pane_ms)
    policy.settled(0)
    # A stream whose first window is the first backfilled one, in a partition of its own.
    created = plan.first_end_ms - plan.size_ms - pane_ms
    self._def = replace(d, created_ms=created, backfill_sec=0)
    self.out = _Collect(plan)
    self.stage2 = Stage2(pane_ms=pane_ms, policy=policy, out=self.out, store={}, clock=self._clock,
                         partition_of=lambda _key: d.partition, registry=registry)  # fmt: skip
    self.stage2.assign([d.partition], [])
    self.stage2.set_streams({d.stream_id: self._def})
    self._keys: dict[tuple[str, str], KeyState] = {}
    self._offset = 0
    self._pane_offset = 0
    self.records = 0
    self.skipped = 0

  def _clock(self) -> int:
    return self.now_ms

  @property
  def done(self) -> bool:
    """Return whether every planned window was computed."""
    return self.plan.total_windows == 0 or self.out.last_seq >= self.plan.last_end_ms

  def add_batch(self, source: str, records: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """Apply a batch of (raw key, raw record) of one raw partition, in offset order.

    Like the live stage 1, panes are closed after the batch, not after each record.
    """
    dirty: dict[tuple[str, str], KeyState] = {}
    for key, raw in records:
      if key not in self.raw_keys:
        continue
      ident = (source, key)
      st = self._keys.get(ident)
      if st is None:
        st = self._keys[ident] = KeyState()
      dirty[ident] = st
      self._offset += 1
      try:
        self.stage1.apply(st, source, key, self._offset, raw)
        self.records += 1
      except (ValueError, KeyError, TypeError):
        self.skipped += 1
    out = []
    for st in dirty.values():
      for o in self.stage1.close(st):
        if o.feed_id not in self.feed_ids:
          continue
        rec = PaneRecord(o.feed_id, o.start_ms, o.pane, [self.stream_id], o.start_ms + self.pane_ms,
                         o.opened)  # fmt: skip
        # The same JSON round trip as through bond.panes, so the numbers are the live ones.
        wire = json.loads(json.dumps(rec.to_wire(), separators=(",", ":")))
        self._pane_offset += 1
        out.append((self._def.partition, self._pane_offset, PaneRecord.from_wire(wire)))
    if out:
      self.stage2.on_records(out)
      self.stage2.tick()

  def advance(self, now_ms: int) -> None:
    """Move the clock to the wall clock (the reader has caught up) and send what is due."""
    self.now_ms = max(self.now_ms, now_ms)
    self.stage2.tick()

  def take(self) -> list[tuple[dict[str, Any], int]]:
    """Return the windows computed since the last call, in seq order, with their events in."""
    out, self.out.windows = self.out.windows, []
    return out
