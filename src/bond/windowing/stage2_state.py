"""Stage 2's state and its ports: a stream's definition, a feed's track per partition, a
stream's progress (each with its versioned wire form), and what stage 2 writes to."""

from dataclasses import dataclass, field
from typing import Any, Protocol

from bond.schemas import StreamSpec
from bond.windowing.feeds import Feed
from bond.windowing.pane import Pane, WireError

STATE_VERSION = 1
TrackId = tuple[int, str]  # (partition, feed id)


class WindowOut(Protocol):
  """Where stage 2 sends windows and per-stream counters (the worker's sink)."""

  def emit(self, sid: str, event: dict[str, Any], msgs_in: int, lag_ms: int) -> None: ...

  def count(self, sid: str, field: str, n: int) -> None: ...

  def latency(self, track: TrackId, samples: list[float]) -> None:
    """Ingest-to-pane samples of one feed's pane in one partition: once per pane, not per
    stream (each stream reads its feeds' samples when its metrics are published)."""

  def forget(self, sid: str) -> None: ...


class StateStore(Protocol):
  """A key-value store whose keys each belong to one partition (a Faust table)."""

  def __setitem__(self, key: bytes, value: Any) -> None: ...

  def __delitem__(self, key: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class StreamDef:
  """What stage 2 needs to know of a stream: its spec, feeds, creation and partition."""

  stream_id: str
  spec: StreamSpec
  feeds: tuple[Feed, ...]
  created_ms: int
  partition: int
  backfill_sec: int = 0  # history asked for on create (ARCHITECTURE.md "Backfill")
  size_ms: int = field(init=False, repr=False, compare=False)  # the window size

  def __post_init__(self) -> None:
    object.__setattr__(self, "size_ms", self.spec.interval_sec * 1000)


@dataclass(slots=True)
class FeedTrack:
  """Stage-2 state of one feed in one partition, shared by the streams there that use it."""

  offset: int = -1  # the last bond.panes record applied: replayed ones up to it are skipped
  progress_ms: int = 0  # the feed's watermark: every pane ending by then is here
  seen_ms: int = 0  # wall clock when its last closed pane arrived (0: never)
  panes: dict[int, Pane] = field(default_factory=dict)  # closed panes, by start
  partials: dict[int, Pane] = field(default_factory=dict)  # open panes of a quiet feed, by start
  # The start of the first pane this track got: the feed tells nothing of the time before it
  # (it did not exist, or its panes were never sent here), so a window starting earlier lacks
  # it. -1: not known (a track restored from an older state), taken as covering every window.
  first_ms: int = -1

  def to_wire(self) -> list[Any]:
    """Return [version, offset, progress_ms, seen_ms, [[start, partial pane]...], first_ms].

    Closed panes are stored under keys of their own (written once, deleted once). A value
    without `first_ms` (written before it existed) is read as -1.
    """
    partials = [[s, p.to_wire()] for s, p in self.partials.items()]
    return [STATE_VERSION, self.offset, self.progress_ms, self.seen_ms, partials, self.first_ms]

  @classmethod
  def from_wire(cls, data: Any) -> "FeedTrack":
    """Return a track from `to_wire`'s data; raise WireError if it is not one."""
    if not isinstance(data, list) or len(data) not in (5, 6) or data[0] != STATE_VERSION:
      raise WireError(f"not a version {STATE_VERSION} feed track")
    try:
      partials = {int(s): Pane.from_wire(p) for s, p in data[4]}
      first_ms = int(data[5]) if len(data) == 6 else -1
      return cls(int(data[1]), int(data[2]), int(data[3]), {}, partials, first_ms)
    except (TypeError, ValueError) as err:
      raise WireError(f"malformed feed track: {err!r}") from err


@dataclass(slots=True)
class StreamState:
  """Stage-2 state of one stream."""

  next_end_ms: int  # the end of the next window to send
  used: dict[str, int] = field(
    default_factory=dict
  )  # "feed|pane start" -> events of a partial sent

  def to_wire(self) -> list[Any]:
    """Return [version, next_end_ms, {"feed|start": events}]."""
    return [STATE_VERSION, self.next_end_ms, self.used]

  @classmethod
  def from_wire(cls, data: Any) -> "StreamState":
    """Return a stream state from `to_wire`'s data; raise WireError if it is not one."""
    if not isinstance(data, list) or len(data) != 3 or data[0] != STATE_VERSION:
      raise WireError(f"not a version {STATE_VERSION} stream state")
    try:
      return cls(int(data[1]), {str(k): int(v) for k, v in data[2].items()})
    except (TypeError, ValueError, AttributeError) as err:
      raise WireError(f"malformed stream state: {err!r}") from err
