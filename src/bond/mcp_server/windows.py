"""Read a stream's windows through the SDK: the latest ones in a time range, and the next ones.

`read_windows` is the one place that decides where past windows come from: the SDK's
`BondClient.history` (GET /v1/streams/{id}/windows: Kafka-backed, BOND_HISTORY_HOURS deep);
a client without it reads the gateway's replay ring (60 s) through a WebSocket `from=` replay.
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

# A window that ended this recently may still be on its way (lateness, then the sink).
RECENT_MS = 5_000

# How long the gateway may take to answer a replay (token, connect, first frame), and how
# long to wait after the last frame when the window expected last has not come (missing).
FIRST_FRAME_SEC = 10.0
QUIET_SEC = 2.0
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


def last_window_end(
  to_ms: int, now_ms: int, interval_ms: int, created_ms: int, backfill_ms: int = 0
) -> int | None:
  """Return the seq of the newest window that exists by now within `to_ms`, or None if none can.

  Windows are aligned to the epoch and every one is emitted (empty ones too), so the last
  one ending at or before min(to, now) is known; one ending at or before the stream's
  creation was never computed, unless the stream was created with a backfill of its past
  (`backfill_ms`).
  """
  last = min(to_ms, now_ms) // interval_ms * interval_ms
  return last if last > created_ms - backfill_ms else None


async def ring_windows(
  client: BondClient, stream_id: str, from_ms: int, to_ms: int, last_ms: int
) -> list[dict[str, Any]]:
  """Return the windows with from_ms < seq <= to_ms that the gateway's ring still has.

  The replay is over when the window ending at `last_ms` has come (it is in the ring, or
  arrives live within the lateness), a window past `to_ms` arrives, or nothing comes for a
  while (a window missing after an outage).
  """
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
        break
      if seq > from_ms:
        events.append(cast(dict[str, Any], event))
      if seq >= last_ms:
        break
  return events


async def read_windows(
  client: BondClient, stream_id: str, from_ms: int, to_ms: int, limit: int
) -> list[dict[str, Any]]:
  """Return the latest `limit` windows with from_ms < seq <= to_ms, oldest first."""
  info = await client.get_stream(stream_id)  # a clear "no stream" before any WebSocket
  interval_ms = int(info["spec"]["interval_sec"]) * 1000
  backfill_ms = int((info.get("backfill") or {}).get("requested_sec") or 0) * 1000
  last_ms = last_window_end(
    to_ms, int(time.time() * 1000), interval_ms, int(info["created_at_ms"]), backfill_ms
  )
  if last_ms is None or last_ms <= from_ms or limit <= 0:
    return []
  history = getattr(client, "history", None)
  if callable(history):
    # The Kafka-backed history of #14: hours of windows, not just the ring. Windows are
    # epoch-aligned and every one is emitted, so the latest `limit` start here.
    start_ms = max(from_ms, last_ms - limit * interval_ms)
    found = await history(stream_id, iso(start_ms), iso(to_ms), limit=limit + 1)
    events = [dict(e) for e in found if from_ms < int(e.get("seq", 0)) <= to_ms]
    newest = int(events[-1]["seq"]) if events else from_ms
    if newest < last_ms and int(time.time() * 1000) - last_ms < RECENT_MS:
      # The newest windows may be out only in a moment: wait for them on the ring replay.
      tail = await ring_windows(client, stream_id, max(from_ms, newest), to_ms, last_ms)
      events += [e for e in tail if int(e.get("seq", 0)) > newest]
  else:
    events = await ring_windows(client, stream_id, from_ms, to_ms, last_ms)
  return events[-limit:]


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
