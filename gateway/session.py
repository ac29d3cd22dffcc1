"""One WebSocket session: its bounded queue of live frames, its token's expiry, how it ends."""

import asyncio
import logging
import time
from collections import deque

from starlette.websockets import WebSocket, WebSocketDisconnect

from bond import wire
from bond.gateway.direct import DirectWriter

log = logging.getLogger(__name__)

NOTHING_SENT = -1  # a session's last seq before its first frame (seqs are epoch ms)
CLOSE_TIMEOUT_SEC = 10.0


class Refused(Exception):
  """A socket the gateway will not serve: the close code and the reason sent with it."""

  def __init__(self, code: int, reason: str) -> None:
    super().__init__(reason)
    self.code = code
    self.reason = reason


class Session:
  """One socket's queue of live frames, bounded in frames and in bytes, and its token."""

  def __init__(
    self,
    stream_id: str,
    limit: int,
    direct: DirectWriter | None = None,
    limit_bytes: int = 8 << 20,
  ) -> None:
    self.stream_id = stream_id
    self.limit = limit
    self.limit_bytes = limit_bytes
    self.direct = direct
    self.queue: deque[tuple[int, str]] = deque()
    self.queued_bytes = 0
    self.ready = asyncio.Event()
    self.done = asyncio.Event()
    self.code: int | None = None
    self.reason = ""
    self.disconnected = False
    self.last = NOTHING_SENT  # the seq of the last frame sent, by either path
    # True only while the send task is idle and caught up (replay and splice done, queue
    # empty, nothing being sent): the fan-out may then write frames to the socket itself.
    self.live = False
    # The token in use: its MAC (the per-token connection cap), epoch and expiry.
    self.token_key = ""
    self.client_ip = ""
    self.epoch = 0
    self.expires_at = 0
    self._expiry: asyncio.TimerHandle | None = None

  def deliver(self, seq: int, frame: str) -> bool:
    """Write one live frame now (True) or queue it; end with 4408 when the queue is full."""
    if self.live:
      if seq <= self.last:
        return False
      if self.direct is not None and self.direct.write(frame):
        self.last = seq
        return True
      self.live = False  # the socket is backed up: the send task waits for it
    if self.done.is_set():
      return False
    # len(str) counts characters; frames are JSON, so almost always ASCII: bytes ~ chars.
    over = ""
    if len(self.queue) >= self.limit:
      over = f"more than {self.limit} frames waiting (BOND_WS_QUEUE)"
    elif self.queued_bytes + len(frame) > self.limit_bytes:
      over = f"more than {self.limit_bytes} bytes waiting (BOND_WS_QUEUE_BYTES)"
    if over:
      self.queue.clear()
      self.queued_bytes = 0
      self.end(wire.TOO_SLOW, f"client too slow: {over}")
      return False
    self.queue.append((seq, frame))
    self.queued_bytes += len(frame)
    self.ready.set()
    return False

  def pop(self) -> tuple[int, str]:
    """Take the oldest queued frame."""
    seq, frame = self.queue.popleft()
    self.queued_bytes -= len(frame)
    return seq, frame

  def hold_token(self, epoch: int, expires_at: int) -> None:
    """Use a (new) token: close the socket with 4401 when it expires, unless refreshed."""
    self.epoch, self.expires_at = epoch, expires_at
    if self._expiry is not None:
      self._expiry.cancel()
    delay = max(0.0, expires_at - time.time())
    self._expiry = asyncio.get_running_loop().call_later(delay, self._expire)

  def _expire(self) -> None:
    self._expiry = None
    if time.time() < self.expires_at:  # the clock moved: wait for the real expiry
      self.hold_token(self.epoch, self.expires_at)
      return
    self.end(
      wire.BAD_TOKEN,
      f"expired: token expired at {self.expires_at}; send a refresh frame or reconnect",
    )

  def end(self, code: int, reason: str) -> None:
    """Ask for the socket to be closed with a code (the first request wins)."""
    self.live = False
    if not self.done.is_set():
      self.code, self.reason = code, reason
      self.done.set()

  def gone(self) -> None:
    """Record that the client went away."""
    self.live = False
    self.disconnected = True
    self.done.set()

  def release(self) -> None:
    """Drop the expiry timer (the session is over)."""
    if self._expiry is not None:
      self._expiry.cancel()
      self._expiry = None


async def close_socket(ws: WebSocket, code: int, reason: str) -> None:
  """Send a close frame with a code and reason, giving up after CLOSE_TIMEOUT_SEC."""
  # A close reason is at most 123 bytes; a stalled client may never let the frame out.
  text = reason.encode()[:123].decode(errors="ignore")
  try:
    await asyncio.wait_for(ws.close(code, text), CLOSE_TIMEOUT_SEC)
  except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError) as err:
    log.debug("gateway: close %d not sent: %s", code, err)
