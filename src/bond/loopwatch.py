"""How late a process's event loop runs, and what held it when it stalled.

Every part of a worker (both stages, the sink) shares one event loop, so a window's
lag is also the time its callbacks wait behind the others. `LoopWatch` measures that wait:
a task sleeps `tick_ms` and records how much later than asked it woke (the loop lag), and a
thread notices when the loop has not run for `stall_ms` and takes the loop thread's stack
at that moment, the only way to see what held it (a profiler shows the average, not the
stall). The lag summary (the last minute of samples) and the last stalls are in the worker's
/bond/stats.
"""

import asyncio
import gc
import logging
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any

log = logging.getLogger(__name__)

# For processes that hold many long-lived objects (a worker, its feed host, a gateway): young
# collections every 50,000 allocations rather than 700, each walking what was allocated since.
GC_THRESHOLDS = (50_000, 20, 100)


class LoopWatch:
  """Samples the running loop's lag; records the stack of the loop thread when it stalls."""

  def __init__(self, tick_ms: float = 10.0, stall_ms: float = 100.0, keep: int = 6000) -> None:
    self.tick_sec = tick_ms / 1000
    self.stall_sec = stall_ms / 1000
    self.lags_ms: deque[float] = deque(maxlen=keep)
    self.stalls: deque[dict[str, Any]] = deque(maxlen=8)
    self.stall_count = 0
    self._beat = time.monotonic()
    self._loop_thread: int | None = None
    self._task: asyncio.Task[None] | None = None
    self._thread: threading.Thread | None = None
    self._stop = threading.Event()
    # Garbage collection pauses by generation (a pause holds the loop wherever it allocates).
    self.gc_pauses_ms: dict[int, deque[float]] = {g: deque(maxlen=keep) for g in range(3)}
    self.gc_total = [0, 0, 0]  # collections by generation since start
    self._gc_started = 0.0

  def start(self) -> None:
    """Start watching the running loop (from a coroutine on it)."""
    if self._task is not None:
      return
    self._loop_thread = threading.get_ident()
    self._beat = time.monotonic()
    self._stop.clear()
    self._task = asyncio.get_running_loop().create_task(self._tick(), name="loopwatch")
    self._thread = threading.Thread(target=self._watch, name="loopwatch", daemon=True)
    self._thread.start()
    gc.callbacks.append(self._on_gc)

  async def stop(self) -> None:
    """Stop the task and the thread (safe to call twice)."""
    self._stop.set()
    if self._on_gc in gc.callbacks:
      gc.callbacks.remove(self._on_gc)
    task, self._task = self._task, None
    if task is not None:
      task.cancel()
      await asyncio.gather(task, return_exceptions=True)

  async def _tick(self) -> None:
    while True:
      asked = time.monotonic()
      await asyncio.sleep(self.tick_sec)
      self._beat = now = time.monotonic()
      self.lags_ms.append((now - asked - self.tick_sec) * 1000)

  def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
      self._gc_started = time.perf_counter()
    elif self._gc_started:
      self.gc_pauses_ms[info["generation"]].append((time.perf_counter() - self._gc_started) * 1000)
      self.gc_total[info["generation"]] += 1

  def _watch(self) -> None:
    reported = 0.0  # the beat of the stall last reported: one report per stall
    while not self._stop.wait(self.tick_sec):
      beat = self._beat
      held = time.monotonic() - beat
      if held < self.stall_sec or beat == reported or self._loop_thread is None:
        continue
      reported = beat
      frame = sys._current_frames().get(self._loop_thread)
      stack = traceback.format_stack(frame, limit=25) if frame is not None else []
      self.stall_count += 1
      where = [line.strip().splitlines()[0] for line in stack[-8:]]
      self.stalls.append({"at": time.time(), "held_ms": round(held * 1000), "stack": where})
      log.warning("event loop held over %.0f ms; at:\n%s", held * 1000, "".join(stack[-8:]))

  def summary(self) -> dict[str, Any]:
    """Return the loop lag's p50/p99/max (ms) over the last samples and the last stalls."""
    return {
      "loop_lag_p50_ms": _rank(self.lags_ms, 0.5),
      "loop_lag_p99_ms": _rank(self.lags_ms, 0.99),
      "loop_lag_max_ms": _rank(self.lags_ms, 1.0),
      "loop_stalls": self.stall_count,
      "gc_pause_max_ms": {g: round(max(p), 1) if p else None for g, p in self.gc_pauses_ms.items()},
      "gc_pause_p50_ms": {g: _rank(p, 0.5) for g, p in self.gc_pauses_ms.items()},
      "gc_pause_p99_ms": {g: _rank(p, 0.99) for g, p in self.gc_pauses_ms.items()},
      "gc_collections": dict(enumerate(self.gc_total)),
      "last_stalls": list(self.stalls),
    }


def _rank(samples: deque[float], q: float) -> float | None:
  """Return the q-quantile (0..1) of samples by rank, rounded to 0.1 (None when empty)."""
  ranked = sorted(samples)
  return round(ranked[min(len(ranked) - 1, int(q * len(ranked)))], 1) if ranked else None
