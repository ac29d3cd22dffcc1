"""Fixtures of the integration tests: a private Bond deployment, registered test streams."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.gateways import Streams
from tests.integration.pipeline import deployment

__all__ = ["deployment"]


@pytest.fixture
async def streams(infra: dict[str, str], redis_client: Any) -> AsyncIterator[Streams]:
  """Return a factory of registered streams, removed afterwards."""
  made = Streams(infra["bootstrap"], redis_client)
  await made.writer.start()
  yield made
  await made.cleanup()
