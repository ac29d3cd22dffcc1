"""The WebSocket gateway: token check, replay from the Redis ring, then live from Kafka.

`/ws/{stream_id}?token=...&from=...` sends AggregatedEvent JSON text frames in strictly
increasing `seq`. A connection registers for live events first (they wait in its send
queue), replays the ring from `from`, then drains the queue keeping only `seq` greater
than the last one sent, so the splice has no gap and no duplicate.

Close codes: 4400 bad `from`, 4401 bad or expired token, 4403 token for another stream,
4404 unknown or deleted stream, 4408 client too slow, 1001 server going away, 1013 replay
or live feed unavailable (try again), 1008/1009 abusive client messages.

Once a socket is caught up (replay and splice done, nothing queued), the fan-out writes
live frames straight to its transport (under uvicorn's sans-I/O WebSocket protocol) rather
than waking the socket's send task; a socket that cannot take a frame at once goes back to
its bounded queue. The collector is kept off the long-lived session objects (`gc.freeze`).
"""

import asyncio
import functools
import gc
import logging
import re
import signal
import threading
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any, cast

import redis.asyncio as aioredis
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import WebSocketException
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from bond import logredact
from bond.config import Settings, get_settings
from bond.gateway.fanout import Fanout
from bond.registry import Registry, StreamRecord
from bond.tokens import TokenError, verify

try:
  from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # another server or uvicorn version: every frame goes through ASGI
  WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

BAD_FROM, BAD_TOKEN, WRONG_STREAM, NO_STREAM, TOO_SLOW = 4400, 4401, 4403, 4404, 4408
GOING_AWAY, POLICY, TOO_BIG, INTERNAL, TRY_AGAIN = 1001, 1008, 1009, 1011, 1013

MAX_CLIENT_MSG_BYTES = 4096
MAX_CLIENT_MSGS_PER_SEC = 100
REGISTRY_WAIT_SEC = 2.0  # a stream created a moment ago may not have reached this gateway yet
CLOSE_TIMEOUT_SEC = 10.0
GO_AWAY_TIMEOUT_SEC = 5.0
FLUSH_SEC = 0.5
RING_PAGE = 500
GAP_RETRY_SEC = (0.05, 0.1, 0.2, 0.4)
NOTHING_SENT = -1  # a session's last seq before its first frame (seqs are epoch ms)
SERVER_SEND = "bond.server_send"  # scope key: the server's own ASGI send callable

# The collector: young collections every 50,000 allocations rather than 700, and the
# objects of sessions opened in batches frozen (gc.freeze) so that no collection walks the
# thousands of long-lived sockets again; the frozen garbage is collected when idle.
GC_THRESHOLDS = (50_000, 20, 100)
FREEZE_EVERY_CONNECTS = 500
FREEZE_DELAY_SEC = 1.0  # after a batch of connects, so that its handshakes are done
THAW_DELAY_SEC = 5.0
THAW_MIN_CLOSES = 20_000  # with sockets open, collect the frozen ones after this many closes

_RELATIVE = re.compile(r"now(?:-(\d{1,9})(s|m|h|d))?")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def ring_key(stream_id: str) -> str:
  """Return the Redis Stream holding a stream's recent events."""
  return f"bond:stream:{stream_id}"


def metrics_key(stream_id: str) -> str:
  """Return the Redis hash holding a stream's counters."""
  return f"bond:metrics:{stream_id}"


@dataclass(frozen=True)
class ReplayStart:
  """Where a replay begins: the smallest seq to send, and the seq already seen (if any)."""

  min_seq: int
  after: int | None = None


def parse_from(value: str, now_ms: int | None = None) -> ReplayStart:
  """Parse `from`: now-60s / now-5m / now-2h / now-1d, ISO-8601, or a seq to resume after."""
  text = value.strip()
  now = int(time.time() * 1000) if now_ms is None else now_ms
  if text.isdigit() and len(text) <= 18:
    seq = int(text)
    return ReplayStart(min_seq=seq + 1, after=seq)
  rel = _RELATIVE.fullmatch(text.lower())
  if rel is not None:
    back = int(rel[1]) * _UNIT_MS[rel[2]] if rel[1] else 0
    return ReplayStart(min_seq=max(0, now - back))
  try:
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
      when = when.replace(tzinfo=UTC)
    return ReplayStart(min_seq=max(0, int(when.timestamp() * 1000)))
  except (ValueError, OverflowError, OSError):
    raise ValueError(
      f"from={value[:40]!r} is not now-60s, now-5m, now-2h, an ISO-8601 time or a seq"
    ) from None


class _Refused(Exception):
  def __init__(self, code: int, reason: str) -> None:
    super().__init__(reason)
    self.code = code
    self.reason = reason


class _Wire:
  """The unmasked text frame of the record being fanned out, built once for all sockets."""

  def __init__(self) -> None:
    self._frame: str | None = None
    self._wire = b""

  def __call__(self, frame: str) -> bytes:
    # The fan-out hands the same str object to every sink of a record.
    if frame is not self._frame:
      self._frame = frame
      self._wire = Frame(Opcode.TEXT, frame.encode()).serialize(mask=False)
    return self._wire


_wire = _Wire()


class DirectWriter:
  """Writes text frames straight to a uvicorn sans-I/O WebSocket, without the ASGI layers."""

  __slots__ = ("_conn", "_proto", "_shared", "_transport")

  def __init__(self, proto: Any) -> None:
    self._proto = proto
    self._conn = proto.conn
    self._transport = proto.transport
    # A server's frames are not masked: with no extension (per-message deflate) the bytes
    # are the same for every socket of the stream.
    self._shared = not proto.conn.extensions

  def write(self, frame: str) -> bool:
    """Write one frame now; False when the socket cannot take it without waiting."""
    proto = self._proto
    if proto.disconnected or not proto.writable.is_set() or self._conn.state is not State.OPEN:
      return False
    # This runs inside the fan-out's loop: one socket's failure must not reach the others.
    # The send task meets the same error through ASGI and ends the session.
    try:
      if self._shared:
        self._transport.write(_wire(frame))
      else:
        self._conn.send_text(frame.encode())
        self._transport.write(b"".join(self._conn.data_to_send()))
    except (RuntimeError, OSError, WebSocketException):
      return False
    return True


def direct_writer(ws: WebSocket) -> DirectWriter | None:
  """Return a direct writer for the socket when the server is uvicorn's sans-I/O protocol."""
  proto = getattr(ws.scope.get(SERVER_SEND), "__self__", None)
  if WebSocketsSansIOProtocol is None or not isinstance(proto, WebSocketsSansIOProtocol):
    return None
  if proto.transport is None or not proto.handshake_complete:
    return None
  return DirectWriter(proto)


class _KeepServerSend:
  """Puts the server's own `send` in a WebSocket's scope, under the wrappers Starlette adds."""

  def __init__(self, app: ASGIApp) -> None:
    self.app = app

  async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "websocket":
      await self.app(scope, receive, send)
      return
    scope[SERVER_SEND] = send
    try:
      await self.app(scope, receive, send)
    finally:
      # The server's protocol holds the scope: leave no reference cycle for the collector.
      scope.pop(SERVER_SEND, None)


class Session:
  """One socket's bounded queue of live frames and how it should end."""

  def __init__(self, stream_id: str, limit: int, direct: DirectWriter | None = None) -> None:
    self.stream_id = stream_id
    self.limit = limit
    self.direct = direct
    self.queue: deque[tuple[int, str]] = deque()
    self.ready = asyncio.Event()
    self.done = asyncio.Event()
    self.code: int | None = None
    self.reason = ""
    self.disconnected = False
    self.last = NOTHING_SENT  # the seq of the last frame sent, by either path
    # True only while the send task is idle and caught up (replay and splice done, queue
    # empty, nothing being sent): the fan-out may then write frames to the socket itself.
    self.live = False

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
    if len(self.queue) >= self.limit:
      self.queue.clear()
      self.end(TOO_SLOW, f"client too slow: more than {self.limit} frames waiting")
      return False
    self.queue.append((seq, frame))
    self.ready.set()
    return False

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


class _GcTuning:
  """Freezes long-lived objects after start-up and after batches of connects; collects rarely."""

  active = 0  # tunings running in this process (a test may run several gateways)
  saved: tuple[int, int, int] | None = None

  def __init__(self, open_sessions: Callable[[], int]) -> None:
    self._open_sessions = open_sessions
    self._connects = 0
    self._closes = 0
    self._freeze_timer: asyncio.TimerHandle | None = None
    self._thaw_timer: asyncio.TimerHandle | None = None
    self.running = False

  def start(self) -> None:
    """Freeze what start-up made (it lives as long as the process) and raise the thresholds."""
    if _GcTuning.active == 0:
      _GcTuning.saved = gc.get_threshold()
    _GcTuning.active += 1
    self.running = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

  def stop(self) -> None:
    """Cancel the timers; the last tuning of the process puts the collector back."""
    if not self.running:
      return
    self.running = False
    for timer in (self._freeze_timer, self._thaw_timer):
      if timer is not None:
        timer.cancel()
    self._freeze_timer = self._thaw_timer = None
    _GcTuning.active -= 1
    if _GcTuning.active == 0 and _GcTuning.saved is not None:
      gc.set_threshold(*_GcTuning.saved)
      gc.unfreeze()

  def opened(self) -> None:
    """Count a new session; freeze a moment after every batch of them."""
    if not self.running:
      return
    self._connects += 1
    if self._connects >= FREEZE_EVERY_CONNECTS and self._freeze_timer is None:
      loop = asyncio.get_running_loop()
      self._freeze_timer = loop.call_later(FREEZE_DELAY_SEC, self._freeze)

  def closed(self) -> None:
    """Count a closed session; collect the frozen garbage once idle (or after many closes)."""
    if not self.running:
      return
    self._closes += 1
    if self._thaw_timer is None and self._thaw_due():
      loop = asyncio.get_running_loop()
      self._thaw_timer = loop.call_later(THAW_DELAY_SEC, self._thaw)

  def _thaw_due(self) -> bool:
    still_open = self._open_sessions()
    if still_open == 0:
      return self._closes > 0
    return self._closes >= max(THAW_MIN_CLOSES, 2 * still_open)

  def _freeze(self) -> None:
    self._freeze_timer = None
    self._connects = 0
    gc.freeze()

  def _thaw(self) -> None:
    self._thaw_timer = None
    if not self._thaw_due():
      return
    # Frozen objects of closed sessions that only a collection frees (reference cycles)
    # would stay forever: collect everything once, then freeze what is left.
    self._closes = 0
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class _Stats(Collector):
  """Exposes the gateway's plain-int counters to Prometheus at scrape time."""

  def __init__(self, gateway: "Gateway") -> None:
    self._gateway = gateway

  def collect(self) -> Iterator[Metric]:
    g = self._gateway
    fan = g.fanout.stats()
    yield GaugeMetricFamily("bond_gateway_connections", "open WebSocket sessions", value=g.open)
    yield CounterMetricFamily("bond_gateway_messages_out", "frames delivered", value=g.msgs_out)
    yield CounterMetricFamily(
      "bond_gateway_replayed", "frames delivered from the ring", value=g.replayed
    )
    yield CounterMetricFamily("bond_gateway_dropped", "sockets closed as too slow", value=g.dropped)
    closes = CounterMetricFamily("bond_gateway_closes", "sockets closed by code", labels=["code"])
    for code, n in sorted(g.closes.items()):
      closes.add_metric([str(code)], n)
    yield closes
    yield GaugeMetricFamily("bond_fanout_topics", "stream topics assigned", value=fan["topics"])
    yield CounterMetricFamily("bond_fanout_records", "Kafka records read", value=fan["records"])


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
    self.deleted: set[str] = set()
    self.closing = False
    self.open = 0
    self.msgs_out = 0
    self.replayed = 0
    self.dropped = 0
    self.closes: dict[int, int] = defaultdict(int)
    self.prometheus = CollectorRegistry(auto_describe=True)
    self.prometheus.register(_Stats(self))
    self._pending: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    self._flusher: asyncio.Task[None] | None = None
    self._idle = asyncio.Event()
    self._idle.set()
    self._started = False
    self.gc = _GcTuning(lambda: self.open)
    self.registry.add_listener(self._on_registry)

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
    await self.go_away()
    flusher, self._flusher = self._flusher, None
    if flusher is not None:
      flusher.cancel()
      await asyncio.gather(flusher, return_exceptions=True)
    await self.flush_metrics()
    await self.fanout.stop()
    await self.registry.stop()
    await self.redis.aclose()
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
        session.end(GOING_AWAY, "server going away")
    try:
      await asyncio.wait_for(self._idle.wait(), timeout_sec)
    except TimeoutError:
      log.warning("gateway: %d sessions still open after %.1fs", self.open, timeout_sec)

  # ------------------------------------------------------------------ one socket

  async def serve(self, ws: WebSocket) -> None:
    """Run one WebSocket from accept to close."""
    await ws.accept()  # accept first: a close before accept reaches clients as HTTP 403
    sid = ws.path_params["stream_id"]
    try:
      start, record = await self._admit(ws, sid)
    except _Refused as refused:
      self.closes[refused.code] += 1
      await _close(ws, refused.code, refused.reason)
      return
    session = Session(sid, self.settings.bond_ws_queue, direct_writer(ws))
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
      if session.code == TOO_SLOW:
        self.dropped += 1
        self._pending[sid]["dropped"] += 1
      if session.code is not None:
        self.closes[session.code] += 1
        if not session.disconnected:
          await _close(ws, session.code, session.reason)

  async def _admit(self, ws: WebSocket, sid: str) -> tuple[ReplayStart | None, StreamRecord]:
    if self.closing:
      raise _Refused(GOING_AWAY, "server going away")
    token = ws.query_params.get("token") or ""
    if not token:
      raise _Refused(BAD_TOKEN, "token missing: connect with ?token=... from the REST API")
    try:
      verify(
        token, sid, secret=self.settings.bond_secret, previous=self.settings.bond_secret_previous
      )
    except TokenError as err:
      code = WRONG_STREAM if err.reason == "wrong_stream" else BAD_TOKEN
      raise _Refused(code, f"{err.reason}: {err.message}") from None
    record = self.registry.get(sid)
    if record is None and sid not in self.deleted:
      await self.registry.wait_for(sid, True, REGISTRY_WAIT_SEC)
      record = self.registry.get(sid)
    if record is None:
      raise _Refused(NO_STREAM, f"stream {sid} is unknown or deleted")
    raw = ws.query_params.get("from")
    if not raw:
      return None, record
    try:
      return parse_from(raw), record
    except ValueError as err:
      raise _Refused(BAD_FROM, str(err)) from None

  async def _pump(
    self, ws: WebSocket, s: Session, start: ReplayStart | None, interval_ms: int
  ) -> None:
    sid = s.stream_id
    try:
      await self.fanout.subscribe(sid, s)
    except KafkaError as err:
      log.warning("gateway: cannot listen to %s: %s", sid, err)
      s.end(TRY_AGAIN, "live feed unavailable, try again later")
      return
    if start is not None and start.after is not None:
      s.last = start.after
    check_gap = start is not None
    min_seq = start.min_seq if start else 0
    try:
      if start is not None:
        await self._replay(ws, s, min_seq, None)
      while True:
        if not check_gap and s.direct is not None and not s.done.is_set():
          # Caught up and nothing queued or in flight: the fan-out may write directly.
          s.live = True
        await s.ready.wait()
        s.ready.clear()
        while s.queue and not s.done.is_set():
          seq, frame = s.queue.popleft()
          if seq <= s.last:
            continue
          if check_gap:
            check_gap = False
            await self._close_gap(ws, s, min_seq, seq, interval_ms)
          await self._send(ws, s, frame)
          s.last = seq
    except (RedisError, OSError) as err:
      log.warning("gateway: replay of %s failed: %s", sid, err)
      s.end(TRY_AGAIN, "replay unavailable (Redis), try again later")
    except WebSocketDisconnect:
      s.gone()

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
        Any, await self.redis.xrange(ring_key(sid), min=low, max=high, count=RING_PAGE)
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
    # Client messages mean nothing here: read and drop them, and end floods early.
    window_start, count = time.monotonic(), 0
    while True:
      msg = await ws.receive()
      if msg["type"] == "websocket.disconnect":
        s.gone()
        return
      text, data = msg.get("text"), msg.get("bytes")
      size = len(text.encode()) if text is not None else len(data or b"")
      if size > MAX_CLIENT_MSG_BYTES:
        s.end(TOO_BIG, f"client messages are limited to {MAX_CLIENT_MSG_BYTES} bytes")
        return
      now = time.monotonic()
      if now - window_start >= 1.0:
        window_start, count = now, 0
      count += 1
      if count > MAX_CLIENT_MSGS_PER_SEC:
        s.end(POLICY, f"more than {MAX_CLIENT_MSGS_PER_SEC} client messages per second")
        return

  def _add(self, s: Session) -> None:
    self.sessions[s.stream_id].add(s)
    self.open += 1
    self._idle.clear()
    self.gc.opened()

  def _remove(self, s: Session) -> None:
    self.fanout.unsubscribe(s.stream_id, s)
    group = self.sessions.get(s.stream_id)
    if group is not None and s in group:
      group.discard(s)
      self.open -= 1
      if not group:
        del self.sessions[s.stream_id]
      self.gc.closed()
    if self.open == 0:
      self._idle.set()

  def _on_registry(self, sid: str, record: StreamRecord | None) -> None:
    if record is not None:
      self.deleted.discard(sid)
      return
    self.deleted.add(sid)
    for session in list(self.sessions.get(sid, ())):
      session.end(NO_STREAM, f"stream {sid} was deleted")
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
          pipe.hincrby(metrics_key(sid), name, n)
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
    session.end(INTERNAL, "internal error")


async def _close(ws: WebSocket, code: int, reason: str) -> None:
  # A close reason is at most 123 bytes; a stalled client may never let the frame out.
  text = reason.encode()[:123].decode(errors="ignore")
  try:
    await asyncio.wait_for(ws.close(code, text), CLOSE_TIMEOUT_SEC)
  except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError) as err:
    log.debug("gateway: close %d not sent: %s", code, err)


def _hook_signals(gateway: Gateway) -> Callable[[], None]:
  """Close sockets with 1001 before uvicorn's own shutdown (which would send 1012)."""
  if threading.current_thread() is not threading.main_thread():
    return lambda: None
  loop = asyncio.get_running_loop()
  installed: dict[int, tuple[Any, Any]] = {}
  for sig in (signal.SIGINT, signal.SIGTERM):
    prev = signal.getsignal(sig)
    if getattr(prev, "__name__", "") != "handle_exit":  # chain only to uvicorn's handler
      continue

    def handler(signum: int, frame: FrameType | None, prev: Any = prev) -> None:
      if gateway.closing:
        prev(signum, frame)
        return

      def then_exit(task: "asyncio.Task[None]") -> None:
        prev(signum, frame)

      loop.call_soon_threadsafe(
        lambda: loop.create_task(gateway.go_away()).add_done_callback(then_exit)
      )

    signal.signal(sig, handler)
    installed[sig] = (handler, prev)

  def restore() -> None:
    for sig, (handler, prev) in installed.items():
      if signal.getsignal(sig) is handler:
        signal.signal(sig, prev)

  return restore


async def _ws_endpoint(ws: WebSocket) -> None:
  gateway: Gateway = ws.state.gateway
  await gateway.serve(ws)


async def _healthz(request: Request) -> Response:
  return JSONResponse({"status": "ok"})


async def _readyz(request: Request) -> Response:
  gateway: Gateway = request.state.gateway
  deps = await gateway.ready()
  ok = all(deps.values()) and not gateway.closing
  return JSONResponse(
    {"status": "ready" if ok else "not_ready", **deps}, status_code=200 if ok else 503
  )


async def _metrics(request: Request) -> Response:
  gateway: Gateway = request.state.gateway
  return Response(generate_latest(gateway.prometheus), media_type="text/plain; version=0.0.4")


def create_gateway_app(
  settings: Settings | None = None, *, handle_signals: bool = True
) -> Starlette:
  """Return the WebSocket gateway application (port 8080)."""
  conf = settings or get_settings()
  logredact.install()  # uvicorn logs request lines, with ?token=...

  @asynccontextmanager
  async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    async with Gateway(conf) as gateway:
      app.state.gateway = gateway
      restore = _hook_signals(gateway) if handle_signals else None
      # With thousands of sockets a full collection walks millions of objects (pauses
      # over a second): freeze what start-up made and collect rarely.
      gateway.gc.start()
      try:
        yield {"gateway": gateway}
      finally:
        gateway.gc.stop()
        if restore is not None:
          restore()

  routes = [
    WebSocketRoute("/ws/{stream_id}", _ws_endpoint),
    Route("/healthz", _healthz),
    Route("/readyz", _readyz),
    Route("/metrics", _metrics),
  ]
  # Outermost user middleware: it sees the server's own `send`, which the direct writes need.
  return Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(_KeepServerSend)])
