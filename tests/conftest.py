"""Session fixtures: one real Kafka and one real Redis for the whole test run.

The test stack lives under .bond/test on its own ports (Kafka 19092, Redis 16379), so it
never collides with a `bond up` platform. Set BOND_TEST_KEEP=1 to leave it running
between runs (the next run reuses it).
"""

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

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


def nested(depth: int) -> dict[str, Any]:
  """Return a JSON object nested `depth` levels deep (hostile-input tests)."""
  root: dict[str, Any] = {}
  node = root
  for _ in range(depth - 1):
    node["a"] = {}
    node = node["a"]
  return root


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


class WorkerProcess:
  """A real `faust ... worker` subprocess with its own topic prefix and app id."""

  def __init__(self, env: dict[str, str], web_port: int, log_path: Path) -> None:
    self.env, self.web_port, self.log_path = env, web_port, log_path
    self.proc: subprocess.Popen[bytes] | None = None

  def start(self, timeout_sec: float = 90.0) -> "WorkerProcess":
    import subprocess
    import time

    import httpx

    faust = str(Path(sys.executable).parent / "faust")
    cmd = [faust, "-A", "bond.agents.app", "worker", "-l", "info", "--web-port", str(self.web_port)]
    self.log = open(self.log_path, "ab")
    self.proc = subprocess.Popen(
      # In its test's own folder: Faust makes its data directory (<app id>-data) in the cwd.
      cmd,
      env=self.env,
      stdout=self.log,
      stderr=subprocess.STDOUT,
      cwd=self.log_path.parent,
      start_new_session=True,
    )
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
      if self.proc.poll() is not None:
        raise RuntimeError(f"worker exited: {self.log_path.read_text()[-2000:]}")
      try:
        if httpx.get(f"http://127.0.0.1:{self.web_port}/bond/ready", timeout=1).status_code == 200:
          return self
      except httpx.HTTPError:
        pass
      time.sleep(0.3)
    raise RuntimeError(f"worker not ready in {timeout_sec}s: {self.log_path.read_text()[-2000:]}")

  def wait_ready(self, timeout_sec: float = 60.0) -> None:
    """Wait until the worker is ready again (after a rebalance, recovery included)."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
      try:
        if httpx.get(f"http://127.0.0.1:{self.web_port}/bond/ready", timeout=1).status_code == 200:
          return
      except httpx.HTTPError:
        pass
      time.sleep(0.2)
    raise RuntimeError(f"worker not ready again in {timeout_sec}s")

  def kill(self) -> None:
    """Kill -9 the worker (a crash, not a shutdown)."""
    import signal

    if self.proc and self.proc.poll() is None:
      os.killpg(self.proc.pid, signal.SIGKILL)
      self.proc.wait()

  def stop(self) -> None:
    import signal
    import subprocess

    if self.proc and self.proc.poll() is None:
      os.killpg(self.proc.pid, signal.SIGTERM)
      try:
        self.proc.wait(20)
      except subprocess.TimeoutExpired:
        self.kill()


@pytest.fixture
def isolated_env(infra, unique, tmp_path) -> dict[str, str]:
  """Return an environment with a unique topic prefix and Faust app id (a private deployment)."""
  tag = unique("t")
  return {
    **os.environ,
    "BOND_TOPIC_PREFIX": f"{tag}.",
    "BOND_APP_ID": f"bond-{tag}",
    "BOND_FEEDS": "off",
    "BOND_HOME": str(tmp_path),
  }


@pytest.fixture
def worker_factory(isolated_env, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
  """Start Faust workers in the isolated deployment; all are stopped afterwards."""
  workers: list[WorkerProcess] = []

  def make(**env: str) -> WorkerProcess:
    w = WorkerProcess({**isolated_env, **env}, free_port(), tmp_path / f"worker{len(workers)}.log")
    workers.append(w)
    return w

  yield make
  for w in workers:
    w.stop()
