"""The WebSocket gateway: token check, replay from the Redis ring, then live from Kafka.

`/ws/{stream_id}?token=...&from=...` sends AggregatedEvent JSON text frames in strictly
increasing `seq`. A connection registers for live events first (they wait in its send
queue), replays the ring from `from`, then drains the queue keeping only `seq` greater
than the last one sent, so the splice has no gap and no duplicate. A `from` older than the
ring's oldest window is first read from the stream's Kafka topic (`history.py`), from that
time up to the topic's end when the read begins: every later window is in the queue.

The client may send one kind of message: `{"type": "refresh", "token": "<new token>"}`
(a text frame within BOND_WS_MAX_FRAME_BYTES) to keep the socket past its token's
expiry; anything else is read and dropped. Close codes are those of `bond.wire`.
"""

import asyncio
import functools
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any, cast

import redis.asyncio as aioredis
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect

from bond import wire
from bond.config import Settings
from bond.gateway.admission import Admission
from bond.gateway.direct import direct_writer
from bond.gateway.fanout import Fanout
from bond.gateway.gctune import GcTuning
from bond.gateway.history import HistoryBusy, HistoryReader, Slots, from_kafka, oldest_ms
from bond.gateway.resume import ReplayStart
from bond.gateway.session import NOTHING_SENT, Refused, Session, close_socket
from bond.gateway.shutdown import bounded
from bond.gateway.stats import GatewayStats
from bond.registry import Registry, StreamRecord
from bond.tokens import TokenError

log = logging.getLogger(__name__)

MAX_CLIENT_MSGS_PER_SEC = 100
GO_AWAY_TIMEOUT_SEC = 5.0
STOP_STEP_SEC = 3.0  # each step of a shutdown after the sockets are closed
STOP_SEC = 6.0  # all of them
FLUSH_SEC = 0.5
RING_PAGE = 500
GAP_RETRY_SEC = (0.05, 0.1, 0.2, 0.4)


class Gateway:
  """The gateway's long-lived clients (registry, Redis, fan-out) and its open sessions."""

  def __init__(self, settings: Settings) -> None:
    self.settings = settings
    self.registry = Registry(settings.kafka_bootstrap)
    self.fanout = Fanout(settings.kafka_bootstrap, on_sent=self._count_sent)
    self.redis: aioredis.Redis = aioredis.from_url(
      settings.redis_url,
      socket_timeout=5,
      socket_connect_timeout=2,
      retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
    )
    self.sessions: dict[str, set[Session]] = defaultdict(set)
    self.admission = Admission(settings, self.registry)
    self.closing = False
    self.open = 0
    self.msgs_out = 0
    self.replayed = 0
    self.history_replays = 0
    self.history_slots = Slots(settings.bond_history_readers)
    self.dropped = 0
    self.closes: dict[int, int] = defaultdict(int)
    self.prometheus = CollectorRegistry(auto_describe=True)
    self.prometheus.register(GatewayStats(self))
    self._pending: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    self._flusher: asyncio.Task[None] | None = None
    self._idle = asyncio.Event()
    self._idle.set()
    self._started = False
    self.gc = GcTuning(lambda: self.open)
    self.registry.add_listener(self._on_registry)

  @property
  def deleted(self) -> set[str]:
    """Return the streams this gateway saw deleted."""
    return self.admission.deleted

  def fanout_stats(self) -> dict[str, int]:
    """Return the fan-out's counters."""
    return self.fanout.stats()

  async def start(self) -> None:
    """Load the registry, start the fan-out and the metrics flusher."""
    self.settings.require_safe_secret()
    await self.registry.start()
    await self.fanout.start()
    self._flusher = asyncio.create_task(self._flush_loop(), name="gateway-metrics")
    self._started = True

  async def stop(self) -> None:
    """Close sessions with 1001, flush metrics, stop every client; safe to call twice."""
    if not self._started:
      return
    self._started = False
    # Told to go away before (a signal, the test harness): the sessions were closed then.
    await self.go_away(1.0 if self.closing else GO_AWAY_TIMEOUT_SEC)
    flusher, self._flusher = self._flusher, None
    if flusher is not None:
      flusher.cancel()
      await bounded("the gateway's metrics flusher", lambda: asyncio.gather(flusher), 1.0)
    # Each step is bounded, and so are they all: a client library stuck on a connection must
    # not hold the process's shutdown (seen in CI: a gateway still stopping after 30 s).
    steps = (("metrics", self.flush_metrics), ("fan-out", self.fanout.stop),
             ("registry", self.registry.stop), ("redis", self.redis.aclose))  # fmt: skip
    deadline = time.monotonic() + STOP_SEC
    for name, step in steps:
      left = min(STOP_STEP_SEC, deadline - time.monotonic())
      await bounded(f"the gateway's {name}", step, left)
    self.gc.stop()

  async def __aenter__(self) -> "Gateway":
    await self.start()
    return self

  async def __aexit__(self, *exc: object) -> None:
    await self.stop()

  async def go_away(self, timeout_sec: float = GO_AWAY_TIMEOUT_SEC) -> None:
    """Refuse new sockets and close open ones with 1001; wait for them to finish."""
    self.closing = True
    for group in list(self.sessions.values()):
      for session in list(group):
        session.end(wire.GOING_AWAY, "server going away")
    try:
      await asyncio.wait_for(self._idle.wait(), timeout_sec)
    except TimeoutError:
      log.warning("gateway: %d sessions still open after %.1fs", self.open, timeout_sec)

  # ------------------------------------------------------------------ one socket

  async def serve(self, ws: WebSocket) -> None:
    """Run one WebSocket from accept to close."""
    await ws.accept()  # accept first: a close before accept reaches clients as HTTP 403
    sid = ws.path_params["stream_id"]
    conf = self.settings
    session = Session(sid, conf.bond_ws_queue, direct_writer(ws), conf.bond_ws_queue_bytes)
    try:
      if self.closing:
        raise Refused(wire.GOING_AWAY, "server going away")
      start, record = await self.admission.admit(ws, sid, session)
    except Refused as refused:
      self.closes[refused.code] += 1
      await close_socket(ws, refused.code, refused.reason)
      return
    self._add(session)
    tasks = [
      asyncio.create_task(self._pump(ws, session, start, record.spec.interval_sec * 1000)),
      asyncio.create_task(self._read(ws, session)),
    ]
    for task in tasks:
      task.add_done_callback(functools.partial(_end_on_error, session=session))
    try:
      await session.done.wait()
    finally:
      for task in tasks:
        task.cancel()
      await asyncio.gather(*tasks, return_exceptions=True)
      self._remove(session)
      if session.code == wire.TOO_SLOW:
        self.dropped += 1
        self._pending[sid]["dropped"] += 1
      if session.code is not None:
        self.closes[session.code] += 1
        if not session.disconnected:
          await close_socket(ws, session.code, session.reason)

  async def _pump(
    self, ws: WebSocket, s: Session, start: ReplayStart | None, interval_ms: int
  ) -> None:
    sid = s.stream_id
    try:
      await self.fanout.subscribe(sid, s)
    except KafkaError as err:
      log.warning("gateway: cannot listen to %s: %s", sid, err)
      s.end(wire.TRY_AGAIN, "live feed unavailable, try again later")
      return
    if start is not None and start.after is not None:
      s.last = start.after
    check_gap = start is not None
    min_seq = start.min_seq if start else 0
    try:
      if start is not None:
        min_seq = await self._history(ws, s, min_seq)
        await self._replay(ws, s, min_seq, None)
      while True:
        if not check_gap and s.direct is not None and not s.done.is_set():
          # Caught up and nothing queued or in flight: the fan-out may write directly.
          s.live = True
        await s.ready.wait()
        s.ready.clear()
        while s.queue and not s.done.is_set():
          seq, frame = s.pop()
          if seq <= s.last:
            continue
          if check_gap:
            check_gap = False
            await self._close_gap(ws, s, min_seq, seq, interval_ms)
          await self._send(ws, s, frame)
          s.last = seq
    except (RedisError, OSError) as err:
      log.warning("gateway: replay of %s failed: %s", sid, err)
      s.end(wire.TRY_AGAIN, "replay unavailable (Redis), try again later")
    except KafkaError as err:
      log.warning("gateway: history of %s failed: %s", sid, err)
      s.end(wire.TRY_AGAIN, "history unavailable (Kafka), try again later")
    except HistoryBusy as err:
      s.end(wire.TRY_AGAIN, f"history busy: {err}; try again later")
    except WebSocketDisconnect:
      s.gone()

  async def _history(self, ws: WebSocket, s: Session, min_seq: int) -> int:
    """Send the windows from min_seq that the ring no longer holds, from Kafka; return
    min_seq clamped to the history kept (BOND_HISTORY_HOURS)."""
    min_seq = max(min_seq, oldest_ms(self.settings.bond_history_hours))
    first = await self._ring_first(s.stream_id)
    if not from_kafka(min_seq, first, self.settings.bond_ring_seconds):
      return min_seq  # the ring has it all
    with self.history_slots.take():
      self.history_replays += 1
      async with HistoryReader(self.settings.kafka_bootstrap, s.stream_id) as reader:
        async for page in reader.pages(max(min_seq, s.last + 1)):
          for seq, frame in page:
            if s.done.is_set():
              return min_seq
            await self._send(ws, s, frame)
            self.replayed += 1
            s.last = seq
    return min_seq

  async def _ring_first(self, sid: str) -> int | None:
    """Return the seq of the ring's oldest window, None when the ring is empty."""
    entries: list[tuple[bytes, Any]] = cast(
      Any, await self.redis.xrange(wire.stream_key(sid), count=1)
    )
    return int(entries[0][0].split(b"-", 1)[0]) if entries else None

  async def _replay(self, ws: WebSocket, s: Session, lo: int, hi: int | None) -> None:
    async for seq, frame in self._ring(s.stream_id, lo, hi):
      if seq <= s.last:
        continue
      await self._send(ws, s, frame)
      self.replayed += 1
      s.last = seq

  async def _close_gap(
    self, ws: WebSocket, s: Session, lo: int, first_live: int, interval_ms: int
  ) -> None:
    # The worker writes Kafka before Redis: an event the fan-out read just before this
    # socket registered may reach the ring only now. Read the ring up to the first live
    # event; while a window is missing next to the last one sent, give Redis a moment.
    if s.last != NOTHING_SENT and first_live - s.last <= interval_ms:
      return  # the first live window follows the last one sent: no gap, Redis not needed
    for pause in (*GAP_RETRY_SEC, None):
      nothing = s.last == NOTHING_SENT
      await self._replay(ws, s, lo if nothing else s.last + 1, first_live - 1)
      if s.last == NOTHING_SENT or first_live - s.last <= interval_ms or pause is None:
        return
      await asyncio.sleep(pause)

  async def _ring(self, sid: str, lo: int, hi: int | None) -> AsyncIterator[tuple[int, str]]:
    low, high = str(lo), "+" if hi is None else str(hi)
    if hi is not None and hi < lo:
      return
    while True:
      entries: list[tuple[bytes, dict[bytes, bytes]]] = cast(
        Any, await self.redis.xrange(wire.stream_key(sid), min=low, max=high, count=RING_PAGE)
      )
      for entry_id, fields in entries:
        frame = fields.get(b"e")
        if frame is not None:
          yield int(entry_id.split(b"-", 1)[0]), frame.decode()
      if len(entries) < RING_PAGE:
        return
      low = "(" + entries[-1][0].decode()

  async def _send(self, ws: WebSocket, s: Session, frame: str) -> None:
    await ws.send_text(frame)
    self.msgs_out += 1
    self._pending[s.stream_id]["msgs_out"] += 1

  def _count_sent(self, sid: str, n: int) -> None:
    """Count the frames of one record the fan-out wrote directly to n sockets."""
    self.msgs_out += n
    self._pending[sid]["msgs_out"] += n

  async def _read(self, ws: WebSocket, s: Session) -> None:
    # Client messages: a token refresh, or nothing of meaning (read and dropped); floods
    # and oversized messages end the socket.
    limit = self.settings.bond_ws_max_frame_bytes
    window_start, count = time.monotonic(), 0
    while True:
      msg = await ws.receive()
      if msg["type"] == "websocket.disconnect":
        s.gone()
        return
      text, data = msg.get("text"), msg.get("bytes")
      size = len(text.encode()) if text is not None else len(data or b"")
      if size > limit:
        s.end(wire.TOO_BIG, f"client messages are limited to {limit} bytes")
        return
      now = time.monotonic()
      if now - window_start >= 1.0:
        window_start, count = now, 0
      count += 1
      if count > MAX_CLIENT_MSGS_PER_SEC:
        s.end(wire.POLICY, f"more than {MAX_CLIENT_MSGS_PER_SEC} client messages per second")
        return
      if text is not None and text.startswith("{"):
        self._refresh(s, text)

  def _refresh(self, s: Session, text: str) -> None:
    try:
      msg = json.loads(text)
    except ValueError:
      return
    if not isinstance(msg, dict) or msg.get("type") != wire.REFRESH:
      return
    token = msg.get("token")
    try:
      if not isinstance(token, str):
        raise TokenError("malformed", "a refresh message carries the new token as `token`")
      claims = self.admission.check_refresh(s, token)
    except TokenError as err:
      s.end(wire.BAD_TOKEN, f"{err.reason}: {err.message}")
      return
    s.hold_token(claims.epoch, claims.expires_at)

  def _add(self, s: Session) -> None:
    self.sessions[s.stream_id].add(s)
    self.admission.opened(s)
    self.open += 1
    self._idle.clear()
    self.gc.opened()

  def _remove(self, s: Session) -> None:
    s.release()
    self.fanout.unsubscribe(s.stream_id, s)
    group = self.sessions.get(s.stream_id)
    if group is not None and s in group:
      group.discard(s)
      self.admission.closed(s)
      self.open -= 1
      if not group:
        del self.sessions[s.stream_id]
      self.gc.closed()
    if self.open == 0:
      self._idle.set()

  def _on_registry(self, sid: str, record: StreamRecord | None) -> None:
    self.admission.on_registry(sid, record)
    if record is not None:
      # A refresh with revoke_previous moved the epoch: older tokens' sockets end now.
      for session in list(self.sessions.get(sid, ())):
        if session.epoch < record.token_epoch:
          session.end(wire.BAD_TOKEN, "revoked: a newer token was issued with revoke_previous")
      return
    for session in list(self.sessions.get(sid, ())):
      session.end(wire.NO_STREAM, f"stream {sid} was deleted")
    self.fanout.forget(sid)

  # ------------------------------------------------------------------ metrics

  async def _flush_loop(self) -> None:
    while True:
      await asyncio.sleep(FLUSH_SEC)
      await self.flush_metrics()

  async def flush_metrics(self) -> None:
    """Add the counts since the last flush to each stream's metrics hash in Redis."""
    pending, self._pending = self._pending, defaultdict(lambda: defaultdict(int))
    if not pending:
      return
    try:
      pipe = self.redis.pipeline(transaction=False)
      for sid, counts in pending.items():
        for name, n in counts.items():
          pipe.hincrby(wire.metrics_key(sid), name, n)
      await pipe.execute()
    except (RedisError, OSError) as err:
      log.warning("gateway: metrics flush failed (%s); keeping the counts", err)
      for sid, counts in pending.items():
        for name, n in counts.items():
          self._pending[sid][name] += n

  async def ready(self) -> dict[str, bool]:
    """Return which dependencies answer: registry and fan-out (Kafka), Redis."""
    try:
      redis_ok = bool(await asyncio.wait_for(self.redis.ping(), 1.0))
    except (RedisError, OSError, TimeoutError):
      redis_ok = False
    kafka_ok = self._started and self.fanout.stats()["consumers"] == 1
    return {"kafka": kafka_ok, "redis": redis_ok}


def _end_on_error(task: "asyncio.Task[None]", session: Session) -> None:
  if task.cancelled():
    return
  err = task.exception()
  if err is not None:
    log.error("gateway: session task failed", exc_info=err)
    session.end(wire.INTERNAL, "internal error")
