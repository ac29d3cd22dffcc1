"""Kafka and Redis for the benchmarks, started (or reused) through `bond.devstack.DevStack`.

    with ensure_infra() as (bootstrap, redis_url):
        ...

A stack that already answers is reused and left running: the benchmark's own (.bond/bench,
Kafka 29092, Redis 26379) or the test session's (.bond/test, Kafka 19092, Redis 16379).
Otherwise one is started under .bond/bench and stopped at the end (unless BOND_BENCH_KEEP=1).
`with` and `async with` both work, also inside a running event loop (the blocking work
runs in a thread).
"""

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from bond.devstack import DevStack, kafka_ready, port_free, redis_answers
from bond.errors import DevStackError

ROOT = Path(__file__).resolve().parent.parent
BENCH_HOME = ROOT / ".bond" / "bench"
BENCH_KAFKA_PORT = int(os.environ.get("BOND_BENCH_KAFKA_PORT", "29092"))
BENCH_REDIS_PORT = int(os.environ.get("BOND_BENCH_REDIS_PORT", "26379"))
TEST_HOME = ROOT / ".bond" / "test"
TEST_KAFKA_PORT = 19092
TEST_REDIS_PORT = 16379
PROBE_TIMEOUT_SEC = 5.0
STALE_WAIT_SEC = 30.0
START_TIMEOUT_SEC = 240.0

T = TypeVar("T")


@dataclass(frozen=True)
class _Candidate:
  home: Path
  kafka_port: int
  redis_port: int

  @property
  def bootstrap(self) -> str:
    return f"127.0.0.1:{self.kafka_port}"

  @property
  def redis_url(self) -> str:
    return f"redis://127.0.0.1:{self.redis_port}/0"

  def stack(self) -> DevStack:
    """Return the DevStack rooted at this candidate's home and ports."""
    return DevStack(
      home=self.home,
      kafka_port=self.kafka_port,
      controller_port=self.kafka_port + 1,
      redis_url=self.redis_url,
      kafka_heap_mb=1024,
    )


BENCH = _Candidate(BENCH_HOME, BENCH_KAFKA_PORT, BENCH_REDIS_PORT)
TEST = _Candidate(TEST_HOME, TEST_KAFKA_PORT, TEST_REDIS_PORT)


def _in_thread(fn: Callable[[], T], timeout_sec: float) -> T:
  """Run blocking work (which may call asyncio.run) in its own thread and return its result."""
  box: dict[str, object] = {}

  def run() -> None:
    try:
      box["value"] = fn()
    except BaseException as err:  # handed back to the caller below
      box["error"] = err

  worker = threading.Thread(target=run, name="bench-stack", daemon=True)
  worker.start()
  worker.join(timeout_sec)
  if worker.is_alive():
    raise DevStackError(f"bench stack: no answer after {timeout_sec:.0f}s")
  if "error" in box:
    raise box["error"]  # type: ignore[misc]
  return box["value"]  # type: ignore[return-value]


def _answers(candidate: _Candidate) -> bool:
  """Return True when both Kafka and Redis of a candidate answer (blocking)."""
  if port_free(candidate.kafka_port) or not redis_answers(candidate.redis_url):
    return False
  return asyncio.run(kafka_ready(candidate.bootstrap, timeout_sec=PROBE_TIMEOUT_SEC))


class Infra:
  """A context manager yielding `(bootstrap, redis_url)`; stops the stack only if it started it."""

  def __init__(self) -> None:
    self.bootstrap = ""
    self.redis_url = ""
    self.started: DevStack | None = None
    self.reused: str | None = None

  def _up(self) -> tuple[str, str]:
    for candidate in (BENCH, TEST):
      if _answers(candidate):
        candidate.stack().create_topics()
        self.reused = str(candidate.home)
        return self._use(candidate)
    stack = BENCH.stack()
    if stack.running():
      # A bench stack from an earlier run may still be starting; give it a moment, then restart.
      deadline = time.monotonic() + STALE_WAIT_SEC
      while time.monotonic() < deadline:
        if _answers(BENCH):
          self.reused = str(BENCH.home)
          stack.create_topics()
          return self._use(BENCH)
        time.sleep(1.0)
      stack.down()
    parts = [stack.kafka_part()]
    redis = stack.redis_part()
    if redis is not None:
      parts.append(redis)
    stack.up(parts, stack.process_env("sim"), lambda name, state, sec: None)
    self.started = stack
    return self._use(BENCH)

  def _use(self, candidate: _Candidate) -> tuple[str, str]:
    self.bootstrap, self.redis_url = candidate.bootstrap, candidate.redis_url
    return self.bootstrap, self.redis_url

  def _down(self) -> None:
    stack, self.started = self.started, None
    if stack is not None and not os.environ.get("BOND_BENCH_KEEP"):
      stack.down()

  def __enter__(self) -> tuple[str, str]:
    return _in_thread(self._up, START_TIMEOUT_SEC)

  def __exit__(
    self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
  ) -> None:
    _in_thread(self._down, START_TIMEOUT_SEC)

  async def __aenter__(self) -> tuple[str, str]:
    return await asyncio.to_thread(self.__enter__)

  async def __aexit__(
    self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
  ) -> None:
    await asyncio.to_thread(self.__exit__, kind, err, tb)


def ensure_infra() -> Infra:
  """Return a context manager yielding `(bootstrap, redis_url)` of a running Kafka and Redis."""
  return Infra()


def write_result(name: str, quick: bool, body: dict[str, Any]) -> Path:
  """Write bench/results/<name>.json: the figures, with when and on what they were measured."""
  import json
  import platform
  from datetime import UTC, datetime

  result = {
    "benchmark": name,
    "date": datetime.now(UTC).isoformat(timespec="seconds"),
    "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
    "quick": quick,
    **body,
  }
  path = Path(__file__).resolve().parent / "results" / f"{name}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(result, indent=2) + "\n")
  return path


def free_port() -> int:
  """Return a TCP port free on 127.0.0.1 right now."""
  import socket

  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return int(sock.getsockname()[1])
