"""Fixtures of the integration tests: a private Bond deployment per test, registered test
streams, and local peers (sim exchange, X stream, Geyser, custom feed) started on free ports
for the connector tests."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.integration.gateways import Streams
from tests.integration.pipeline import Deployment

PeerFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def deployment(isolated_env, redis_client) -> AsyncIterator[Deployment]:
  """Return a started private deployment (own topic prefix); stopped afterwards."""
  dep = Deployment(isolated_env, redis_client)
  await dep.start()
  yield dep
  await dep.stop()


async def _peers(cls: type) -> AsyncIterator[PeerFactory]:
  """Yield a factory of started `cls` peers on free ports; stop them all afterwards."""
  made: list[Any] = []

  async def make(**kwargs: Any) -> Any:
    peer = cls(port=0, **kwargs)
    await peer.start()
    made.append(peer)
    return peer

  yield make
  for peer in made:
    await peer.stop()


@pytest.fixture
async def sim_factory() -> AsyncIterator[PeerFactory]:
  """Return a factory of started sim exchanges (`SimExchange` keyword arguments)."""
  from bond.sim.exchange import SimExchange

  async for make in _peers(SimExchange):
    yield make


@pytest.fixture
async def feed_peer_factory() -> AsyncIterator[PeerFactory]:
  """Return a factory of started custom WebSocket feed peers."""
  from bond.sim.feed_peer import FeedPeer

  async for make in _peers(FeedPeer):
    yield make


@pytest.fixture
async def x_peer_factory() -> AsyncIterator[PeerFactory]:
  """Return a factory of started X filtered-stream peers."""
  from bond.sim.x_peer import XPeer

  async for make in _peers(XPeer):
    yield make


@pytest.fixture
async def geyser_peer_factory() -> AsyncIterator[PeerFactory]:
  """Return a factory of started Yellowstone Geyser peers."""
  from bond.sim.geyser_peer import GeyserPeer

  async for make in _peers(GeyserPeer):
    yield make


@pytest.fixture
async def streams(infra: dict[str, str], redis_client: Any) -> AsyncIterator[Streams]:
  """Return a factory of registered streams, removed afterwards."""
  made = Streams(infra["bootstrap"], redis_client)
  await made.writer.start()
  yield made
  await made.cleanup()
