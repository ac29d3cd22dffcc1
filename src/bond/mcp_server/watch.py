"""Resource subscriptions: one background listener per subscribed stream, bounded in number.

While at least one `subscriptions/listen` stream of a client wants
`bond://streams/{id}/latest`, a listener follows that Bond stream over the SDK, keeps its
latest window and publishes `ResourceUpdated` on the MCP subscription bus for each new one.
The last subscriber leaving stops it. Hosts on the handshake-era protocol (2025) subscribe
with `resources/subscribe` instead; their sessions get `notifications/resources/updated`
directly. Their sessions cannot be seen going away, so a stream followed only for them is
the first to stop when the limit is reached.
"""

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mcp.server.session import ServerSession
from mcp.server.subscriptions import ResourceUpdated, SubscriptionBus

from bond.client import BondClient
from bond.errors import BondError

log = logging.getLogger(__name__)

LATEST_URI = "bond://streams/{stream_id}/latest"
_LATEST_RE = re.compile(r"bond://streams/([0-9a-f]{16})/latest")
MAX_WATCHED_STREAMS = 16


def latest_uri(stream_id: str) -> str:
  """Return the URI of a stream's latest-window resource."""
  return LATEST_URI.format(stream_id=stream_id)


def stream_of(uri: str) -> str | None:
  """Return the stream id of a latest-window URI, or None when it is not one."""
  found = _LATEST_RE.fullmatch(uri)
  return found[1] if found else None


class TooManyWatchesError(BondError):
  """More streams are subscribed than the server follows at once."""

  code = "too_many_subscriptions"


@dataclass
class _Watch:
  client: BondClient
  refs: int = 0
  latest: dict[str, Any] | None = None
  error: str | None = None
  sessions: set[ServerSession] = field(default_factory=set)
  task: asyncio.Task[None] | None = field(default=None, repr=False)


class StreamWatchers:
  """Follows subscribed streams (per API key and stream id) and announces each new window."""

  def __init__(self, bus: SubscriptionBus, max_streams: int = MAX_WATCHED_STREAMS) -> None:
    self.bus = bus
    self.max_streams = max_streams
    self._watches: dict[tuple[str | None, str], _Watch] = {}

  def __len__(self) -> int:
    return len(self._watches)

  def acquire(self, key: str | None, stream_id: str, make_client: Callable[[], BondClient]) -> None:
    """Count one more subscriber of a stream, starting a listener for the first."""
    watch = self._watches.get((key, stream_id))
    if watch is None:
      if len(self._watches) >= self.max_streams:
        self._evict_legacy_only()
      if len(self._watches) >= self.max_streams:
        raise TooManyWatchesError(
          f"this server already follows {self.max_streams} subscribed streams (the limit); "
          "end a subscription first, or poll with wait_for_windows"
        )
      watch = _Watch(make_client())
      watch.task = asyncio.create_task(
        self._follow(stream_id, watch), name=f"bond-mcp-watch-{stream_id}"
      )
      self._watches[(key, stream_id)] = watch
    watch.refs += 1

  def release(self, key: str | None, stream_id: str) -> None:
    """Drop one subscriber; the last one stops the listener."""
    watch = self._watches.get((key, stream_id))
    if watch is None:
      return
    watch.refs -= 1
    if watch.refs <= 0:
      del self._watches[(key, stream_id)]
      if watch.task is not None:
        watch.task.cancel()

  def _evict_legacy_only(self) -> None:
    """Stop the oldest stream followed only for handshake-era sessions.

    Those sessions cannot be seen going away (the SDK drops notifications to a closed session
    silently), so at the limit they make room rather than block live subscriptions forever.
    """
    for key, watch in self._watches.items():  # oldest first (insertion order)
      if watch.refs == len(watch.sessions):
        watch.refs = 0
        watch.sessions.clear()
        del self._watches[key]
        if watch.task is not None:
          watch.task.cancel()
        log.info("bond mcp: stopped following %s for resources/subscribe sessions", key[1])
        return

  def add_session(
    self,
    key: str | None,
    stream_id: str,
    session: ServerSession,
    make_client: Callable[[], BondClient],
  ) -> None:
    """Subscribe a handshake-era session (`resources/subscribe`); twice counts once."""
    watch = self._watches.get((key, stream_id))
    if watch is not None and session in watch.sessions:
      return
    self.acquire(key, stream_id, make_client)
    self._watches[(key, stream_id)].sessions.add(session)

  def remove_session(self, key: str | None, stream_id: str, session: ServerSession) -> None:
    """Unsubscribe a handshake-era session."""
    watch = self._watches.get((key, stream_id))
    if watch is not None and session in watch.sessions:
      watch.sessions.discard(session)
      self.release(key, stream_id)

  def latest(self, key: str | None, stream_id: str) -> tuple[bool, dict[str, Any] | None]:
    """Return whether a listener follows the stream, and the newest window it has seen."""
    watch = self._watches.get((key, stream_id))
    if watch is None:
      return False, None
    if watch.error is not None:
      raise BondError(watch.error)
    return True, watch.latest

  async def _follow(self, stream_id: str, watch: _Watch) -> None:
    uri = latest_uri(stream_id)
    try:
      async for event in watch.client.listen(stream_id):
        watch.latest = dict(event)
        await self.bus.publish(ResourceUpdated(uri=uri))
        await self._tell_sessions(watch, uri)
    except BondError as err:
      # A deleted stream or a refused key: subscribers get one last update and read the error.
      watch.error = err.message
      log.info("bond mcp: stopped following %s: %s", stream_id, err.message)
      await self.bus.publish(ResourceUpdated(uri=uri))
      await self._tell_sessions(watch, uri)
    finally:
      await watch.client.aclose()

  async def _tell_sessions(self, watch: _Watch, uri: str) -> None:
    for session in list(watch.sessions):
      await session.send_resource_updated(uri)  # dropped silently once the session is closed

  async def aclose(self) -> None:
    """Stop every listener."""
    watches, self._watches = list(self._watches.values()), {}
    tasks = [w.task for w in watches if w.task is not None]
    for task in tasks:
      task.cancel()
    for task in tasks:
      with contextlib.suppress(asyncio.CancelledError):
        await task
