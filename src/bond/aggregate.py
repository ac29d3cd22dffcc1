"""Kept for imports written before `bond.windowing`, the window core: import from there."""

from bond.windowing import (
  Feed,
  Pane,
  compose_window,
  feed_of_raw,
  feeds_for,
  first_window_end,
  window_start,
)
from bond.wire import iso_ms

__all__ = [
  "Feed",
  "Pane",
  "compose_window",
  "feed_of_raw",
  "feeds_for",
  "first_window_end",
  "iso_ms",
  "window_start",
]
