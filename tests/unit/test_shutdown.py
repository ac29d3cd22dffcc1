"""A shutdown step is given its time and then left behind, even one that will not cancel."""

import asyncio
import logging
import time

from bond.gateway.shutdown import bounded


async def test_a_step_that_ignores_cancellation_is_left_behind_in_time(caplog):
  release = asyncio.Event()

  async def stuck() -> None:
    # A client's close that swallows the cancellation and keeps waiting (asyncio.wait_for
    # would wait for it to finish: forever here).
    while not release.is_set():
      try:
        await release.wait()
      except asyncio.CancelledError:
        continue

  started = time.monotonic()
  with caplog.at_level(logging.WARNING):
    finished = await bounded("a stuck client", stuck, 0.2)
  took = time.monotonic() - started
  release.set()
  assert finished is False
  assert took < 1.0, f"the shutdown waited {took:.2f}s for a step given 0.2s"
  assert "stopping a stuck client took over 0.2s" in caplog.text


async def test_a_step_that_ends_or_fails_in_time_is_awaited_and_its_error_logged(caplog):
  done: list[str] = []

  async def quick() -> None:
    await asyncio.sleep(0.01)
    done.append("quick")

  async def broken() -> None:
    raise ConnectionError("gone")

  with caplog.at_level(logging.WARNING):
    assert await bounded("a quick client", quick, 1.0) is True
    assert await bounded("a broken client", broken, 1.0) is True
  assert done == ["quick"]
  assert "stopping a broken client failed: ConnectionError('gone')" in caplog.text
