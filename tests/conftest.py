"""Session fixtures: one real Kafka and one real Redis for the whole test run.

The test stack lives under .bond/test on its own ports (Kafka 19092, Redis 16379), so it
never collides with a `bond up` platform. Set BOND_TEST_KEEP=1 to leave it running
between runs (the next run reuses it).
"""

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_KAFKA_PORT = int(os.environ.get("BOND_TEST_KAFKA_PORT", "19092"))
TEST_REDIS_PORT = int(os.environ.get("BOND_TEST_REDIS_PORT", "16379"))
BOOTSTRAP = f"127.0.0.1:{TEST_KAFKA_PORT}"
REDIS_URL = f"redis://127.0.0.1:{TEST_REDIS_PORT}/0"

# Every process the tests start inherits these.
os.environ.update(
  KAFKA_BOOTSTRAP=BOOTSTRAP,
  REDIS_URL=REDIS_URL,
  BOND_ENV="dev",
  BOND_MARKET="sim",
)


def free_port() -> int:
  """Return a TCP port that is free on 127.0.0.1 right now."""
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def infra() -> Iterator[dict[str, str]]:
  """Start (or reuse) the test Kafka and Redis; stop them at the end unless kept."""
  from bond.devstack import DevStack, kafka_ready, redis_answers

  stack = DevStack(
    home=ROOT / ".bond" / "test",
    kafka_port=TEST_KAFKA_PORT,
    controller_port=TEST_KAFKA_PORT + 1,
    redis_url=REDIS_URL,
    kafka_heap_mb=1024,
  )
  reused = stack.running() or (asyncio.run(kafka_ready(BOOTSTRAP)) and redis_answers(REDIS_URL))
  if not reused:
    parts = [stack.kafka_part()]
    redis = stack.redis_part()
    if redis is not None:
      parts.append(redis)
    stack.up(parts, stack.process_env("sim"), lambda name, state, sec: None)
  else:
    stack.create_topics()
  yield {"bootstrap": BOOTSTRAP, "redis_url": REDIS_URL, "home": str(stack.home)}
  if not reused and not os.environ.get("BOND_TEST_KEEP"):
    stack.down()


@pytest.fixture
def unique() -> Callable[[str], str]:
  """Return a factory of names unique to this test (topics, keys, groups)."""
  tag = uuid.uuid4().hex[:8]
  return lambda prefix: f"{prefix}-{tag}"


@pytest.fixture
async def redis_client(infra: dict[str, str]) -> AsyncIterator[object]:
  """Return a redis.asyncio client on the test Redis; closed afterwards."""
  import redis.asyncio as aioredis

  client = aioredis.from_url(infra["redis_url"], decode_responses=True)
  yield client
  await client.aclose()
