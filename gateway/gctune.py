"""The gateway's garbage-collector tuning for thousands of long-lived sockets.

Young collections every 50,000 allocations rather than 700, and the objects of sessions
opened in batches frozen (gc.freeze) so that no collection walks the thousands of
long-lived sockets again; the frozen garbage is collected when idle.
"""

import asyncio
import gc
from collections.abc import Callable

from bond.loopwatch import GC_THRESHOLDS

FREEZE_EVERY_CONNECTS = 500
FREEZE_DELAY_SEC = 1.0  # after a batch of connects, so that its handshakes are done
THAW_DELAY_SEC = 5.0
THAW_MIN_CLOSES = 20_000  # with sockets open, collect the frozen ones after this many closes


class GcTuning:
  """Freezes long-lived objects after start-up and after batches of connects; collects rarely."""

  active = 0  # tunings running in this process (a test may run several gateways)
  saved: tuple[int, int, int] | None = None

  def __init__(self, open_sessions: Callable[[], int]) -> None:
    self._open_sessions = open_sessions
    self._connects = 0
    self._closes = 0
    self._freeze_timer: asyncio.TimerHandle | None = None
    self._thaw_timer: asyncio.TimerHandle | None = None
    self.running = False

  def start(self) -> None:
    """Freeze what start-up made (it lives as long as the process) and raise the thresholds."""
    if GcTuning.active == 0:
      GcTuning.saved = gc.get_threshold()
    GcTuning.active += 1
    self.running = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

  def stop(self) -> None:
    """Cancel the timers; the last tuning of the process puts the collector back."""
    if not self.running:
      return
    self.running = False
    for timer in (self._freeze_timer, self._thaw_timer):
      if timer is not None:
        timer.cancel()
    self._freeze_timer = self._thaw_timer = None
    GcTuning.active -= 1
    if GcTuning.active == 0 and GcTuning.saved is not None:
      gc.set_threshold(*GcTuning.saved)
      gc.unfreeze()

  def opened(self) -> None:
    """Count a new session; freeze a moment after every batch of them."""
    if not self.running:
      return
    self._connects += 1
    if self._connects >= FREEZE_EVERY_CONNECTS and self._freeze_timer is None:
      loop = asyncio.get_running_loop()
      self._freeze_timer = loop.call_later(FREEZE_DELAY_SEC, self._freeze)

  def closed(self) -> None:
    """Count a closed session; collect the frozen garbage once idle (or after many closes)."""
    if not self.running:
      return
    self._closes += 1
    if self._thaw_timer is None and self._thaw_due():
      loop = asyncio.get_running_loop()
      self._thaw_timer = loop.call_later(THAW_DELAY_SEC, self._thaw)

  def _thaw_due(self) -> bool:
    still_open = self._open_sessions()
    if still_open == 0:
      return self._closes > 0
    return self._closes >= max(THAW_MIN_CLOSES, 2 * still_open)

  def _freeze(self) -> None:
    self._freeze_timer = None
    self._connects = 0
    gc.freeze()

  def _thaw(self) -> None:
    self._thaw_timer = None
    if not self._thaw_due():
      return
    # Frozen objects of closed sessions that only a collection frees (reference cycles)
    # would stay forever: collect everything once, then freeze what is left.
    self._closes = 0
    gc.unfreeze()
    gc.collect()
    gc.freeze()
