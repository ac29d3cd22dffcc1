"""Run each feed exactly once across the workers (ARCHITECTURE.md "Feeds").

A feed (source, exchange, symbol) runs for the worker that owns the partition of its raw
topic key, the same worker that aggregates its panes; when partitions move, feeds move.
The worker decides which feeds run; its feed host, a child process (`agents/feedhost.py`),
runs them, so parsing and publishing raw events never holds up the worker's windows.
"""

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from typing import Any

from bond.agents.app import app, settings
from bond.agents.feedrunner import FeedParams
from bond.agents.panes import reader, settled
from bond.agents.state import partition_for, state
from bond.connectors.backoff import Backoff
from bond.schemas import CcxtSource, CustomSource, OnchainSource
from bond.topics import RAW_TOPICS
from bond.windowing import Feed

log = logging.getLogger(__name__)

ENABLED = settings.bond_feeds
MUTE_TIMEOUT_SEC = 2.0  # a host that has not confirmed a mute by then is killed
STOP_TIMEOUT_SEC = 5.0
RESTART = Backoff(base_sec=0.5, max_sec=10.0, jitter=0.2)
MAX_LINE = 4 * 1024 * 1024


def source_params(feed: Feed) -> FeedParams:
  """Return what the streams using `feed` ask of it (liquidations, event types, custom source)."""
  liquidations, event_types, custom = False, set(), None
  for sid in state.by_feed.get(feed.id, ()):
    spec = state.streams[sid][0].spec
    for src in spec.sources:
      if isinstance(src, CcxtSource) and feed.source == "ccxt":
        liquidations |= src.liquidations
      elif isinstance(src, OnchainSource) and feed.source == "onchain":
        event_types |= set(src.event_types)
      elif (
        isinstance(src, CustomSource) and feed.source == "custom" and src.source_id == feed.exchange
      ):
        custom = src
  return FeedParams(liquidations, tuple(sorted(event_types)), custom)


def owned_feeds() -> dict[str, Feed]:
  """Return the feeds this worker should run: those whose raw partition it owns."""
  owned = {(tp.topic, tp.partition) for tp in reader.wanted()}

  def mine(feed: Feed) -> bool:
    topic = RAW_TOPICS[feed.source]
    return (topic.name, partition_for(feed.raw_key, topic.partitions)) in owned

  return {fid: f for fid, f in state.all_feeds().items() if mine(f)}


class FeedHost:
  """The worker's side of its feed host: starts it (again, if it dies), tells it which feeds
  to run, mutes it, and keeps what it last reported (`running`, `stats`)."""

  def __init__(self) -> None:
    self.proc: asyncio.subprocess.Process | None = None
    self.running: list[str] = []
    self.stats: dict[str, int] = {}
    self.restarts = 0
    self._sent: str | None = None  # the last feed set sent to the current process
    self._asked: tuple[int, tuple[str, ...]] | None = None  # (registry version, feed ids) of it
    self._mutes: dict[int, asyncio.Future[None]] = {}
    self._next_id = 0
    self._start_after = 0.0
    self._reader: asyncio.Task[None] | None = None
    self._lock = asyncio.Lock()  # one writer at a time on the host's stdin

  def alive(self) -> bool:
    return self.proc is not None and self.proc.returncode is None

  async def _ensure(self) -> bool:
    """Start the host if it is not running (not sooner than its restart backoff)."""
    if self.alive():
      return True
    if time.monotonic() < self._start_after:
      return False
    if self.proc is not None:  # it died: start another after a pause that grows
      self.restarts += 1
      log.error("feed host exited with %s; starting another", self.proc.returncode)
      self._start_after = time.monotonic() + RESTART.delay(self.restarts)
      self.proc = None
      self.running = []
      return False
    self.proc = await asyncio.create_subprocess_exec(
      sys.executable, "-m", "bond.agents.feedhost", "--parent", str(os.getpid()),
      stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=MAX_LINE,
    )  # fmt: skip
    self._sent = None
    self._reader = asyncio.create_task(self._read(self.proc), name="feed host reader")
    return True

  async def _read(self, proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
      try:
        msg = json.loads(line)
      except ValueError:
        continue
      if msg.get("op") == "stats":
        self.running, self.stats = list(msg.get("running", [])), dict(msg.get("stats", {}))
      elif msg.get("op") == "muted":
        fut = self._mutes.pop(int(msg.get("id", -1)), None)
        if fut is not None and not fut.done():
          fut.set_result(None)

  async def _write(self, msg: dict[str, Any]) -> bool:
    proc = self.proc
    if proc is None or proc.stdin is None or proc.returncode is not None:
      return False
    try:
      async with self._lock:
        proc.stdin.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
        await proc.stdin.drain()
    except (ConnectionError, OSError) as err:
      log.warning("feed host: cannot write to it: %r", err)
      return False
    return True

  async def run(self, feeds: dict[str, Feed]) -> None:
    """Have the host run exactly these feeds (sent again only when the set changes)."""
    if not await self._ensure():
      return
    asked = (state.version, tuple(sorted(feeds)))
    if asked == self._asked and self._sent is not None:
      return  # nothing changed: what the streams ask of each feed is not read again
    self._asked = asked
    items = [{"feed": [f.source, f.exchange, f.symbol, f.raw_key],
              "params": source_params(f).to_wire()} for f in feeds.values()]  # fmt: skip
    body = json.dumps(items, sort_keys=True)
    if body == self._sent:
      return
    if await self._write({"op": "run", "feeds": items}):
      self._sent = body

  async def mute(self) -> None:
    """Return once nothing publishes from the host: it confirmed, or it was killed."""
    proc = self.proc
    if proc is None or proc.returncode is not None:
      return
    self._next_id += 1
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    self._mutes[self._next_id] = fut
    self._sent = None  # whatever set comes next is sent again
    confirmed = await self._write({"op": "mute", "id": self._next_id})
    if confirmed:
      try:
        await asyncio.wait_for(fut, MUTE_TIMEOUT_SEC)
        return
      except TimeoutError:
        pass
    self._mutes.pop(self._next_id, None)
    log.error("feed host did not confirm a mute within %.0fs: killing it", MUTE_TIMEOUT_SEC)
    with contextlib.suppress(ProcessLookupError):
      proc.kill()
    await proc.wait()

  async def stop(self) -> None:
    """End the host: stdin closed (it mutes and exits), killed if it lingers."""
    proc, self.proc = self.proc, None
    if proc is None or proc.returncode is not None:
      return
    if proc.stdin is not None:
      proc.stdin.close()
    try:
      await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_SEC)
    except TimeoutError:
      with contextlib.suppress(ProcessLookupError):
        proc.kill()
      await proc.wait()


host = FeedHost()


@app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types receivers narrowly
async def mute_on_revoke(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
  """A rebalance begins: no feed of this worker publishes until ownership is settled again.

  This runs inside the revocation, before any other worker can be given our partitions,
  so two workers never publish one feed; whoever owns it next resumes after its last trade.
  """
  await host.mute()


@app.timer(0.25)
async def reconcile_feeds() -> None:
  """Keep exactly the owned feeds running (streams come and go, partitions move)."""
  if not ENABLED:
    return
  await host.run(owned_feeds() if settled() else {})


@app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types receivers narrowly
async def stop_feed_host(sender: Any, **kwargs: Any) -> None:
  """The worker stops: so does its feed host."""
  await host.stop()
