"""What the SDK's clients share: event types, errors, request bodies and answers, history
paging, socket URLs and token timing (bond.client re-exports every public name)."""

import json
import random
import re
import time
from collections.abc import Mapping
from typing import Any, TypedDict
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from bond import wire
from bond.errors import BondError

STREAM_ID_RE = re.compile(r"[0-9a-f]{16}")
# The gateway's verdicts that another attempt cannot change.
FINAL_CLOSE_CODES = {
  code: wire.CLOSE_REASONS[code] for code in (wire.BAD_FROM, wire.WRONG_STREAM, wire.NO_STREAM)
}
BACKOFF_BASE_SEC = 0.25
BACKOFF_MAX_SEC = 10.0
TOKEN_MARGIN_SEC = 60.0
RATE_LIMIT_MAX_WAIT_SEC = 10.0


class SymbolFields(TypedDict, total=False):
  """The per-symbol fields of a window (inside `by_symbol`)."""

  price_avg: float | None
  price_open: float | None
  price_high: float | None
  price_low: float | None
  price_close: float | None
  vwap: float | None
  volume_sum: float
  trades: int
  tweets: int
  liquidations: int


class BondEvent(SymbolFields, total=False):
  """One closed window of a stream, as the gateway sends it (an AggregatedEvent)."""

  stream_id: str
  seq: int
  ts: str
  window_start: str
  interval_sec: int
  symbol: str | None
  onchain: dict[str, int]
  custom_count: int
  raw_data: dict[str, Any]
  by_symbol: dict[str, SymbolFields] | None


class BondAPIError(BondError):
  """The REST API answered with an error: HTTP status, error code and message."""

  code = "api_error"

  def __init__(self, status: int, code: str, message: str) -> None:
    super().__init__(f"{message} (HTTP {status}, {code})", status=status, code=code)
    self.status = status
    self.code = code
    self.message = message
    self.retriable = status in (429, 502, 503, 504)


class BondConnectionError(BondAPIError):
  """The REST API could not be reached at all."""

  def __init__(self, url: str, err: Exception) -> None:
    super().__init__(0, "unreachable", f"cannot reach the Bond API at {url} ({err}); is Bond up?")
    self.retriable = True


class StreamClosedError(BondError):
  """The gateway ended a listen for good: bad `from`, wrong token, deleted stream."""

  code = "stream_closed"

  def __init__(self, stream_id: str, close_code: int, reason: str) -> None:
    what = FINAL_CLOSE_CODES.get(close_code, "closed")
    super().__init__(f"stream {stream_id}: {what} (WebSocket close {close_code}: {reason})")
    self.stream_id = stream_id
    self.close_code = close_code
    self.reason = reason


# ---------------------------------------------------------------------- requests


def _create_body(
  sentence_or_spec: str | Mapping[str, Any], backfill: str | int | None = None
) -> dict[str, Any]:
  if isinstance(sentence_or_spec, str):
    body: dict[str, Any] = {"natural_language": sentence_or_spec}
  else:
    body = dict(sentence_or_spec)
    if "spec" not in body and "natural_language" not in body:
      body = {"spec": body}
  if backfill is not None:
    body["backfill"] = backfill
  return body


def _answer(resp: httpx.Response) -> Any:
  """Return the JSON body of a success, or raise BondAPIError with the API's error."""
  if resp.is_success:
    return resp.json() if resp.content else None
  try:
    err = resp.json()["error"]
    code, message = str(err["code"]), str(err["message"])
  except (ValueError, KeyError, TypeError):
    code, message = "http_error", (resp.text[:200] or resp.reason_phrase)
  raise BondAPIError(resp.status_code, code, message)


def _rate_limited_for(resp: httpx.Response) -> float | None:
  """Return how long to wait before retrying a 429 `rate_limited` answer, else None."""
  if resp.status_code != 429:
    return None
  try:
    if resp.json()["error"]["code"] != "rate_limited":
      return None  # too_many_streams: waiting does not help
    wait = float(resp.headers.get("retry-after", "1"))
  except (ValueError, KeyError, TypeError):
    return None
  return min(max(wait, 0.1), RATE_LIMIT_MAX_WAIT_SEC) * random.uniform(1.0, 1.2)


def _history_query(
  from_: str, to: str | None, limit: int | None, got: int, cursor: str | None, page_size: int
) -> dict[str, str] | None:
  """Return the query of the next history page, or None when `limit` windows are in."""
  want = page_size if limit is None else min(page_size, limit - got)
  if want <= 0:
    return None
  query = {"limit": str(want), "format": "jsonl"}
  query.update({"cursor": cursor} if cursor is not None else {"from": str(from_)})
  if to is not None:
    query["to"] = str(to)
  return query


def _history_page(resp: httpx.Response) -> tuple[list[dict[str, Any]], str | None]:
  """Return one history answer's windows and its next cursor (None on the last page)."""
  if not resp.is_success:
    _answer(resp)  # raises BondAPIError with the API's message
  rows = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
  return rows, (resp.headers.get("x-next-cursor") if rows else None)


def _history_args(from_: str, limit: int | None, page_size: int) -> None:
  if not str(from_).strip():
    raise ValueError("from_ is required: now-6h, an ISO-8601 time or a seq")
  if limit is not None and limit < 1:
    raise ValueError(f"limit must be at least 1, not {limit}")
  if page_size < 1:
    raise ValueError(f"page_size must be at least 1, not {page_size}")


def _headers(api_key: str | None) -> dict[str, str]:
  return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _path(stream_id: str, tail: str = "") -> str:
  if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", stream_id):
    raise ValueError(f"{stream_id!r} is not a stream id")
  return f"/v1/streams/{stream_id}{tail}"


def socket_url(
  ws_url: str, stream_id: str, token: str, from_: str | None, base: str | None = None
) -> str:
  """Return the WebSocket URL of a stream with this token and `from`."""
  if base:
    parts = urlsplit(base.rstrip("/") + f"/ws/{stream_id}")
  else:
    parts = urlsplit(ws_url)
  query = {"token": token, **({"from": from_} if from_ else {})}
  return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def token_expiry(info: Mapping[str, Any], now: float | None = None) -> float:
  """Return when a token answer (`expires_at` or `expires_in_sec`) stops being valid."""
  if isinstance(info.get("expires_at"), int | float):
    return float(info["expires_at"])
  ttl = info.get("expires_in_sec")
  return (time.time() if now is None else now) + (
    float(ttl) if isinstance(ttl, int | float) else 3600.0
  )


def backoff_sec(
  failures: int, base: float = BACKOFF_BASE_SEC, cap: float = BACKOFF_MAX_SEC
) -> float:
  """Return the pause before reconnect number `failures` (1, 2, ...): exponential, jittered."""
  return min(cap, base * 2 ** max(0, failures - 1)) * random.uniform(0.5, 1.0)


class _Token:
  """The token a listen holds, replaced in place when refreshed."""

  def __init__(self, info: Mapping[str, Any]) -> None:
    self.info: Mapping[str, Any] = info
    self.value = str(info["token"])
    self.expires = token_expiry(info)
    self.ttl = float(info.get("expires_in_sec") or 3600)

  def due_in(self, now: float | None = None) -> float:
    """Return the seconds until it should be refreshed."""
    margin = min(TOKEN_MARGIN_SEC, self.ttl / 10)
    return self.expires - margin - (time.time() if now is None else now)


# ---------------------------------------------------------------------- clients
