"""Where a WebSocket replay starts: the `from` query parameter."""

import re
import time
from dataclasses import dataclass

from bond import wire

_RELATIVE = re.compile(r"now(?:-(\d{1,9})(s|m|h|d))?")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


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
    return ReplayStart(min_seq=max(0, wire.parse_iso_ms(text)))
  except (ValueError, OverflowError, OSError):
    raise ValueError(
      f"from={value[:40]!r} is not now-60s, now-5m, now-2h, an ISO-8601 time or a seq"
    ) from None


def parse_to(value: str, now_ms: int | None = None) -> int:
  """Parse `to` (the same forms as `from`): the largest seq wanted, inclusive."""
  text = value.strip()
  if text.isdigit() and len(text) <= 18:
    return int(text)
  try:
    return parse_from(text, now_ms).min_seq
  except ValueError:
    raise ValueError(
      f"to={value[:40]!r} is not now-60s, now-5m, now-2h, an ISO-8601 time or a seq"
    ) from None
