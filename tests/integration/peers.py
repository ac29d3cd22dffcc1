"""Reading a connector's events in the connector tests (the peers are fixtures in conftest.py)."""

import asyncio
from collections.abc import Callable
from typing import Any


async def collect(
  feed: Any, until: Callable[[list[Any]], bool], wait_sec: float = 15.0
) -> list[Any]:
  """Read events from a connector until `until(events)` holds."""
  got: list[Any] = []

  async def run() -> None:
    async for ev in feed:
      got.append(ev)
      if until(got):
        return

  await asyncio.wait_for(run(), wait_sec)
  return got
