"""Bond's window core: all event-time logic, free of Kafka and Faust (ARCHITECTURE.md).

- `aggregators`: one class per statistic, registered in output-field order;
- `pane`: a feed's statistics over one pane, and the `bond.panes` record;
- `stage1`: raw events -> panes per feed, closed by the feed's progress;
- `stage2`: panes -> windows per stream, on time by the `policy`;
- `compose`: the AggregatedEvent of one window.
"""

from bond.windowing.aggregators import REGISTRY, Aggregator, OutField, Registry, Scope, register
from bond.windowing.clock import Clock, first_window_end, stream_first_end, window_start
from bond.windowing.compose import compose_window
from bond.windowing.feeds import Feed, feed_of_raw, feeds_for
from bond.windowing.pane import Pane, PaneRecord, WireError
from bond.windowing.policy import Decision, WatermarkPolicy
from bond.windowing.stage1 import FeedPanes, KeyState, PaneOut, Stage1
from bond.windowing.stage2 import FeedTrack, Stage2, StreamDef, StreamState, WindowOut

__all__ = [
  "REGISTRY",
  "Aggregator",
  "Clock",
  "Decision",
  "Feed",
  "FeedPanes",
  "FeedTrack",
  "KeyState",
  "OutField",
  "Pane",
  "PaneOut",
  "PaneRecord",
  "Registry",
  "Scope",
  "Stage1",
  "Stage2",
  "StreamDef",
  "StreamState",
  "WatermarkPolicy",
  "WindowOut",
  "WireError",
  "compose_window",
  "feed_of_raw",
  "feeds_for",
  "first_window_end",
  "register",
  "stream_first_end",
  "window_start",
]
