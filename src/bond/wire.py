"""The wire vocabulary shared by the worker, the gateway and the SDK.

Redis key names, WebSocket close codes and the millisecond <-> ISO-8601 time helpers are
spelled here once; every other module imports them (ARCHITECTURE.md "Wire protocol").
"""

import functools
from datetime import UTC, datetime

# ---------------------------------------------------------------------- Redis keys


def stream_key(stream_id: str) -> str:
  """Return the Redis Stream holding a stream's replay ring (entry id `<seq>-0`)."""
  return f"bond:stream:{stream_id}"


def metrics_key(stream_id: str) -> str:
  """Return the Redis hash holding a stream's counters and latency percentiles."""
  return f"bond:metrics:{stream_id}"


def backfill_key(stream_id: str) -> str:
  """Return the Redis hash holding a stream's backfill progress (ARCHITECTURE.md "Backfill")."""
  return f"bond:backfill:{stream_id}"


def project_streams_key(owner: str) -> str:
  """Return the Redis sorted set of a project's stream ids (the per-project stream limit)."""
  return f"bond:project:{owner}:streams"


def rate_key(owner: str) -> str:
  """Return the Redis hash holding a project's request token bucket."""
  return f"bond:rate:{owner}"


# ---------------------------------------------------------------------- WebSocket close codes

GOING_AWAY = 1001  # the server is shutting down: reconnect elsewhere or later
POLICY = 1008  # the client broke the protocol (abusive messages)
TOO_BIG = 1009  # a client frame over the limit
INTERNAL = 1011  # unexpected server error
TRY_AGAIN = 1013  # replay or live feed unavailable for now: retry with backoff
BAD_FROM = 4400  # `from` not understood
BAD_TOKEN = 4401  # token malformed, expired, revoked or with a bad signature
WRONG_STREAM = 4403  # token for another stream
NO_STREAM = 4404  # unknown or deleted stream
TOO_SLOW = 4408  # the client did not keep up with its bounded send queue
TOO_MANY = 4429  # over BOND_WS_MAX_PER_TOKEN or BOND_WS_MAX_PER_IP open sockets

# The one message a client may send: `{"type": "refresh", "token": "<new token>"}` keeps the
# socket open past the old token's expiry (the new token must be for the same stream).
REFRESH = "refresh"

CLOSE_REASONS: dict[int, str] = {
  GOING_AWAY: "server going away",
  POLICY: "policy violation",
  TOO_BIG: "message too big",
  INTERNAL: "internal error",
  TRY_AGAIN: "try again later",
  BAD_FROM: "bad from",
  BAD_TOKEN: "bad or expired token",
  WRONG_STREAM: "token for another stream",
  NO_STREAM: "unknown or deleted stream",
  TOO_SLOW: "client too slow",
  TOO_MANY: "too many connections",
}

# ---------------------------------------------------------------------- time


@functools.lru_cache(maxsize=4096)  # every window ending at one time shares its two stamps
def iso_ms(ms: int) -> str:
  """Return epoch ms as ISO-8601 UTC with a Z (milliseconds only when not whole seconds)."""
  dt = datetime.fromtimestamp(ms / 1000, UTC)
  if ms % 1000:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
  return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_ms(text: str) -> int:
  """Return epoch ms of an ISO-8601 time (a trailing Z or an offset; naive means UTC)."""
  dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
  if dt.tzinfo is None:
    dt = dt.replace(tzinfo=UTC)
  return int(dt.timestamp() * 1000)
