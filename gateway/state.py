"""The REST API's long-lived clients, kept in the Starlette lifespan state."""

from dataclasses import dataclass

import redis.asyncio as aioredis
from starlette.requests import Request

from bond.config import Settings
from bond.gateway.cpu import CpuPool
from bond.gateway.history import Slots
from bond.gateway.markets import MarketCache
from bond.gateway.observe import ApiMetrics
from bond.gateway.quota import RateLimiter, StreamQuota
from bond.registry import Registry, RegistryWriter
from bond.topics.admin import TopicAdmin


@dataclass
class ApiState:
  """The API's clients and limits, built once by the lifespan."""

  settings: Settings
  keys: dict[str, str]
  registry: Registry
  writer: RegistryWriter
  admin: TopicAdmin
  redis: aioredis.Redis
  markets: MarketCache
  metrics: ApiMetrics
  quota: StreamQuota
  rate: RateLimiter
  cpu: CpuPool
  history_slots: Slots  # BOND_HISTORY_READERS: Kafka history reads at once


def api_state(request: Request) -> ApiState:
  """Return the API state of the app serving the request."""
  state: ApiState = request.state.api
  return state
