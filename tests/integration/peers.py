"""Helpers of the connector tests: started local peers and reading a connector's events."""

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest


def peer_fixture(cls: type) -> Any:
  """Return a fixture giving a factory of started `cls` peers on free ports, all stopped after."""

  @pytest.fixture
  async def factory() -> AsyncIterator[Callable[..., Any]]:
    made: list[Any] = []

    async def make(**kwargs: Any) -> Any:
      peer = cls(port=0, **kwargs)
      await peer.start()
      made.append(peer)
      return peer

    yield make
    for peer in made:
      await peer.stop()

  return factory


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
