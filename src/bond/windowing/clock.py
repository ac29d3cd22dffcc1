"""Event-time arithmetic and the clock the core is given (never read from the system)."""

from collections.abc import Callable

Clock = Callable[[], int]
"""Return the current wall-clock time in epoch ms; injected so the core runs without I/O."""


def window_start(ts_ms: int, size_ms: int) -> int:
  """Return the start of the epoch-aligned window holding ts_ms (an event at k*size is in k)."""
  return ts_ms - ts_ms % size_ms


def first_window_end(created_ms: int, size_ms: int) -> int:
  """Return the end of a new stream's first window: the one starting at the next boundary."""
  start = -(-created_ms // size_ms) * size_ms
  return start + size_ms


def stream_first_end(created_ms: int, size_ms: int, pane_ms: int) -> int:
  """Return the end of a stream's first window.

  It starts at the first boundary a full pane after creation: panes that closed before the
  workers learnt of the stream may never have been sent to it.
  """
  return first_window_end(created_ms + pane_ms, size_ms)
