"""Read a stream's windows through the SDK: the latest ones in a time range, and the next ones.

`read_windows` is the one place that decides where past windows come from. Today that is the
gateway's replay ring (the last 60 s, at most 1000 windows) through a WebSocket `from=`
replay; once the SDK has `BondClient.history(stream_id, from_, to)` (Kafka-backed history) it
is used instead, with no change to the tools.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

from bond.client import BondClient, BondEvent
from bond.mcp_server.fields import iso

log = logging.getLogger(__name__)

# How long the gateway may take to answer a replay (token, connect, first frame), and the
# silence after the last replayed frame that marks the end of the replay burst.
FIRST_FRAME_SEC = 5.0
QUIET_SEC = 0.5
MAX_RING_WINDOWS = 1000  # the gateway's ring keeps at most about 1000 windows

Progress = Callable[[int], Awaitable[None]]


@contextlib.asynccontextmanager
async def _frames(
  client: BondClient, stream_id: str, from_: str | None
) -> AsyncIterator[tuple[asyncio.Queue[BondEvent], asyncio.Task[None]]]:
  """Yield a queue the stream's frames arrive in (from `from_`) and the task filling it."""
  queue: asyncio.Queue[BondEvent] = asyncio.Queue(maxsize=MAX_RING_WINDOWS)

  async def pump() -> None:
    async for event in client.listen(stream_id, from_=from_):
      await queue.put(event)

  task = asyncio.create_task(pump(), name=f"bond-mcp-listen-{stream_id}")
  try:
    yield queue, task
  finally:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
      await task


async def _next(
  queue: asyncio.Queue[BondEvent], task: asyncio.Task[None], timeout_sec: float
) -> BondEvent | None:
  """Return the next frame, None after `timeout_sec` of silence; raise what ended the listen."""
  getter = asyncio.ensure_future(queue.get())
  done, _ = await asyncio.wait({getter, task}, timeout=timeout_sec, return_when="FIRST_COMPLETED")
  if getter in done:
    return getter.result()
  getter.cancel()
  if task in done:
    task.result()  # a StreamClosedError or BondAPIError: the caller turns it into a tool error
  return None


async def ring_windows(
  client: BondClient, stream_id: str, from_ms: int, to_ms: int
) -> list[dict[str, Any]]:
  """Return the stream's windows with from_ms < seq <= to_ms that the gateway's ring still has."""
  events: list[dict[str, Any]] = []
  async with _frames(client, stream_id, iso(from_ms)) as (queue, task):
    wait = FIRST_FRAME_SEC
    while len(events) < MAX_RING_WINDOWS:
      event = await _next(queue, task, wait)
      if event is None:
        break
      wait = QUIET_SEC
      seq = event.get("seq", 0)
      if seq > to_ms:
        break  # a live window past the range: the replay is over
      if seq > from_ms:
        events.append(cast(dict[str, Any], event))
  return events


async def read_windows(
  client: BondClient, stream_id: str, from_ms: int, to_ms: int, limit: int
) -> list[dict[str, Any]]:
  """Return the latest `limit` windows with from_ms < seq <= to_ms, oldest first."""
  history = getattr(client, "history", None)
  if callable(history):
    # The Kafka-backed history of #14: hours of windows, not just the ring.
    found = await history(stream_id, iso(from_ms), iso(to_ms))
    events = [dict(e) for e in found if from_ms < int(e.get("seq", 0)) <= to_ms]
  else:
    events = await ring_windows(client, stream_id, from_ms, to_ms)
  return events[-limit:] if limit else []


async def next_windows(
  client: BondClient,
  stream_id: str,
  count: int,
  timeout_sec: float,
  after_seq: int | None = None,
  progress: Progress | None = None,
) -> tuple[list[dict[str, Any]], bool]:
  """Return up to `count` windows newer than `after_seq` (or than now) and whether time ran out."""
  events: list[dict[str, Any]] = []
  deadline = time.monotonic() + timeout_sec
  from_ = str(after_seq) if after_seq is not None else None
  async with _frames(client, stream_id, from_) as (queue, task):
    while len(events) < count:
      left = deadline - time.monotonic()
      if left <= 0:
        return events, True
      event = await _next(queue, task, left)
      if event is None:
        return events, True
      events.append(cast(dict[str, Any], event))
      if progress is not None:
        await progress(len(events))
  return events, False
