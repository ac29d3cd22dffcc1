"""The shape every connector shares: start/stop, an event queue, idle heartbeats."""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any, Self

from bond.schemas import CustomEvent, Heartbeat, OnchainEvent, RawTick, SourceName, Tweet

log = logging.getLogger(__name__)

Event = RawTick | Tweet | OnchainEvent | CustomEvent | Heartbeat


def now_ms() -> int:
  """Return the wall clock in epoch milliseconds."""
  return time.time_ns() // 1_000_000


class Connector:
  """Base of the connectors: runs worker tasks that put events on a bounded queue.

  Iterate with `async for ev in connector` (or `connector.events()`). When a feed
  (one key of `feeds()`) has been quiet for `heartbeat_sec`, a Heartbeat for it is
  yielded so downstream windows can close on time.
  """

  source: SourceName = "ccxt"

  def __init__(
    self, queue_size: int = 10_000, heartbeat_sec: float = 1.0, heartbeat_lag_ms: int = 200
  ) -> None:
    self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
    self.heartbeat_sec = heartbeat_sec
    self.heartbeat_lag_ms = heartbeat_lag_ms
    self.stats: dict[str, int] = {"events": 0, "heartbeats": 0, "errors": 0}
    self._tasks: list[asyncio.Task[None]] = []
    self._last_event: dict[tuple[str, str], float] = {}
    self._held: dict[tuple[str, str], float] = {}
    self._running = False

  # ------------------------------------------------------------------ lifecycle

  async def start(self) -> None:
    """Start the worker tasks and the heartbeat timer."""
    if self._running:
      return
    self._running = True
    try:
      await self._open()
    except BaseException:
      self._running = False
      raise
    now = time.monotonic()
    for feed in self.feeds():
      self._last_event[feed] = now
    for coro in self.workers():
      self._spawn(coro)
    if self.heartbeat_sec > 0:
      self._spawn(self._heartbeats())

  async def stop(self) -> None:
    """Cancel the workers and release clients; safe to call more than once."""
    if not self._running:
      return
    self._running = False
    tasks, self._tasks = self._tasks, []
    for task in tasks:
      task.cancel()
    for task in tasks:
      with contextlib.suppress(asyncio.CancelledError):
        await task
    await self._close()

  async def __aenter__(self) -> Self:
    await self.start()
    return self

  async def __aexit__(self, *exc: object) -> None:
    await self.stop()

  @property
  def running(self) -> bool:
    """Return whether the connector has been started and not stopped."""
    return self._running

  # ------------------------------------------------------------------ iteration

  async def events(self) -> AsyncIterator[Event]:
    """Yield events as they arrive, until the connector stops."""
    while self._running or not self.queue.empty():
      try:
        ev = await asyncio.wait_for(self.queue.get(), timeout=0.25)
      except TimeoutError:
        continue
      yield ev

  def __aiter__(self) -> AsyncIterator[Event]:
    return self.events()

  # ------------------------------------------------------------------ for subclasses

  def feeds(self) -> Iterable[tuple[str, str]]:
    """Return the (exchange, symbol) feeds this connector serves, for heartbeats."""
    return ()

  def workers(self) -> Iterable[Coroutine[Any, Any, None]]:
    """Return the coroutines to run while started."""
    return ()

  async def _open(self) -> None:
    """Create clients before the workers start."""

  async def _close(self) -> None:
    """Release clients after the workers stopped."""

  async def emit(self, ev: Event, feed: tuple[str, str] | None = None) -> None:
    """Queue one event (waiting when the queue is full) and mark its feed active."""
    if ev.ts_ingest == 0:
      ev.ts_ingest = now_ms()
    await self.queue.put(ev)
    self.stats["events"] += 1
    if feed is not None:
      self._last_event[feed] = time.monotonic()

  def hold_heartbeats(self, feed: tuple[str, str], max_sec: float = 20.0) -> None:
    """Send no heartbeat for `feed` until released (or `max_sec`): it is catching up."""
    self._held[feed] = time.monotonic() + max_sec

  def release_heartbeats(self, feed: tuple[str, str]) -> None:
    """End a hold: the feed has caught up."""
    self._held.pop(feed, None)

  def held(self, feed: tuple[str, str]) -> bool:
    """Return whether `feed` is catching up (its progress must not run ahead)."""
    return self._held.get(feed, 0.0) > time.monotonic()

  async def before_heartbeat(self, feed: tuple[str, str], ts: int) -> None:
    """Emit what waited for the feed's progress to reach `ts` (a heartbeat is about to)."""

  def touch(self, feed: tuple[str, str]) -> None:
    """Mark a feed as active now (it will not need a heartbeat for a while)."""
    self._last_event[feed] = time.monotonic()

  def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
    self._tasks.append(asyncio.create_task(coro))

  def heartbeat(self, feed: tuple[str, str]) -> Heartbeat:
    """Build the Heartbeat of one quiet feed."""
    exchange, symbol = feed
    return Heartbeat(
      ts=now_ms() - self.heartbeat_lag_ms,
      ts_ingest=now_ms(),
      source=self.source,
      exchange=exchange,
      symbol=symbol,
      sim=getattr(self, "sim", False),
    )

  async def _heartbeats(self) -> None:
    tick = max(0.05, self.heartbeat_sec / 4)
    while True:
      await asyncio.sleep(tick)
      now = time.monotonic()
      if not self.queue.empty():
        continue  # events are waiting to be read: the feeds are behind, not quiet
      for feed, last in list(self._last_event.items()):
        # A feed backfilling a gap must not claim progress past the trades still to come.
        if self._held and self._held.get(feed, 0) > now:
          continue
        if now - last >= self.heartbeat_sec:
          beat = self.heartbeat(feed)
          await self.before_heartbeat(feed, beat.ts)
          await self.queue.put(beat)
          self.stats["heartbeats"] += 1
          self._last_event[feed] = now
