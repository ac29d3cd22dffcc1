"""The REST control plane (port 8000): streams, tokens, metrics, health and the OpenAPI document.

Stream records live in the compacted `bond.control.streams` topic (written with
RegistryWriter, read back through Registry), so any API process sees the same streams and
they survive restarts. Every error is `{"error": {"code": ..., "message": ...}}`.
"""

import asyncio
import contextlib
import difflib
import hmac
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from aiokafka.errors import KafkaError
from prometheus_client import (
  CONTENT_TYPE_LATEST,
  CollectorRegistry,
  Counter,
  Gauge,
  Histogram,
  generate_latest,
)
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bond import logredact, tokens
from bond.compiler import compile_nl, parse_spec, stream_id
from bond.config import Settings, get_settings
from bond.errors import BondError, LimitError, NotFoundError, SpecError, UpstreamError
from bond.gateway.errors import (
  MAX_BODY_BYTES,
  ApiError,
  api_error_handler,
  body_too_large,
  bond_error_handler,
  error_response,
  http_error_handler,
  read_json_object,
  server_error_handler,
)
from bond.gateway.openapi import build_openapi
from bond.registry import Registry, RegistryWriter, StreamRecord, new_record, record_json
from bond.schemas import CcxtSource, StreamSpec
from bond.topics.admin import TopicAdmin

log = logging.getLogger(__name__)

MarketLoader = Callable[[str, Settings], Awaitable[set[str]]]

MARKETS_TTL_SEC = 300.0
MARKETS_RETRY_SEC = 30.0
MARKETS_TIMEOUT_SEC = 5.0
READY_TIMEOUT_SEC = 3.0
REGISTRY_WAIT_SEC = 10.0
REDIS_STREAM_KEY = "bond:stream:{}"
REDIS_METRICS_KEY = "bond:metrics:{}"
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


# ---------------------------------------------------------------------- markets


async def load_markets(exchange_id: str, settings: Settings) -> set[str]:
  """Return the spot symbols an exchange lists (the sim exchange's in sim mode)."""
  import ccxt

  from bond.connectors.markets import list_markets

  try:
    return await list_markets(exchange_id, settings)
  except (ccxt.BaseError, BondError) as exc:
    raise UpstreamError(f"cannot list {exchange_id} markets: {exc}") from exc


class MarketCache:
  """The symbols each exchange lists, loaded on demand and cached; None while unavailable."""

  def __init__(
    self,
    loader: MarketLoader,
    settings: Settings,
    ttl_sec: float = MARKETS_TTL_SEC,
    retry_sec: float = MARKETS_RETRY_SEC,
    timeout_sec: float = MARKETS_TIMEOUT_SEC,
  ) -> None:
    self._loader = loader
    self._settings = settings
    self._ttl_sec = ttl_sec
    self._retry_sec = retry_sec
    self._timeout_sec = timeout_sec
    self._entries: dict[str, tuple[float, frozenset[str] | None]] = {}
    self._locks: dict[str, asyncio.Lock] = {}

  def _cached(self, exchange_id: str) -> tuple[bool, frozenset[str] | None]:
    hit = self._entries.get(exchange_id)
    if hit is not None and hit[0] > time.monotonic():
      return True, hit[1]
    return False, None

  async def get(self, exchange_id: str) -> frozenset[str] | None:
    """Return the exchange's symbols, or None when they cannot be loaded right now."""
    found, markets = self._cached(exchange_id)
    if found:
      return markets
    async with self._locks.setdefault(exchange_id, asyncio.Lock()):
      found, markets = self._cached(exchange_id)
      if found:
        return markets
      try:
        async with asyncio.timeout(self._timeout_sec):
          markets = frozenset(await self._loader(exchange_id, self._settings))
      except (UpstreamError, OSError, TimeoutError) as exc:
        # Symbols go unchecked rather than failing the request; the feed reports bad ones later.
        log.warning(
          "cannot load %s markets (%s); accepting its symbols unchecked", exchange_id, exc
        )
        self._entries[exchange_id] = (time.monotonic() + self._retry_sec, None)
        return None
      self._entries[exchange_id] = (time.monotonic() + self._ttl_sec, markets)
      return markets


# ---------------------------------------------------------------------- state


class ApiMetrics:
  """Prometheus metrics of one API app, in its own registry."""

  def __init__(self) -> None:
    self.registry = CollectorRegistry(auto_describe=True)
    self.requests = Counter(
      "bond_api_requests",
      "HTTP requests answered, by route template and status",
      ["method", "route", "status"],
      registry=self.registry,
    )
    self.latency = Histogram(
      "bond_api_request_duration_seconds",
      "Time to answer an HTTP request",
      ["method", "route"],
      registry=self.registry,
    )
    self.streams = Gauge(
      "bond_api_streams", "Registered streams, by project", ["owner"], registry=self.registry
    )

  def render(self, records: list[StreamRecord]) -> bytes:
    """Return the text exposition, with the streams gauge set from the registry."""
    counts: dict[str, int] = {}
    for rec in records:
      counts[rec.owner] = counts.get(rec.owner, 0) + 1
    self.streams.clear()
    for owner, n in counts.items():
      self.streams.labels(owner=owner).set(n)
    return generate_latest(self.registry)


@dataclass
class ApiState:
  """The API's long-lived clients, kept in the Starlette lifespan state."""

  settings: Settings
  keys: dict[str, str]
  registry: Registry
  writer: RegistryWriter
  admin: TopicAdmin
  redis: aioredis.Redis
  markets: MarketCache
  metrics: ApiMetrics
  create_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _state(request: Request) -> ApiState:
  state: ApiState = request.state.api
  return state


class ObserveMiddleware:
  """Count and time every request by route template, and refuse declared oversized bodies."""

  def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
    self.app = app
    self.metrics = metrics

  async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
      await self.app(scope, receive, send)
      return
    started = time.perf_counter()
    status = 500

    async def send_status(message: Message) -> None:
      nonlocal status
      if message["type"] == "http.response.start":
        status = message["status"]
      await send(message)

    try:
      declared = dict(scope["headers"]).get(b"content-length", b"")
      if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        err = body_too_large()
        await error_response(err.status, err.code, err.message)(scope, receive, send_status)
      else:
        await self.app(scope, receive, send_status)
    finally:
      route = getattr(scope.get("route"), "path", None) or "unmatched"
      method = scope["method"] if scope["method"] in _METHODS else "OTHER"
      self.metrics.requests.labels(method=method, route=route, status=str(status)).inc()
      self.metrics.latency.labels(method=method, route=route).observe(time.perf_counter() - started)


# ---------------------------------------------------------------------- helpers


def _owner(request: Request) -> str:
  keys = _state(request).keys
  if not keys:
    return "local"
  scheme, _, key = request.headers.get("authorization", "").partition(" ")
  key = key.strip()
  if scheme.lower() != "bearer" or not key:
    raise ApiError(
      401,
      "unauthorized",
      "send your API key as `Authorization: Bearer <key>` (keys come from BOND_API_KEYS)",
      headers={"WWW-Authenticate": "Bearer"},
    )
  owner = None
  for known, name in keys.items():
    if hmac.compare_digest(known.encode(), key.encode()):
      owner = name
  if owner is None:
    raise ApiError(401, "unauthorized", "unknown API key", headers={"WWW-Authenticate": "Bearer"})
  return owner


def _record(request: Request, owner: str) -> StreamRecord:
  sid = request.path_params["stream_id"]
  rec = _state(request).registry.get(sid)
  if rec is None or rec.owner != owner:
    shown = sid if len(sid) <= 64 else sid[:64] + "..."
    raise NotFoundError(f"no stream {shown!r} in project {owner!r}; GET /v1/streams lists yours")
  return rec


def _ws_url(settings: Settings, sid: str, token: str) -> str:
  host = settings.ws_host.rstrip("/")
  base = host if "://" in host else f"ws://{host}"
  return f"{base}/ws/{sid}?token={token}"


def _token(settings: Settings, sid: str) -> dict[str, Any]:
  ttl = settings.bond_token_ttl
  token = tokens.sign(sid, ttl, secret=settings.bond_secret)
  return {
    "stream_id": sid,
    "token": token,
    "ws_url": _ws_url(settings, sid, token),
    "expires_in_sec": ttl,
    "expires_at": tokens.expires_at(token),
  }


def _spec_json(spec: StreamSpec) -> dict[str, Any]:
  return spec.model_dump(mode="json", exclude_none=True)


def _info(rec: StreamRecord) -> dict[str, Any]:
  body = record_json(rec)
  body["spec"] = _spec_json(rec.spec)
  return body


def _created(settings: Settings, rec: StreamRecord) -> dict[str, Any]:
  body = _token(settings, rec.stream_id)
  body["spec"] = _spec_json(rec.spec)
  body["created_at"] = rec.created_at
  return body


def _check_exchanges(spec: StreamSpec, allowed: list[str]) -> None:
  named = list(spec.exchanges or [])
  for src in spec.sources:
    if isinstance(src, CcxtSource):
      named += src.exchanges or []
  off = [name for name in dict.fromkeys(named) if name not in allowed]
  if off:
    raise SpecError(
      f"exchanges: {', '.join(map(repr, off))} not available here; available: {', '.join(allowed)}"
    )


def _explicit(spec: StreamSpec, default: list[str]) -> StreamSpec:
  """Return the spec with its exchanges spelled out, so its id does not hang on BOND_EXCHANGES."""
  ccxt = [s for s in spec.sources if isinstance(s, CcxtSource)]
  if spec.exchanges is None and any(not s.exchanges for s in ccxt):
    return spec.model_copy(update={"exchanges": list(default)})
  return spec


async def _spec_from_body(request: Request, settings: Settings) -> StreamSpec:
  data = await read_json_object(request)
  extra = sorted(set(data) - {"natural_language", "spec"})
  if ("natural_language" in data) == ("spec" in data) or extra:
    unknown = f" (unknown fields: {', '.join(extra)})" if extra else ""
    raise ApiError(
      422,
      "invalid_request",
      'send exactly one of "natural_language" (a sentence such as "BTC price + tweets every 5s") '
      f'or "spec" (a JSON stream spec){unknown}',
    )
  if "natural_language" in data:
    text = data["natural_language"]
    if not isinstance(text, str):
      raise ApiError(422, "invalid_request", "natural_language must be a string (a sentence)")
    spec = compile_nl(text, exchanges=settings.exchanges)
  else:
    spec = parse_spec(data["spec"])
  _check_exchanges(spec, settings.exchanges)
  return _explicit(spec, settings.exchanges)


async def _check_symbols(spec: StreamSpec, state: ApiState) -> None:
  wanted: dict[str, list[str]] = {}
  for src in spec.sources:
    if isinstance(src, CcxtSource):
      for ex in spec.exchanges_for(src, state.settings.exchanges):
        wanted.setdefault(ex, [])
        wanted[ex] += [p for p in spec.pairs_for(src) if p not in wanted[ex]]
  listed = await asyncio.gather(*(state.markets.get(ex) for ex in wanted))
  missing: dict[str, list[str]] = {}
  hints: dict[str, str] = {}
  for (ex, pairs), markets in zip(wanted.items(), listed, strict=True):
    if markets is None:
      continue
    for pair in pairs:
      if pair not in markets:
        missing.setdefault(pair, []).append(ex)
        close = difflib.get_close_matches(pair, sorted(markets), n=1, cutoff=0.6)
        if close:
          hints.setdefault(pair, close[0])
  if missing:
    parts = []
    for pair, exchanges in missing.items():
      hint = f" (did you mean {hints[pair]}?)" if pair in hints else ""
      parts.append(f"symbol {pair} is not listed on {', '.join(exchanges)}{hint}")
    raise SpecError("; ".join(parts), symbols=list(missing))


# ---------------------------------------------------------------------- endpoints


async def create_stream(request: Request) -> Response:
  """Create a stream (201), or return the caller's identical stream (200) with a fresh token."""
  state = _state(request)
  settings = state.settings
  owner = _owner(request)
  spec = await _spec_from_body(request, settings)
  sid = stream_id(spec, owner)

  def existing_or_check_limit() -> StreamRecord | None:
    rec = state.registry.get(sid)
    if rec is not None and rec.owner == owner:
      return rec
    count = sum(1 for r in state.registry.all() if r.owner == owner)
    if count >= settings.bond_max_streams:
      raise LimitError(
        f"project {owner!r} already has {count} streams, the limit is {settings.bond_max_streams} "
        "(BOND_MAX_STREAMS); delete one with DELETE /v1/streams/{stream_id} to free a slot "
        "(GET /v1/streams lists them)"
      )
    return None

  rec = existing_or_check_limit()
  if rec is not None:
    return JSONResponse(_created(settings, rec), 200)
  await _check_symbols(spec, state)
  async with state.create_lock:
    rec = existing_or_check_limit()  # again: another request may have won meanwhile
    if rec is not None:
      return JSONResponse(_created(settings, rec), 200)
    rec = new_record(sid, owner, spec)
    try:
      await state.admin.create_stream_topic(sid)
      await state.writer.put(rec)
    except KafkaError as exc:
      raise UpstreamError(f"Kafka is unavailable ({exc.__class__.__name__}); retry") from exc
    if not await state.registry.wait_for(sid, True, REGISTRY_WAIT_SEC):
      raise UpstreamError("the stream registry did not confirm the new stream in time; retry")
  log.info("created stream %s for %s", sid, owner)
  return JSONResponse(_created(settings, state.registry.get(sid) or rec), 201)


async def list_streams(request: Request) -> Response:
  """List the caller's streams, oldest first."""
  state = _state(request)
  owner = _owner(request)
  mine = [_info(r) for r in state.registry.all() if r.owner == owner]
  return JSONResponse(
    {"streams": mine, "count": len(mine), "max_streams": state.settings.bond_max_streams}
  )


async def get_stream(request: Request) -> Response:
  """Return one of the caller's streams."""
  return JSONResponse(_info(_record(request, _owner(request))))


async def delete_stream(request: Request) -> Response:
  """Delete a stream: tombstone its record, then remove its topic and Redis keys."""
  state = _state(request)
  rec = _record(request, _owner(request))
  sid = rec.stream_id
  try:
    await state.writer.delete(sid)
  except KafkaError as exc:
    raise UpstreamError(f"Kafka is unavailable ({exc.__class__.__name__}); retry") from exc
  if not await state.registry.wait_for(sid, False, REGISTRY_WAIT_SEC):
    log.warning("registry did not show stream %s deleted in time", sid)
  try:
    await state.admin.delete_stream_topic(sid)
  except KafkaError as exc:
    log.warning("could not delete the topic of stream %s: %s", sid, exc)
  try:
    await state.redis.delete(REDIS_STREAM_KEY.format(sid), REDIS_METRICS_KEY.format(sid))
  except (RedisError, OSError) as exc:
    log.warning("could not delete the Redis keys of stream %s: %s", sid, exc)
  log.info("deleted stream %s of %s", sid, rec.owner)
  return JSONResponse({"stream_id": sid, "deleted": True})


async def refresh_token(request: Request) -> Response:
  """Issue a fresh token for one of the caller's streams."""
  rec = _record(request, _owner(request))
  return JSONResponse(_token(_state(request).settings, rec.stream_id))


def _text(value: bytes | str) -> str:
  return value.decode(errors="replace") if isinstance(value, bytes) else value


def _int(raw: dict[str, str], name: str) -> int:
  value = _float(raw, name)
  return 0 if value is None else int(value)


def _float(raw: dict[str, str], name: str) -> float | None:
  try:
    value = float(raw[name])
  except (KeyError, ValueError):
    return None
  return value if math.isfinite(value) else None


async def stream_metrics(request: Request) -> Response:
  """Return a stream's counters (worker and gateway) and latency percentiles."""
  state = _state(request)
  rec = _record(request, _owner(request))
  try:
    found = await state.redis.hgetall(REDIS_METRICS_KEY.format(rec.stream_id))
  except (RedisError, OSError) as exc:
    raise UpstreamError(f"Redis is unavailable ({exc.__class__.__name__}); retry") from exc
  raw = {_text(k): _text(v) for k, v in found.items()}
  body: dict[str, Any] = {
    "stream_id": rec.stream_id,
    "uptime_sec": round(max(0.0, time.time() - rec.created_at_ms / 1000), 1),
    "created_at": rec.created_at,
  }
  for name in ("msgs_in", "msgs_out", "dropped", "late", "windows_out"):
    body[name] = _int(raw, name)
  for name in ("latency_p50_ms", "latency_p95_ms"):
    body[name] = _float(raw, name)
  body["latency_samples"] = _int(raw, "latency_samples")
  for name in ("emit_lag_p50_ms", "emit_lag_p95_ms"):
    body[name] = _float(raw, name)
  return JSONResponse(body)


async def compile_spec(request: Request) -> Response:
  """Compile a sentence or spec and return it with its would-be stream id, creating nothing."""
  state = _state(request)
  owner = _owner(request)
  spec = await _spec_from_body(request, state.settings)
  await _check_symbols(spec, state)
  sid = stream_id(spec, owner)
  rec = state.registry.get(sid)
  exists = rec is not None and rec.owner == owner
  return JSONResponse({"stream_id": sid, "spec": _spec_json(spec), "exists": exists})


async def healthz(request: Request) -> Response:
  """Answer 200 while the process runs."""
  return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
  """Answer 200 when Kafka metadata and Redis PING work, else 503 naming what is down."""
  state = _state(request)

  async def kafka() -> str:
    try:
      async with asyncio.timeout(READY_TIMEOUT_SEC):
        await state.admin.existing()
    except (KafkaError, OSError, TimeoutError) as exc:
      return f"down: {exc.__class__.__name__} {exc}".strip()
    return "ok"

  async def redis() -> str:
    try:
      async with asyncio.timeout(READY_TIMEOUT_SEC):
        await state.redis.ping()
    except (RedisError, OSError, TimeoutError) as exc:
      return f"down: {exc.__class__.__name__} {exc}".strip()
    return "ok"

  checks = dict(zip(("kafka", "redis"), await asyncio.gather(kafka(), redis()), strict=True))
  down = [name for name, result in checks.items() if result != "ok"]
  if down:
    message = "; ".join(f"{name} is {checks[name]}" for name in down)
    return error_response(503, "not_ready", message, {"Retry-After": "1"}, {"checks": checks})
  return JSONResponse({"status": "ready", "checks": checks})


async def prometheus(request: Request) -> Response:
  """Return the Prometheus text exposition."""
  state = _state(request)
  return Response(state.metrics.render(state.registry.all()), media_type=CONTENT_TYPE_LATEST)


# ---------------------------------------------------------------------- app

Endpoint = Callable[[Request], Awaitable[Response]]


def _methods(**by_method: Endpoint) -> Endpoint:
  """Return one endpoint that dispatches on the method, so a path answers 405 with every method."""
  if "GET" in by_method:
    by_method.setdefault("HEAD", by_method["GET"])

  async def endpoint(request: Request) -> Response:
    return await by_method[request.method](request)

  return endpoint


def create_api_app(
  settings: Settings | None = None,
  *,
  market_loader: MarketLoader | None = None,
) -> Starlette:
  """Return the REST control plane application."""
  conf = settings or get_settings()
  logredact.install()  # uvicorn logs request lines, with ?token=...
  metrics = ApiMetrics()
  openapi = build_openapi()

  @contextlib.asynccontextmanager
  async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    conf.require_safe_secret()
    keys = conf.api_keys
    async with contextlib.AsyncExitStack() as stack:
      admin = TopicAdmin(conf.kafka_bootstrap)
      await admin.start()
      stack.push_async_callback(admin.stop)
      await admin.ensure()
      registry = Registry(conf.kafka_bootstrap)
      await registry.start()
      stack.push_async_callback(registry.stop)
      writer = RegistryWriter(conf.kafka_bootstrap)
      await writer.start()
      stack.push_async_callback(writer.stop)
      redis = aioredis.from_url(conf.redis_url, decode_responses=True, socket_timeout=5)
      stack.push_async_callback(redis.aclose)
      state = ApiState(
        settings=conf,
        keys=keys,
        registry=registry,
        writer=writer,
        admin=admin,
        redis=redis,
        markets=MarketCache(market_loader or load_markets, conf),
        metrics=metrics,
      )
      log.info("REST API ready: %d streams, %d API keys", len(registry.all()), len(keys))
      yield {"api": state}

  async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi)

  routes = [
    Route("/v1/streams", _methods(GET=list_streams, POST=create_stream), methods=["GET", "POST"]),
    Route(
      "/v1/streams/{stream_id}",
      _methods(GET=get_stream, DELETE=delete_stream),
      methods=["GET", "DELETE"],
    ),
    Route("/v1/streams/{stream_id}/token", refresh_token, methods=["POST"]),
    Route("/v1/streams/{stream_id}/metrics", stream_metrics, methods=["GET"]),
    Route("/v1/compile", compile_spec, methods=["POST"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", prometheus, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
  ]
  handlers: dict[Any, Any] = {
    ApiError: api_error_handler,
    HTTPException: http_error_handler,
    BondError: bond_error_handler,
    500: server_error_handler,
  }
  return Starlette(
    routes=routes,
    middleware=[Middleware(ObserveMiddleware, metrics=metrics)],
    exception_handlers=handlers,
    lifespan=lifespan,
  )
