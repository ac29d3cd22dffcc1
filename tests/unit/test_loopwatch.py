"""The worker's loop watch: how late its event loop runs, and what held it when it stalled."""

import asyncio
import time

from bond.loopwatch import LoopWatch


def hold_the_loop(sec: float) -> None:
  time.sleep(sec)  # blocking, as a long synchronous burst of work would


async def test_a_stall_is_recorded_with_the_code_that_held_the_loop():
  watch = LoopWatch(tick_ms=5, stall_ms=50)
  watch.start()
  try:
    await asyncio.sleep(0.05)
    assert watch.summary()["loop_stalls"] == 0
    hold_the_loop(0.3)
    async with asyncio.timeout(5):
      while not watch.stalls:  # noqa: ASYNC110  (a thread fills it: nothing to await)
        await asyncio.sleep(0.01)
    stall = watch.summary()["last_stalls"][-1]
    assert stall["held_ms"] >= 50
    assert any("hold_the_loop" in line for line in stall["stack"])
    # Its lag shows in the summary once the loop runs again.
    async with asyncio.timeout(5):
      while (watch.summary()["loop_lag_max_ms"] or 0) < 200:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
  finally:
    await watch.stop()
