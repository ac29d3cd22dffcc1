"""One backoff policy for every reconnect and retry in the connectors."""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
  """Delays for attempt 1, 2, 3 ...: exponential (or linear) from `base_sec` up to `max_sec`."""

  base_sec: float = 0.5
  max_sec: float = 30.0
  factor: float = 2.0
  linear: bool = False
  jitter: float = 0.1

  def delay(self, attempt: int) -> float:
    """Return the delay in seconds before retry number `attempt` (1-based)."""
    n = max(1, attempt)
    raw = self.base_sec * n if self.linear else self.base_sec * self.factor ** (n - 1)
    capped = min(self.max_sec, raw)
    if self.jitter:
      capped *= 1 + random.uniform(-self.jitter, self.jitter)
    return max(0.0, min(self.max_sec, capped))

  async def sleep(self, attempt: int) -> float:
    """Sleep for the delay of `attempt` and return it."""
    seconds = self.delay(attempt)
    await asyncio.sleep(seconds)
    return seconds


async def retry(
  call: Callable[[], Awaitable[T]],
  policy: Backoff,
  retriable: tuple[type[BaseException], ...],
  max_attempts: int | None = None,
  on_retry: Callable[[BaseException, int], None] | None = None,
) -> T:
  """Await `call()`, retrying on `retriable` errors with `policy`'s delays."""
  attempt = 0
  while True:
    try:
      return await call()
    except retriable as exc:
      attempt += 1
      if max_attempts is not None and attempt >= max_attempts:
        raise
      if on_retry is not None:
        on_retry(exc, attempt)
      delay = await policy.sleep(attempt)
      log.debug("retry %d after %.2fs: %r", attempt, delay, exc)
