"""Audit windows against the raw trades they were made of: a recount per window.

A window is correct when it holds every trade its feeds received by its end plus the lateness,
may hold later ones the worker waited for, and holds nothing the raw topic lacks; when it is
short of on-time trades it must say so (`complete: false`). ARCHITECTURE.md "Windows under
faults". The chaos run (`make chaos`) audits every window of its trade streams with this.
"""

from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

# (exchange, symbol) -> [(event ts ms, amount, trade id, ts_ingest ms)]
Trades = dict[tuple[str, str], list[tuple[int, float, str | None, int]]]


@dataclass
class Recount:
  """A window's trades and volume recounted from the raw topic, all and on-time only."""

  n: int = 0
  vol: float = 0.0
  n_on_time: int = 0
  vol_on_time: float = 0.0

  def holds(self, trades: int, volume: float) -> bool:
    """Whether a window with these values has every on-time trade and nothing not raw.

    ARCHITECTURE.md: a window goes out once its lateness has passed; trades a feed received
    later (backfilled after a reconnect) are counted late, not merged. So a window must
    hold every trade received by its end plus the lateness, and may hold later ones the
    worker waited for, but nothing the raw topic does not have.
    """
    eps = 1e-6 * max(1.0, self.vol)
    return self.n_on_time <= trades <= self.n and self.vol_on_time - eps <= volume <= self.vol + eps

  def exact(self, trades: int, volume: float) -> bool:
    """Whether the window equals the recount of every raw trade."""
    return trades == self.n and abs(volume - self.vol) <= 1e-6 * max(1.0, self.vol)


class RawIndex:
  """Raw trades by (exchange, symbol), sorted by time, so every window is recounted cheaply."""

  def __init__(self, trades: Trades) -> None:
    self.rows = {key: sorted(rows, key=lambda r: r[0]) for key, rows in trades.items()}
    self.times = {key: [r[0] for r in rows] for key, rows in self.rows.items()}

  def recount(self, event: dict[str, Any], exchanges: list[str], lateness_ms: int) -> Recount:
    """Recount the trades and volume of an event's first symbol."""
    end = event["seq"]
    start = end - event["interval_sec"] * 1000
    out = Recount()
    for ex in exchanges:
      key = (ex, event["symbol"])
      times = self.times.get(key)
      if not times:
        continue
      rows = self.rows[key]
      for _ts, amount, _tid, ingest in rows[bisect_left(times, start) : bisect_left(times, end)]:
        out.n += 1
        out.vol += amount
        if ingest <= end + lateness_ms:
          out.n_on_time += 1
          out.vol_on_time += amount
    return out


def classify(event: dict[str, Any], got: Recount) -> str | None:
  """Return how a window's trades compare with the raw topic, or None when exact.

  - `raw_late`: short only of trades the feed received after the window's deadline (backfill),
    which the contract counts late;
  - `raw_flagged`: short of on-time trades, but the window says so (`complete: false`);
  - `raw_mismatch`: short of on-time trades (or holding trades the raw topic has not) and
    claiming to be complete: a failure of the chaos verdict.
  """
  trades, volume = event["trades"], event["volume_sum"]
  if got.exact(trades, volume):
    return None
  if got.holds(trades, volume):
    return "raw_late"
  return "raw_flagged" if event.get("complete") is False else "raw_mismatch"


def classify_empty(event: dict[str, Any], got: Recount | None) -> str | None:
  """Return what a window of a trading market with no trade in it is, or None if it has some.

  - `empty_sim_idle`: the raw topic holds no trade stamped in the window either, so the
    exchange made none there (the sim stamps a late tick's trades with the tick's time when
    its loop is held); the window is right. Trades lost before the raw topic are caught by
    their trade-id gaps, not here;
  - `empty_flagged`: no trade, and the window says it is not complete;
  - `empty`: no trade, claiming to be complete, while the exchange traded (or the raw topic
    could not be read, `got` None): a failure of the chaos verdict.
  """
  if event.get("trades"):
    return None
  if got is not None and got.n == 0:
    return "empty_sim_idle"
  return "empty_flagged" if event.get("complete") is False else "empty"
