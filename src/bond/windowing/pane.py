"""A pane: every registered statistic of one feed over one aligned span, and its wire form.

Panes are what stage 1 sends and stage 2 composes windows from. A pane closed by its feed's
progress is final; a partial pane is what an open pane of a quiet feed holds so far.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bond.errors import BondError
from bond.windowing.aggregators import REGISTRY, Registry

RECORD_VERSION = 1


class WireError(BondError):
  """A pane record or a state value that cannot be read (malformed or another version)."""


class Pane:
  """The statistics of one feed's raw events over one span (`events` counts them)."""

  __slots__ = ("events", "latency_ms", "sim", "stats")

  def __init__(self) -> None:
    self.events = 0  # raw events added (heartbeats are not events)
    self.sim = False  # any event came from the simulator
    self.stats: dict[str, Any] = {}  # statistic name -> its state, for those that took an event
    self.latency_ms: list[int] = []  # a few ingest-to-aggregation samples (metrics only)

  def __bool__(self) -> bool:
    return self.events > 0

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, Pane):
      return NotImplemented
    return self.to_wire() == other.to_wire()

  def __repr__(self) -> str:
    return f"Pane({self.to_wire()!r})"

  def add(self, source: str, raw: Mapping[str, Any], registry: Registry = REGISTRY) -> None:
    """Add one raw event of a feed of `source`."""
    self.events += 1
    if raw.get("sim"):
      self.sim = True
    stats = self.stats
    for agg in registry.for_source(source):
      if agg.accepts(raw):
        state = stats.get(agg.name)
        stats[agg.name] = agg.add(agg.init() if state is None else state, raw)

  def merge(self, other: "Pane", registry: Registry = REGISTRY) -> "Pane":
    """Add another pane's statistics (as if this pane saw its events too); return self.

    `other` is never changed: a pane in stage 2 is shared by every stream of its feed.
    """
    self.events += other.events
    self.sim = self.sim or other.sim
    for name, theirs in other.stats.items():
      agg = registry.get(name)
      if agg is None:
        continue
      mine = self.stats.get(name)
      self.stats[name] = agg.merge(agg.init() if mine is None else mine, theirs)
    return self

  def contributed(self) -> bool:
    """Return whether any statistic took an event (the feed then counts as a source)."""
    return bool(self.stats)

  def to_wire(self, registry: Registry = REGISTRY) -> dict[str, Any]:
    """Return the pane as plain JSON data."""
    out: dict[str, Any] = {"events": self.events}
    if self.sim:
      out["sim"] = True
    if self.stats:
      stats = {}
      for name, state in self.stats.items():
        agg = registry.get(name)
        if agg is not None:
          stats[name] = agg.encode(state)
      out["stats"] = stats
    if self.latency_ms:
      out["latency_ms"] = self.latency_ms
    return out

  @classmethod
  def from_wire(cls, data: Mapping[str, Any], registry: Registry = REGISTRY) -> "Pane":
    """Return a pane from `to_wire`'s data (statistics no longer registered are dropped)."""
    pane = cls()
    try:
      pane.events = int(data.get("events", 0))
      pane.sim = bool(data.get("sim", False))
      for name, enc in (data.get("stats") or {}).items():
        agg = registry.get(name)
        if agg is not None:
          pane.stats[name] = agg.decode(enc)
      pane.latency_ms = [int(x) for x in data.get("latency_ms", ())]
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
      raise WireError(f"malformed pane: {err!r}") from err
    return pane


@dataclass(slots=True)
class PaneRecord:
  """One `bond.panes` record: a pane of a feed and the streams of one partition that use it.

  `progress_ms` is the feed's progress the record proves (the pane's own end) for a closed
  pane, None for a partial one (what an open pane holds so far; it claims no progress).
  """

  feed_id: str
  start_ms: int
  pane: Pane
  stream_ids: list[str] = field(default_factory=list)
  progress_ms: int | None = None
  # The empty pane stage 1 opened back for a feed it had just heard of: the feed's data
  # begins at its end (stage 2's `FeedTrack.first_ms`).
  opened: bool = False

  @property
  def partial(self) -> bool:
    """Return whether this is a partial pane (no progress claimed)."""
    return self.progress_ms is None

  def to_wire(self) -> dict[str, Any]:
    """Return the record value as plain JSON data (version tagged)."""
    out: dict[str, Any] = {"v": RECORD_VERSION, "feed": self.feed_id, "start_ms": self.start_ms}
    if self.progress_ms is not None:
      out["progress_ms"] = self.progress_ms
    out["pane"] = self.pane.to_wire()
    out["streams"] = self.stream_ids
    if self.opened:
      out["opened"] = True
    return out

  @classmethod
  def from_wire(cls, data: Mapping[str, Any]) -> "PaneRecord":
    """Return a record from `to_wire`'s data; raise WireError if it is not one."""
    if not isinstance(data, Mapping) or data.get("v") != RECORD_VERSION:
      version = data.get("v") if isinstance(data, Mapping) else None
      raise WireError(f"not a version {RECORD_VERSION} pane record (v={version!r})")
    try:
      progress = data.get("progress_ms")
      return cls(
        feed_id=str(data["feed"]),
        start_ms=int(data["start_ms"]),
        pane=Pane.from_wire(data["pane"]),
        stream_ids=[str(s) for s in data["streams"]],
        progress_ms=None if progress is None else int(progress),
        opened=data.get("opened") is True,
      )
    except (TypeError, ValueError, KeyError) as err:
      raise WireError(f"malformed pane record: {err!r}") from err
