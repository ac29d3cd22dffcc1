"""JSON errors for the REST API: `{"error": {"code": ..., "message": ...}}`, and body reading."""

import json
import logging
import math
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bond.errors import (
  ApiError,
  BadJsonError,
  BodyTooLargeError,
  BondError,
  UnsupportedMediaError,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
_HTTP_CODES = {
  400: "bad_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  405: "method_not_allowed",
  413: "body_too_large",
  415: "unsupported_media_type",
  422: "unprocessable",
  429: "too_many_requests",
  503: "unavailable",
}


def error_response(
  status: int,
  code: str,
  message: str,
  headers: dict[str, str] | None = None,
  extra: dict[str, Any] | None = None,
) -> JSONResponse:
  """Return the JSON error body every failing endpoint answers."""
  return JSONResponse(
    {"error": {"code": code, "message": message}, **(extra or {})}, status, headers
  )


async def http_error_handler(request: Request, exc: Exception) -> Response:
  """Answer Starlette's own HTTP errors (unknown route, wrong method) as JSON."""
  assert isinstance(exc, HTTPException)
  status = exc.status_code
  code = _HTTP_CODES.get(status, "http_error")
  if status == 404:
    message = f"no such endpoint: {request.method} {request.url.path}; see /openapi.json"
  elif status == 405:
    allowed = (exc.headers or {}).get("Allow", "")
    message = f"method {request.method} is not allowed on {request.url.path}; allowed: {allowed}"
  else:
    message = str(exc.detail)
  return error_response(status, code, message, dict(exc.headers or {}))


async def bond_error_handler(request: Request, exc: Exception) -> Response:
  """Answer a BondError with the status and code its kind declares."""
  assert isinstance(exc, BondError)
  status = exc.http_status
  if status >= 500 and not exc.retriable:
    log.error(
      "unexpected %s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc
    )
  headers: dict[str, str] | None = None
  extra: dict[str, Any] | None = None
  if isinstance(exc, ApiError):
    headers, extra = exc.headers, exc.extra
  elif exc.retriable and status == 503:
    headers = {"Retry-After": "1"}
  return error_response(status, exc.code, exc.message, headers, extra)


async def server_error_handler(request: Request, exc: Exception) -> Response:
  """Answer a bug as a JSON 500 (the traceback goes to the log, not to the client)."""
  log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
  return error_response(500, "internal", "internal server error; the details are in the API's log")


async def read_json_object(request: Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
  """Read the request body (at most `limit` bytes) and return it as a JSON object."""
  ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
  if ctype and ctype != "application/json" and not ctype.endswith("+json"):
    raise UnsupportedMediaError(f"send JSON with Content-Type: application/json, not {ctype}")
  declared = request.headers.get("content-length")
  if declared is not None and declared.isdigit() and int(declared) > limit:
    raise body_too_large(limit)
  chunks: list[bytes] = []
  size = 0
  async for chunk in request.stream():
    size += len(chunk)
    if size > limit:
      raise body_too_large(limit)
    chunks.append(chunk)
  raw = b"".join(chunks)
  if not raw.strip():
    raise BadJsonError("the request body is empty; send a JSON object")
  try:
    data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
  except UnicodeDecodeError:
    raise BadJsonError("the request body is not UTF-8 JSON") from None
  except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
    raise BadJsonError(f"the request body is not valid JSON: {exc}") from None
  except RecursionError:
    raise BadJsonError("the request body is nested too deeply") from None
  if not isinstance(data, dict):
    raise BadJsonError(f"the request body must be a JSON object, not {type(data).__name__}")
  return data


def _no_constant(name: str) -> float:
  raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
  value = float(text)
  if not math.isfinite(value):
    raise ValueError(f"{text[:20]} is out of range for a number")
  return value


def body_too_large(limit: int = MAX_BODY_BYTES) -> BodyTooLargeError:
  """Return the 413 error for a body over the limit."""
  return BodyTooLargeError(f"the request body is over {limit // 1024} KiB")
