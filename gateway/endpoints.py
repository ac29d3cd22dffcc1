"""The REST endpoints: streams, tokens, per-stream metrics, compile, health and /metrics."""

import asyncio
import logging
import math
import time
from typing import Any

from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bond import tokens, wire
from bond.compiler import stream_id
from bond.compiler.limits import check_project_feeds
from bond.errors import InvalidRequestError, NotFoundError, UpstreamError
from bond.gateway.auth import bearer_key, known_project, project_of
from bond.gateway.errors import error_response, read_json_object
from bond.gateway.markets import check_symbols
from bond.gateway.specs import spec_from_body
from bond.gateway.state import ApiState, api_state
from bond.registry import StreamRecord, new_record, record_json, revoked_record
from bond.schemas import StreamSpec

log = logging.getLogger(__name__)

READY_TIMEOUT_SEC = 3.0
REGISTRY_WAIT_SEC = 10.0


async def _caller(request: Request) -> tuple[ApiState, str]:
  """Return the state and the caller's project, after its API key and its rate limit."""
  state = api_state(request)
  owner = project_of(request, state.keys)
  if state.keys:  # per API key; without keys the deployment is one trusted local project
    await state.rate.check(owner)
  return state, owner


def _record(request: Request, state: ApiState, owner: str) -> StreamRecord:
  sid = request.path_params["stream_id"]
  rec = state.registry.get(sid)
  if rec is None or rec.owner != owner:
    shown = sid if len(sid) <= 64 else sid[:64] + "..."
    raise NotFoundError(f"no stream {shown!r} in project {owner!r}; GET /v1/streams lists yours")
  return rec


def ws_url(ws_host: str, sid: str, token: str) -> str:
  """Return the WebSocket URL of a stream with its token."""
  host = ws_host.rstrip("/")
  base = host if "://" in host else f"ws://{host}"
  return f"{base}/ws/{sid}?token={token}"


def _token(state: ApiState, rec: StreamRecord) -> dict[str, Any]:
  settings = state.settings
  ttl = settings.bond_token_ttl
  token = tokens.sign(rec.stream_id, ttl, epoch=rec.token_epoch, secret=settings.bond_secret)
  return {
    "stream_id": rec.stream_id,
    "token": token,
    "ws_url": ws_url(settings.ws_host, rec.stream_id, token),
    "expires_in_sec": ttl,
    "expires_at": tokens.expires_at(token),
  }


def _spec_json(spec: StreamSpec) -> dict[str, Any]:
  return spec.model_dump(mode="json", exclude_none=True)


def _info(rec: StreamRecord) -> dict[str, Any]:
  body = record_json(rec)
  body.pop("token_epoch", None)  # internal: tokens carry it, clients never need it
  body["spec"] = _spec_json(rec.spec)
  return body


def _created(state: ApiState, rec: StreamRecord) -> dict[str, Any]:
  body = _token(state, rec)
  body["spec"] = _spec_json(rec.spec)
  body["created_at"] = rec.created_at
  if rec.backfill_sec:
    body["backfill_sec"] = rec.backfill_sec
  return body


def _registered(state: ApiState, owner: str) -> list[str]:
  return [r.stream_id for r in state.registry.all() if r.owner == owner]


async def create_stream(request: Request) -> Response:
  """Create a stream (201), or return the caller's identical stream (200) with a fresh token."""
  state, owner = await _caller(request)
  spec, backfill = await spec_from_body(request, state.settings, state.cpu)
  sid = stream_id(spec, owner)
  rec = state.registry.get(sid)
  if rec is not None and rec.owner == owner:
    return JSONResponse(_created(state, rec), 200)  # an existing stream: no backfill
  await check_symbols(spec, state.settings, state.markets, state.cpu)
  # Feeds shared by the project's streams count once (BOND_MAX_FEEDS_PER_PROJECT).
  others = [r.spec for r in state.registry.all() if r.owner == owner]
  check_project_feeds(spec, others, state.settings)
  # The slot is a conditional write in Redis, so the limit holds across API replicas;
  # a create of the same stream under way elsewhere is awaited rather than repeated.
  if not await state.quota.reserve(owner, sid, _registered(state, owner)):
    if await state.registry.wait_for(sid, True, REGISTRY_WAIT_SEC):
      rec = state.registry.get(sid)
      if rec is not None and rec.owner == owner:
        return JSONResponse(_created(state, rec), 200)
    raise UpstreamError("another request is creating this stream; retry in a moment")
  rec = new_record(sid, owner, spec, backfill_sec=backfill or 0)
  try:
    await state.admin.create_stream_topic(sid)
    await state.writer.put(rec)
  except KafkaError as exc:
    await state.quota.release(owner, sid)
    raise UpstreamError(f"Kafka is unavailable ({exc.__class__.__name__}); retry") from exc
  confirmed = await state.registry.wait_for(sid, True, REGISTRY_WAIT_SEC)
  state.quota.created(owner, sid)
  if not confirmed:
    raise UpstreamError("the stream registry did not confirm the new stream in time; retry")
  log.info("created stream %s for %s", sid, owner)
  return JSONResponse(_created(state, state.registry.get(sid) or rec), 201)


async def list_streams(request: Request) -> Response:
  """List the caller's streams, oldest first."""
  state, owner = await _caller(request)
  mine = [_info(r) for r in state.registry.all() if r.owner == owner]
  return JSONResponse(
    {"streams": mine, "count": len(mine), "max_streams": state.settings.bond_max_streams}
  )


async def get_stream(request: Request) -> Response:
  """Return one of the caller's streams."""
  state, owner = await _caller(request)
  rec = _record(request, state, owner)
  body = _info(rec)
  if rec.backfill_sec:
    body["backfill"] = await _backfill_progress(state, rec)
  return JSONResponse(body)


BACKFILL_INT_FIELDS = ("done_windows", "total_windows", "from_ms", "to_ms", "last_seq",
                       "records", "started_ms", "finished_ms")  # fmt: skip


async def _backfill_progress(state: ApiState, rec: StreamRecord) -> dict[str, Any]:
  """Return the backfill's progress as the worker running it last wrote it."""
  try:
    raw = await state.redis.hgetall(wire.backfill_key(rec.stream_id))
  except (RedisError, OSError) as exc:
    raise UpstreamError(f"Redis is unavailable ({exc.__class__.__name__}); retry") from exc
  found = {_text(k): _text(v) for k, v in raw.items()}
  out: dict[str, Any] = {"requested_sec": rec.backfill_sec, "state": found.get("state", "pending")}
  for name in BACKFILL_INT_FIELDS:
    if name in found:
      out[name] = _int(found, name)
  if "error" in found:
    out["error"] = found["error"]
  return out


async def delete_stream(request: Request) -> Response:
  """Delete a stream: tombstone its record (its tokens die with it), then its topic and keys."""
  state, owner = await _caller(request)
  rec = _record(request, state, owner)
  sid = rec.stream_id
  try:
    await state.writer.delete(sid)
  except KafkaError as exc:
    raise UpstreamError(f"Kafka is unavailable ({exc.__class__.__name__}); retry") from exc
  if not await state.registry.wait_for(sid, False, REGISTRY_WAIT_SEC):
    log.warning("registry did not show stream %s deleted in time", sid)
  await state.quota.release(owner, sid)
  try:
    await state.admin.delete_stream_topic(sid)
  except KafkaError as exc:
    log.warning("could not delete the topic of stream %s: %s", sid, exc)
  try:
    await state.redis.delete(wire.stream_key(sid), wire.metrics_key(sid), wire.backfill_key(sid))
  except (RedisError, OSError) as exc:
    log.warning("could not delete the Redis keys of stream %s: %s", sid, exc)
  log.info("deleted stream %s of %s", sid, rec.owner)
  return JSONResponse({"stream_id": sid, "deleted": True})


async def refresh_token(request: Request) -> Response:
  """Issue a fresh token; with `{"revoke_previous": true}` every earlier token stops working."""
  state, owner = await _caller(request)
  rec = _record(request, state, owner)
  revoke = False
  if request.headers.get("content-length", "0") != "0" or "chunked" in request.headers.get(
    "transfer-encoding", ""
  ):
    data = await read_json_object(request)
    extra = sorted(set(data) - {"revoke_previous"})
    revoke = data.get("revoke_previous", False)
    if extra or not isinstance(revoke, bool):
      raise InvalidRequestError(
        'the body is optional; if sent it is {"revoke_previous": true|false}'
        + (f" (unknown fields: {', '.join(extra)})" if extra else "")
      )
  if revoke:
    rec = revoked_record(rec)
    try:
      await state.writer.put(rec)
    except KafkaError as exc:
      raise UpstreamError(f"Kafka is unavailable ({exc.__class__.__name__}); retry") from exc
    epoch, sid = rec.token_epoch, rec.stream_id

    def current() -> bool:
      now = state.registry.get(sid)
      return now is None or now.token_epoch >= epoch

    if not await state.registry.wait_until(current, REGISTRY_WAIT_SEC):
      raise UpstreamError("the stream registry did not confirm the revocation in time; retry")
    log.info("revoked earlier tokens of stream %s", sid)
  return JSONResponse(_token(state, rec))


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
  state, owner = await _caller(request)
  rec = _record(request, state, owner)
  try:
    found = await state.redis.hgetall(wire.metrics_key(rec.stream_id))
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
  state, owner = await _caller(request)
  spec, backfill = await spec_from_body(request, state.settings, state.cpu)
  await check_symbols(spec, state.settings, state.markets, state.cpu)
  sid = stream_id(spec, owner)
  rec = state.registry.get(sid)
  exists = rec is not None and rec.owner == owner
  body = {"stream_id": sid, "spec": _spec_json(spec), "exists": exists, "backfill_sec": backfill}
  return JSONResponse(body)


class StreamsEndpoint(HTTPEndpoint):
  """`/v1/streams`: GET lists, POST creates."""

  get = staticmethod(list_streams)
  post = staticmethod(create_stream)


class StreamEndpoint(HTTPEndpoint):
  """`/v1/streams/{stream_id}`: GET reads, DELETE deletes."""

  get = staticmethod(get_stream)
  delete = staticmethod(delete_stream)


async def healthz(request: Request) -> Response:
  """Answer 200 while the process runs."""
  return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
  """Answer 200 when Kafka metadata and Redis PING work, else 503 naming what is down."""
  state = api_state(request)

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
  """Return the Prometheus text exposition; project names only to a known API key."""
  state = api_state(request)
  key = bearer_key(request)
  with_projects = not state.keys or (key is not None and known_project(key, state.keys) is not None)
  body = state.metrics.render(state.registry.all(), with_projects=with_projects)
  return Response(body, media_type=CONTENT_TYPE_LATEST)
