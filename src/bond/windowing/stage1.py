"""Stage 1: aggregate every raw event once, per feed, into aligned panes; close them on progress.

State is kept per raw-topic key (one `KeyState`: the offset of the last record applied and,
per feed of that key, its progress and open panes). A pane closes when its feed's progress
(an event or heartbeat timestamp) passes its end; closed panes, empty ones too, are what
stage 2 composes windows from. A feed quiet for `quiet_ms` in the middle of a pane has what
its open panes hold sent as partial panes (see `partials`).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bond.windowing.aggregators import REGISTRY, Registry
from bond.windowing.clock import Clock, window_start
from bond.windowing.feeds import feed_of_raw
from bond.windowing.pane import Pane, WireError

STATE_VERSION = 1


@dataclass(slots=True)
class FeedPanes:
  """One feed's stage-1 state: how far it got and the panes not closed yet."""

  progress_ms: int  # the latest event or heartbeat time seen
  closed_until_ms: int  # panes starting before this have been closed and sent
  panes: dict[int, Pane] = field(default_factory=dict)  # pane start -> open pane


@dataclass(slots=True)
class KeyState:
  """The stage-1 state of one raw-topic key (a changelog table value)."""

  offset: int = -1  # the last raw record applied: replayed records up to it are skipped
  feeds: dict[str, FeedPanes] = field(default_factory=dict)

  def to_wire(self) -> list[Any]:
    """Return [version, offset, {feed id: [progress_ms, closed_until_ms, [[start, pane]...]]}]."""
    return [
      STATE_VERSION,
      self.offset,
      {
        fid: [fp.progress_ms, fp.closed_until_ms, [[s, p.to_wire()] for s, p in fp.panes.items()]]
        for fid, fp in self.feeds.items()
      },
    ]

  @classmethod
  def from_wire(cls, data: Any) -> "KeyState":
    """Return the state from `to_wire`'s data; raise WireError if it is not one."""
    if not isinstance(data, list) or not data or data[0] != STATE_VERSION:
      raise WireError(f"not a version {STATE_VERSION} stage-1 state")
    try:
      feeds = {
        str(fid): FeedPanes(int(prog), int(closed), {int(s): Pane.from_wire(p) for s, p in panes})
        for fid, (prog, closed, panes) in data[2].items()
      }
      return cls(int(data[1]), feeds)
    except (TypeError, ValueError, AttributeError) as err:
      raise WireError(f"malformed stage-1 state: {err!r}") from err


@dataclass(slots=True)
class PaneOut:
  """A pane leaving stage 1: closed (final; proves progress to its end) or partial."""

  feed_id: str
  start_ms: int
  pane: Pane
  partial: bool = False
  # Nothing is known of its time: the empty pane opened one back for a feed just heard of,
  # or a pane of a silence (`Stage1.gap_ms`) when nothing was heard of the feed at all.
  opened: bool = False


class Stage1:
  """Applies raw events to their feeds' panes and closes panes as feeds progress."""

  def __init__(
    self,
    pane_ms: int,
    clock: Clock,
    registry: Registry = REGISTRY,
    max_empty_panes: int = 3600,
    latency_samples: int = 8,
    quiet_ms: int = 300,
    gap_ms: int = 10_000,
  ) -> None:
    self.pane_ms = pane_ms
    self.clock = clock
    self.registry = registry
    # After a long silence, jump ahead rather than close hours of empty panes.
    self.max_empty_panes = max_empty_panes
    self.latency_samples = latency_samples
    # Live feeds send an event or a heartbeat at least every 250 ms.
    self.quiet_ms = quiet_ms
    self.stats: dict[str, int] = {"events": 0, "late": 0, "replayed": 0}
    self.late_by_feed: dict[str, int] = {}
    # (source, raw key, feed id) -> when a pane of that feed last took an event (wall ms)
    self._touched: dict[tuple[str, str, str], int] = {}
    # feed id -> start of the pane opened back when the feed was first heard of, until it closes
    self._opened: dict[str, int] = {}
    # A feed that said nothing, not even a heartbeat, for longer than this (in its own time)
    # was not heard: the worker or the feed was down, its connection lost. The panes of that
    # silence are closed `opened`, so the windows holding them say the feed is missing rather
    # than pass for a quiet market (the trades the feed backfilled after it are kept).
    self.gap_ms = gap_ms
    # feed id -> [first, last) pane starts of its last silence, until they are closed
    self._gaps: dict[str, tuple[int, int]] = {}

  def apply(
    self, st: KeyState, source: str, key: str, offset: int, raw: Mapping[str, Any]
  ) -> str | None:
    """Apply one raw record at `offset`; return the feed id if a pane took it as an event.

    Records at or before the state's offset were applied before a restart and are skipped.
    Raises KeyError, ValueError or TypeError for a malformed record (its offset still counts
    as applied, so it is skipped once).
    """
    if offset <= st.offset:
      self.stats["replayed"] += 1
      return None
    st.offset = offset
    feed = feed_of_raw(source, raw, key)
    ts_ms = int(raw["ts"])
    fp = st.feeds.get(feed.id)
    if fp is None:
      # Start one (empty) pane back, so even a feed first heard of through a heartbeat
      # closes a pane at once and tells stage 2 how far it has got.
      fp = st.feeds[feed.id] = FeedPanes(0, window_start(ts_ms, self.pane_ms) - self.pane_ms)
      self._opened[feed.id] = fp.closed_until_ms
    if fp.progress_ms and ts_ms - fp.progress_ms > self.gap_ms:
      silent = (window_start(fp.progress_ms, self.pane_ms), window_start(ts_ms, self.pane_ms))
      self._gaps[feed.id] = silent
    if raw.get("heartbeat"):
      fp.progress_ms = max(fp.progress_ms, ts_ms)
      return None
    self.stats["events"] += 1
    if ts_ms < fp.closed_until_ms:
      self.stats["late"] += 1
      self.late_by_feed[feed.id] = self.late_by_feed.get(feed.id, 0) + 1
      return None
    start = window_start(ts_ms, self.pane_ms)
    pane = fp.panes.get(start)
    if pane is None:
      pane = fp.panes[start] = Pane()
    pane.add(source, raw, self.registry)
    ingest = raw.get("ts_ingest")
    now_ms = self.clock()
    if ingest and len(pane.latency_ms) < self.latency_samples:
      pane.latency_ms.append(max(0, now_ms - int(ingest)))
    fp.progress_ms = max(fp.progress_ms, ts_ms)
    self._touched[(source, key, feed.id)] = now_ms
    return feed.id

  def close(self, st: KeyState) -> list[PaneOut]:
    """Close every pane whose feed progressed past its end, in order, empty ones too."""
    out: list[PaneOut] = []
    for feed_id, fp in st.feeds.items():
      upto = window_start(fp.progress_ms, self.pane_ms)  # panes ending by then are complete
      if upto <= fp.closed_until_ms:
        continue
      start = max(fp.closed_until_ms, upto - self.max_empty_panes * self.pane_ms)
      opened = self._opened.pop(feed_id, None)
      gap_from, gap_to = self._gaps.get(feed_id, (0, 0))
      if gap_to <= upto:
        self._gaps.pop(feed_id, None)
      while start < upto:
        unknown = start == opened or gap_from <= start < gap_to
        out.append(PaneOut(feed_id, start, fp.panes.pop(start, Pane()), opened=unknown))
        start += self.pane_ms
      for stale in [s for s in fp.panes if s < upto]:
        del fp.panes[stale]
      fp.closed_until_ms = upto
    return out

  def partials(self, st: KeyState, feed_id: str) -> list[PaneOut]:
    """Return what a quiet feed's open panes hold so far, as partial panes.

    A pane closes only when its feed's progress passes its end. When a feed goes quiet in
    the middle of a pane (its connection dropped, its exchange stopped), the trades already
    in that pane would reach stage 2 only when the feed comes back, after their windows
    went out. Sent as partial, they are in those windows; the closed pane replaces them
    later, and whatever it adds to a window already out is counted late.
    """
    fp = st.feeds.get(feed_id)
    if fp is None:
      return []
    return [
      PaneOut(feed_id, start, Pane().merge(pane, self.registry), partial=True)
      for start, pane in sorted(fp.panes.items())
      if pane and start >= fp.closed_until_ms
    ]

  def quiet(self) -> list[tuple[str, str, str]]:
    """Return (source, raw key, feed id) of feeds quiet for `quiet_ms` since their last event.

    Each quiet spell is reported once; a new event re-arms it.
    """
    now_ms = self.clock()
    found = [entry for entry, last in self._touched.items() if now_ms - last >= self.quiet_ms]
    for entry in found:
      del self._touched[entry]
    return found

  def forget_quiet(self) -> None:
    """Forget which feeds were active (the raw partitions this worker reads changed)."""
    self._touched.clear()
