"""`GET /v1/streams/{id}/windows`: a stream's past windows as JSON lines, CSV or Parquet.

`from` and `to` take the forms of the WebSocket `from` (now-6h, ISO-8601, a seq); `to` is
inclusive. `from` older than BOND_HISTORY_HOURS is clamped to it. Answers hold at most
`limit` windows (BOND_HISTORY_LIMIT by default, at most BOND_HISTORY_MAX_LIMIT), oldest
first; when more follow, `X-Next-Cursor` holds the last seq sent and `Link` the next page's
URL (`cursor=<seq>`: the windows after it). The recent part comes from the Redis ring,
older windows from the stream's Kafka topic (`history.py`), with no window twice.
"""

import asyncio
import json
import re
from typing import Any, cast
from urllib.parse import urlencode

from aiokafka.errors import KafkaError
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from bond import tables, wire
from bond.errors import ApiError, BusyError, UpstreamError
from bond.gateway.endpoints import _caller, _record
from bond.gateway.history import HistoryBusy, HistoryReader, from_kafka, oldest_ms
from bond.gateway.resume import parse_from, parse_to
from bond.gateway.state import ApiState

PARAMS = ("from", "to", "limit", "format", "cursor")
MEDIA = {
  "jsonl": "application/x-ndjson",
  "csv": "text/csv; charset=utf-8",
  "parquet": "application/vnd.apache.parquet",
}
RING_PAGE = 1000
_DIGITS = re.compile(r"[0-9]{1,18}")


class BadQueryError(ApiError):
  """A query parameter that is missing, unknown or malformed."""

  code = "bad_query"


def _query(request: Request, state: ApiState) -> tuple[int, int | None, int, str]:
  """Return (min_seq, max_seq, limit, format) from the query, or raise BadQueryError."""
  q = request.query_params
  unknown = sorted(set(q) - set(PARAMS))
  if unknown:
    raise BadQueryError(
      f"unknown query parameter(s) {', '.join(unknown)[:80]}; use {', '.join(PARAMS)}"
    )
  for name in PARAMS:
    if len(q.getlist(name)) > 1:
      raise BadQueryError(f"{name} is given more than once")
  conf = state.settings
  fmt = q.get("format", "jsonl").lower()
  if fmt not in tables.FORMATS:
    raise BadQueryError(f"format={fmt[:20]!r} is not one of {', '.join(tables.FORMATS)}")
  raw_limit = q.get("limit")
  limit = conf.bond_history_limit
  if raw_limit is not None:
    if not _DIGITS.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= conf.bond_history_max_limit:
      raise BadQueryError(
        f"limit={raw_limit[:20]!r} is not a whole number from 1 to {conf.bond_history_max_limit} "
        "(BOND_HISTORY_MAX_LIMIT)"
      )
    limit = int(raw_limit)
  cursor, raw_from = q.get("cursor"), q.get("from")
  if cursor is not None:
    if not _DIGITS.fullmatch(cursor):
      raise BadQueryError(f"cursor={cursor[:20]!r} is not a seq (the X-Next-Cursor of a page)")
    min_seq = int(cursor) + 1
  elif raw_from is None:
    raise BadQueryError("from is required: now-6h, an ISO-8601 time, or a seq to read after")
  else:
    try:
      min_seq = parse_from(raw_from).min_seq
    except ValueError as err:
      raise BadQueryError(str(err)) from None
  max_seq: int | None = None
  raw_to = q.get("to")
  if raw_to is not None:
    try:
      max_seq = parse_to(raw_to)
    except ValueError as err:
      raise BadQueryError(str(err)) from None
    if max_seq < min_seq and cursor is None:
      raise BadQueryError(f"to={raw_to[:40]!r} is before from={(raw_from or '')[:40]!r}")
  return max(min_seq, oldest_ms(conf.bond_history_hours)), max_seq, limit, fmt


async def read_windows(
  state: ApiState, sid: str, min_seq: int, max_seq: int | None, want: int
) -> list[tuple[int, str]]:
  """Return up to `want` windows (seq, JSON) from min_seq to max_seq, oldest first."""
  out: list[tuple[int, str]] = []
  key = wire.stream_key(sid)
  first_entries: list[tuple[str, Any]] = cast(Any, await state.redis.xrange(key, count=1))
  ring_first = int(first_entries[0][0].split("-", 1)[0]) if first_entries else None
  if from_kafka(min_seq, ring_first, state.settings.bond_ring_seconds):
    with state.history_slots.take():
      async with HistoryReader(state.settings.kafka_bootstrap, sid) as reader:
        async for page in reader.pages(min_seq, max_seq):
          out.extend(page[: want - len(out)])
          if len(out) >= want:
            return out
  # The ring: what Kafka's end did not reach yet (or all of it, for a recent `from`).
  low = str(out[-1][0] + 1 if out else min_seq)
  high = "+" if max_seq is None else str(max_seq)
  while len(out) < want:
    count = min(RING_PAGE, want - len(out))
    entries: list[tuple[str, dict[str, str]]] = cast(
      Any, await state.redis.xrange(key, min=low, max=high, count=count)
    )
    for entry_id, fields in entries:
      seq = int(entry_id.split("-", 1)[0])
      frame = fields.get("e")
      if frame is not None and (not out or seq > out[-1][0]):
        out.append((seq, frame))
    if len(entries) < count:
      break
    low = "(" + entries[-1][0]
  return out


def render(fmt: str, frames: list[str]) -> bytes:
  """Return window JSON texts as one body in a format (jsonl, csv, parquet)."""
  if fmt == "jsonl":
    return "".join(f + "\n" for f in frames).encode()
  events = [json.loads(f) for f in frames]
  if fmt == "csv":
    return tables.to_csv(events).encode()
  return tables.to_parquet(events)


async def stream_windows(request: Request) -> Response:
  """Return a page of a stream's windows (JSON lines, CSV or Parquet) and the next cursor."""
  state, owner = await _caller(request)
  rec = _record(request, state, owner)
  min_seq, max_seq, limit, fmt = _query(request, state)
  try:
    rows = await read_windows(state, rec.stream_id, min_seq, max_seq, limit + 1)
  except HistoryBusy as err:
    raise BusyError(f"history busy: {err}; retry in a moment") from None
  except KafkaError as err:
    raise UpstreamError(f"Kafka is unavailable ({err.__class__.__name__}); retry") from err
  except (RedisError, OSError) as err:
    raise UpstreamError(f"Redis is unavailable ({err.__class__.__name__}); retry") from err
  more = len(rows) > limit
  rows = rows[:limit]
  headers = {"X-Window-Count": str(len(rows))}
  if more:
    cursor = str(rows[-1][0])
    query = {k: v for k, v in request.query_params.items() if k not in ("cursor", "from")}
    query["cursor"] = cursor
    headers["X-Next-Cursor"] = cursor
    headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
  frames = [f for _, f in rows]
  # Built in memory (at most BOND_HISTORY_MAX_LIMIT windows), off the event loop.
  body = render(fmt, frames) if fmt == "jsonl" else await asyncio.to_thread(render, fmt, frames)
  return Response(body, media_type=MEDIA[fmt], headers=headers)
