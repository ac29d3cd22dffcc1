"""Test doubles for the window core: a settable clock, an in-memory store, a window sink."""

import zlib
from collections import defaultdict
from typing import Any

from bond.schemas import StreamSpec
from bond.windowing import Pane, PaneRecord, Stage1, Stage2, StreamDef, WatermarkPolicy, feeds_for

PARTITIONS = 4


class FakeClock:
  """Wall-clock ms that only moves when the test says so."""

  def __init__(self, now_ms: int) -> None:
    self.now_ms = now_ms

  def __call__(self) -> int:
    return self.now_ms


class DictStore(dict[bytes, Any]):
  """The changelog table stand-in: a dict of plain JSON data."""


class Out:
  """Collects what stage 2 sends: windows by stream, counters, forgotten streams."""

  def __init__(self) -> None:
    self.windows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    self.msgs_in: dict[str, int] = defaultdict(int)
    self.forgotten: list[str] = []

  def emit(self, sid: str, event: dict[str, Any], msgs_in: int, lag_ms: int) -> None:
    self.windows[sid].append(event)
    self.msgs_in[sid] += msgs_in

  def count(self, sid: str, field: str, n: int) -> None:
    self.counts[sid][field] += n

  def latency(self, track: tuple[int, str], samples: list[float]) -> None:
    pass

  def forget(self, sid: str) -> None:
    self.forgotten.append(sid)


def partition_of(key: bytes) -> int:
  return zlib.crc32(key) % PARTITIONS


def stream(sid: str, spec: dict[str, Any], created_ms: int, partition: int = 0) -> StreamDef:
  parsed = StreamSpec.model_validate(spec)
  return StreamDef(sid, parsed, tuple(feeds_for(parsed, ["ex"])), created_ms, partition)


def make_stage2(
  clock: FakeClock, store: DictStore | None = None, lateness_ms: int = 1000, pane_ms: int = 1000
) -> tuple[Stage2, Out, DictStore]:
  out, store = Out(), DictStore() if store is None else store
  policy = WatermarkPolicy(lateness_ms=lateness_ms, pane_ms=pane_ms)
  st2 = Stage2(pane_ms=pane_ms, policy=policy, out=out, store=store, clock=clock,
               partition_of=partition_of)  # fmt: skip
  return st2, out, store


def trade(
  ts: int, price: float, amount: float, ex: str = "ex", sym: str = "BTC/USDT"
) -> dict[str, Any]:
  return {
    "exchange": ex,
    "symbol": sym,
    "kind": "trade",
    "ts": ts,
    "price": price,
    "amount": amount,
  }


def heartbeat(ts: int, ex: str = "ex", sym: str = "BTC/USDT") -> dict[str, Any]:
  return {"heartbeat": True, "source": "ccxt", "exchange": ex, "symbol": sym, "ts": ts}


class Pipeline:
  """Stage 1 feeding stage 2 directly (what bond.panes carries between them), one partition."""

  def __init__(self, clock: FakeClock, defs: list[StreamDef], lateness_ms: int = 1000) -> None:
    self.clock = clock
    self.stage1 = Stage1(1000, clock)
    self.stage2, self.out, self.store = make_stage2(clock, lateness_ms=lateness_ms)
    self.stage2.policy.settled(clock() - 60_000)  # the worker has been up for a minute
    self.stage2.set_streams({d.stream_id: d for d in defs})
    self.stage2.assign([0], [])
    self.states: dict[str, Any] = {}
    self.offset = 0
    self.raw_offset = 0
    self.last_records: list[tuple[int, int, PaneRecord]] = []

  def records(self, outs: list[Any]) -> list[tuple[int, int, PaneRecord]]:
    recs = []
    for o in outs:
      self.offset += 1
      progress = None if o.partial else o.start_ms + 1000
      sids = [s for s, d in self.stage2.defs.items() if any(f.id == o.feed_id for f in d.feeds)]
      # the record carries a copy, as Kafka would
      pane = Pane.from_wire(o.pane.to_wire())
      recs.append(
        (0, self.offset, PaneRecord(o.feed_id, o.start_ms, pane, sids, progress, o.opened))
      )
    return recs

  def raw(self, source: str, key: str, *events: dict[str, Any]) -> None:
    from bond.windowing import KeyState

    st = self.states.setdefault(key, KeyState())
    # Live data: each event reaches the worker at its own time (the clock never goes back).
    self.clock.now_ms = max([self.clock.now_ms, *(int(ev["ts"]) for ev in events)])
    for ev in events:
      self.raw_offset += 1
      self.stage1.apply(st, source, key, self.raw_offset, ev)
    self.last_records = self.records(self.stage1.close(st))
    self.stage2.on_records(self.last_records)

  def partials(self, key: str, feed_id: str) -> None:
    self.stage2.on_records(self.records(self.stage1.partials(self.states[key], feed_id)))

  def live(self, key: str, until_ms: int, step_ms: int = 250, **where: str) -> None:
    """Let a live feed send heartbeats up to `until_ms`, the timer ticking in between."""
    t = self.clock.now_ms
    while t < until_ms:
      t = min(until_ms, t + step_ms)
      self.raw("ccxt", key, heartbeat(t, **where))
      self.stage2.tick()

  def at(self, now_ms: int) -> None:
    self.clock.now_ms = now_ms
    self.stage2.tick()
