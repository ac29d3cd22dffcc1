"""The REST API's request and response models and its OpenAPI 3.1 document, built from them."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from bond.schemas import StreamSpec

MAX_SENTENCE_CHARS = 1000


class CreateFromSentence(BaseModel):
  """Create (or compile) a stream from an English sentence."""

  model_config = ConfigDict(extra="forbid")

  natural_language: str = Field(
    min_length=1,
    max_length=MAX_SENTENCE_CHARS,
    description="what to stream, e.g. 'BTC price + tweets every 5s'",
    examples=["BTC price + tweets every 5s"],
  )
  backfill: str | int | None = Field(
    None,
    description="history to compute on create: a duration ('90s', '30m', '1h') or seconds; at "
    "most BOND_MAX_BACKFILL_SEC and the raw topics' retention; windows come with backfilled: true",
    examples=["1h"],
  )


class TokenRequest(BaseModel):
  """Options of a token refresh (the body is optional)."""

  model_config = ConfigDict(extra="forbid")

  revoke_previous: bool = Field(
    False,
    description="invalidate every earlier token of the stream (open sockets on them close 4401)",
  )


class CreateFromSpec(BaseModel):
  """Create (or compile) a stream from a structured spec."""

  model_config = ConfigDict(extra="forbid")

  spec: StreamSpec
  backfill: str | int | None = Field(
    None,
    description="history to compute on create: a duration ('90s', '30m', '1h') or seconds; at "
    "most BOND_MAX_BACKFILL_SEC and the raw topics' retention; windows come with backfilled: true",
    examples=["1h"],
  )


class StreamInfo(BaseModel):
  """A registered stream."""

  stream_id: str = Field(description="16 hex characters, derived from the owner and the spec")
  owner: str = Field(description="the project (API key name) that owns it; 'local' without keys")
  spec: StreamSpec
  created_at: str = Field(description="ISO-8601 UTC")
  created_at_ms: int = Field(description="epoch ms")
  backfill_sec: int = Field(0, description="history asked for on create, in seconds (0: none)")


class StreamList(BaseModel):
  """The caller's streams, oldest first, and the per-project limit."""

  streams: list[StreamInfo]
  count: int
  max_streams: int = Field(description="BOND_MAX_STREAMS: how many streams a project may have")


class TokenInfo(BaseModel):
  """A fresh signed token and the WebSocket URL that carries it."""

  stream_id: str
  token: str = Field(
    description="<stream_id>.<exp_unix>.<epoch>.<hex HMAC-SHA256>, one canonical spelling"
  )
  ws_url: str = Field(description="ws://<WS_HOST>/ws/<stream_id>?token=...")
  expires_in_sec: int
  expires_at: int = Field(description="unix seconds")


class StreamCreated(TokenInfo):
  """A stream that was created (201) or already existed (200), with a fresh token."""

  spec: StreamSpec
  created_at: str


class StreamDeleted(BaseModel):
  """The stream was deleted: its record, topic and Redis keys are gone."""

  stream_id: str
  deleted: bool = True


class CompileResult(BaseModel):
  """What POST /v1/streams would create, without creating it."""

  stream_id: str
  spec: StreamSpec
  exists: bool = Field(description="whether the caller already has this stream")


class StreamMetrics(BaseModel):
  """Counters and latencies of one stream (zeros and nulls until it has data)."""

  stream_id: str
  uptime_sec: float
  created_at: str
  msgs_in: int = Field(description="raw events the stream's windows consumed")
  msgs_out: int = Field(description="events sent to WebSocket clients")
  dropped: int = Field(description="events dropped for slow WebSocket clients")
  late: int = Field(description="events that arrived after their window was emitted")
  windows_out: int = Field(description="windows emitted")
  latency_p50_ms: float | None = Field(description="source event time to window emit, median")
  latency_p95_ms: float | None
  latency_samples: int
  emit_lag_p50_ms: float | None = Field(description="window end to emit, median")
  emit_lag_p95_ms: float | None


class Health(BaseModel):
  """The process is running."""

  status: str = "ok"


class Ready(BaseModel):
  """Kafka and Redis answer."""

  status: str
  checks: dict[str, str]


class ErrorDetail(BaseModel):
  """What went wrong, for a program (code) and for a person (message)."""

  code: str
  message: str


class ErrorBody(BaseModel):
  """Every error the API answers."""

  error: ErrorDetail


_REQUEST_MODELS: list[type[BaseModel]] = [CreateFromSentence, CreateFromSpec, TokenRequest]
_RESPONSE_MODELS: list[type[BaseModel]] = [
  StreamInfo,
  StreamList,
  TokenInfo,
  StreamCreated,
  StreamDeleted,
  CompileResult,
  StreamMetrics,
  Health,
  Ready,
  ErrorBody,
]

_ERRORS = {
  "400": "the body is not a JSON object",
  "401": "missing or unknown API key",
  "404": "unknown stream (or another project's)",
  "413": "the body is over 64 KiB",
  "415": "the body is not JSON",
  "422": "the spec or sentence is not understood; the message says why",
  "429": (
    "too_many_streams: the project is at BOND_MAX_STREAMS (delete a stream first); or "
    "rate_limited: over BOND_API_RATE_PER_SEC, retry after the Retry-After seconds"
  ),
  "503": "Kafka or Redis is unavailable, or the API is busy compiling; retry",
}


def _ref(name: str) -> dict[str, str]:
  return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
  return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
  summary: str,
  op_id: str,
  ok: dict[str, tuple[str, str | None]],
  errors: tuple[str, ...],
  *,
  body: bool = False,
  token_body: bool = False,
  auth: bool = True,
  stream_id: bool = False,
  tag: str = "streams",
) -> dict[str, Any]:
  responses: dict[str, Any] = {}
  for status, (desc, model) in ok.items():
    responses[status] = {"description": desc} if model is None else _json(_ref(model), desc)
  if auth:
    errors = (*errors, "429") if "429" not in errors else errors  # the per-key rate limit
  for status in errors:
    responses[status] = _json(_ref("ErrorBody"), _ERRORS[status])
  op: dict[str, Any] = {
    "summary": summary,
    "operationId": op_id,
    "tags": [tag],
    "responses": responses,
  }
  if stream_id:
    op["parameters"] = [
      {
        "name": "stream_id",
        "in": "path",
        "required": True,
        "description": "the stream's id (16 hex characters)",
        "schema": {"type": "string"},
      }
    ]
  if body:
    schema = {"oneOf": [_ref("CreateFromSentence"), _ref("CreateFromSpec")]}
    op["requestBody"] = {
      "required": True,
      "description": "exactly one of natural_language or spec, and optionally backfill",
      "content": {"application/json": {"schema": schema}},
    }
  if token_body:
    op["requestBody"] = {
      "required": False,
      "description": 'optional: {"revoke_previous": true} invalidates every earlier token',
      "content": {"application/json": {"schema": _ref("TokenRequest")}},
    }
  if auth:
    op["security"] = [{"bearer": []}, {}]
  return op


_WINDOW_PARAMS = (
  ("from", "now-6h, now-30m, an ISO-8601 time, or a seq to read after; clamped to "
   "BOND_HISTORY_HOURS back. Required unless cursor is given", {"type": "string"}),
  ("to", "the last window's end (seq), inclusive, in the same forms; default: now",
   {"type": "string"}),
  ("limit", "windows per page: default BOND_HISTORY_LIMIT (1000), at most "
   "BOND_HISTORY_MAX_LIMIT (10000)", {"type": "integer", "minimum": 1}),
  ("format", "jsonl (default; each line one window as sent on the WebSocket), csv (flat "
   "columns; by_symbol and raw_data as JSON text) or parquet (ts and window_start as "
   "timestamp ms UTC)", {"type": "string", "enum": ["jsonl", "csv", "parquet"]}),
  ("cursor", "the X-Next-Cursor of the previous page: the windows after that seq",
   {"type": "string", "pattern": "^[0-9]{1,18}$"}),
)  # fmt: skip


def _windows_op() -> dict[str, Any]:
  op = _op(
    "Read a stream's past windows (oldest first, paged) as JSON lines, CSV or Parquet",
    "streamWindows",
    {"200": ("the windows", None)},
    ("400", "401", "404", "503"),
    stream_id=True,
  )
  op["responses"]["400"]["description"] = "a query parameter is unknown, repeated or malformed"
  op["parameters"] += [
    {"name": name, "in": "query", "required": False, "description": desc, "schema": schema}
    for name, desc, schema in _WINDOW_PARAMS
  ]
  page_headers = {
    "X-Next-Cursor": {
      "description": "present when more windows follow: pass it as cursor",
      "schema": {"type": "string"},
    },
    "Link": {
      "description": '<next page URL>; rel="next" when more follow',
      "schema": {"type": "string"},
    },
    "X-Window-Count": {"description": "windows in this page", "schema": {"type": "integer"}},
  }
  op["responses"]["200"] = {
    "description": "a page of windows, oldest first",
    "headers": page_headers,
    "content": {
      "application/x-ndjson": {"schema": {"type": "string"}},
      "text/csv": {"schema": {"type": "string"}},
      "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
    },
  }
  return op


def build_openapi(version: str = "0.3.0") -> dict[str, Any]:
  """Return the OpenAPI 3.1 document of the REST API."""
  pairs = [(m, "validation") for m in _REQUEST_MODELS] + [
    (m, "serialization") for m in _RESPONSE_MODELS
  ]
  _, defs = models_json_schema(pairs, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
  schemas = defs.get("$defs", {})
  write = ("400", "401", "413", "415", "422", "503")
  paths: dict[str, Any] = {
    "/v1/streams": {
      "post": _op(
        "Create a stream from a sentence or a spec (200 with the existing one if it exists)",
        "createStream",
        {"201": ("created", "StreamCreated"), "200": ("already existed", "StreamCreated")},
        (*write, "429"),
        body=True,
      ),
      "get": _op(
        "List the caller's streams", "listStreams", {"200": ("the streams", "StreamList")}, ("401",)
      ),
    },
    "/v1/streams/{stream_id}": {
      "get": _op(
        "Get one stream",
        "getStream",
        {"200": ("the stream", "StreamInfo")},
        ("401", "404"),
        stream_id=True,
      ),
      "delete": _op(
        "Delete a stream: its record, topic and replay buffer",
        "deleteStream",
        {"200": ("deleted", "StreamDeleted")},
        ("401", "404", "503"),
        stream_id=True,
      ),
    },
    "/v1/streams/{stream_id}/token": {
      "post": _op(
        "Issue a fresh token for a stream (optionally revoking the earlier ones)",
        "refreshToken",
        {"200": ("a new token", "TokenInfo")},
        ("400", "401", "404", "413", "415", "422", "503"),
        stream_id=True,
        token_body=True,
      ),
    },
    "/v1/streams/{stream_id}/metrics": {
      "get": _op(
        "Get a stream's counters and latencies",
        "streamMetrics",
        {"200": ("the metrics", "StreamMetrics")},
        ("401", "404", "503"),
        stream_id=True,
      ),
    },
    "/v1/streams/{stream_id}/windows": {"get": _windows_op()},
    "/v1/compile": {
      "post": _op(
        "Compile a sentence or spec without creating the stream",
        "compile",
        {"200": ("the compiled spec and its would-be id", "CompileResult")},
        write,
        body=True,
      ),
    },
    "/healthz": {
      "get": _op("Liveness", "healthz", {"200": ("running", "Health")}, (), auth=False, tag="ops"),
    },
    "/readyz": {
      "get": _op(
        "Readiness: Kafka and Redis answer",
        "readyz",
        {"200": ("ready", "Ready")},
        ("503",),
        auth=False,
        tag="ops",
      ),
    },
    "/metrics": {
      "get": {
        "summary": "Prometheus metrics",
        "operationId": "metrics",
        "tags": ["ops"],
        "responses": {
          "200": {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
          }
        },
      }
    },
    "/openapi.json": {
      "get": {
        "summary": "This document",
        "operationId": "openapi",
        "tags": ["ops"],
        "responses": {
          "200": _json({"type": "object"}, "the OpenAPI 3.1 document"),
        },
      }
    },
  }
  return {
    "openapi": "3.1.0",
    "info": {
      "title": "Bond control plane",
      "version": version,
      "description": (
        "Create, list and delete real-time market-data streams; issue signed WebSocket "
        'tokens. Errors are always {"error": {"code", "message"}}.'
      ),
    },
    "paths": paths,
    "components": {
      "schemas": schemas,
      "securitySchemes": {
        "bearer": {
          "type": "http",
          "scheme": "bearer",
          "description": "an API key from BOND_API_KEYS; not needed when none are configured",
        }
      },
    },
  }
