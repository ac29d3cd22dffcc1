"""What an agent reads: every window field with its unit and what null means, compact rows,
and the time expressions the tools accept. Pure functions, no I/O."""

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

from bond.wire import iso_ms, parse_iso_ms


class FieldDoc(TypedDict):
  """One field of a window, as `describe_fields` explains it."""

  name: str
  type: str
  unit: str
  null_means: str
  description: str


def _f(name: str, type_: str, unit: str, null_means: str, description: str) -> FieldDoc:
  return {
    "name": name,
    "type": type_,
    "unit": unit,
    "null_means": null_means,
    "description": description,
  }


NEVER_NULL = "never null"
NO_PRICE = "no trade and no ticker update for this symbol in the window (the window is still sent)"

# The fields of an AggregatedEvent (bond.schemas), in the order of a compact row.
FIELDS: tuple[FieldDoc, ...] = (
  _f("stream_id", "string", "-", NEVER_NULL, "16 hex characters naming the stream."),
  _f("seq", "integer", "epoch milliseconds (UTC)", NEVER_NULL,
     "The window end as epoch ms: unique and increasing per stream. Consecutive windows differ "
     "by interval_sec*1000; a bigger step means windows are missing (none are skipped live)."),
  _f("ts", "string", "ISO-8601 UTC time", NEVER_NULL, "The window end (the same instant as seq)."),
  _f("window_start", "string", "ISO-8601 UTC time", NEVER_NULL,
     "The window start (inclusive); the window is [window_start, ts)."),
  _f("interval_sec", "integer", "seconds", NEVER_NULL, "The window length (1 to 3600)."),
  _f("symbol", "string", "exchange pair such as BTC/USDT", "the stream has no symbol (on-chain or custom only)",
     "The symbol of this row. A stream over several symbols gives one compact row per symbol."),
  _f("price_avg", "number", "quote currency per unit (USDT for */USDT pairs)", NO_PRICE,
     "Mean trade price in the window, across exchanges (ticker prices when there was no trade)."),
  _f("price_open", "number", "quote currency per unit", NO_PRICE, "First price in the window."),
  _f("price_high", "number", "quote currency per unit", NO_PRICE, "Highest price in the window."),
  _f("price_low", "number", "quote currency per unit", NO_PRICE, "Lowest price in the window."),
  _f("price_close", "number", "quote currency per unit", NO_PRICE, "Last price in the window."),
  _f("vwap", "number", "quote currency per unit", "no traded volume in the window",
     "Volume-weighted average price: sum(price*amount) / sum(amount)."),
  _f("volume_sum", "number", "base asset units (BTC for BTC/USDT)", NEVER_NULL,
     "Traded amount in the window; 0 when nothing traded."),
  _f("trades", "integer", "count", NEVER_NULL, "Number of trades in the window."),
  _f("tweets", "integer", "count", NEVER_NULL, "Posts on X mentioning the symbol's asset."),
  _f("liquidations", "integer", "count", NEVER_NULL, "Liquidation orders in the window."),
  _f("onchain", "object (compact rows: integer total)", "count per event kind (tx, transfer, block, ...)",
     NEVER_NULL, "On-chain events in the window by kind; compact rows give the total."),
  _f("custom_count", "integer", "count", NEVER_NULL, "Events from custom WebSocket sources."),
  _f("raw_data", "object", "-", NEVER_NULL,
     "Extras: raw_data.sources lists the exchanges/feeds that contributed; raw_data.sim is true "
     "for the offline simulated market (never real prices). Compact rows keep only `sim`."),
  _f("by_symbol", "object", "per-symbol fields as above", "the stream has one symbol",
     "With several symbols: each symbol's own fields; the top level repeats the first symbol."),
)  # fmt: skip

NOTES = (
  "Windows are tumbling and aligned to the epoch: a 5 s stream's windows end at :00, :05, :10.",
  "Every window is sent, empty ones too (prices null, counts 0): silence is data, not an outage.",
  "A window is sent within milliseconds of its end, and at the latest 1 s after it.",
  "The gateway keeps the last 60 s of windows (at most 1000) for replay.",
)

# Compact rows: one list per (window, symbol), in this column order.
COLUMNS = (
  "seq", "ts", "symbol", "price_open", "price_high", "price_low", "price_close", "price_avg",
  "vwap", "volume_sum", "trades", "tweets", "liquidations", "onchain", "custom_count",
)  # fmt: skip
_SYMBOL_FIELDS = COLUMNS[3:13]


def compact_rows(events: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
  """Return compact rows (COLUMNS order) of windows: one row per window and symbol."""
  rows: list[list[Any]] = []
  for event in events:
    onchain = event.get("onchain") or {}
    chain = sum(v for v in onchain.values() if isinstance(v, int))
    per_symbol: Mapping[str, Mapping[str, Any]] = event.get("by_symbol") or {
      event.get("symbol") or "": event
    }
    for symbol, fields in per_symbol.items():
      rows.append(
        [event.get("seq"), event.get("ts"), symbol or None]
        + [fields.get(name) for name in _SYMBOL_FIELDS]
        + [chain, event.get("custom_count", 0)]
      )
  return rows


def table(stream_id: str, events: Sequence[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
  """Return the answer of a window tool: columns, rows and what an agent needs to go on."""
  sim = any((e.get("raw_data") or {}).get("sim") for e in events)
  body: dict[str, Any] = {
    "stream_id": stream_id,
    "windows": len(events),
    "first_seq": events[0].get("seq") if events else None,
    "last_seq": events[-1].get("seq") if events else None,
    "columns": list(COLUMNS),
    "rows": compact_rows(events),
  }
  if sim:
    body["sim"] = True
  body.update(extra)
  return body


# ---------------------------------------------------------------------- time expressions

_RELATIVE = re.compile(r"now(?:\s*-\s*(\d{1,9})\s*(s|m|h|d))?")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
TIME_HELP = "now, now-90s, now-5m, now-2h, now-1d, an ISO-8601 time or epoch milliseconds"


def parse_time_ms(value: str | int, now_ms: int | None = None) -> int:
  """Return epoch ms of a time expression (TIME_HELP); raise ValueError saying what is accepted."""
  now = int(time.time() * 1000) if now_ms is None else now_ms
  if isinstance(value, int):
    if 0 <= value < 10**14:
      return value
    raise ValueError(f"{value} is not epoch milliseconds")
  text = value.strip().lower()
  if text.isdigit() and len(text) <= 14:
    return int(text)
  rel = _RELATIVE.fullmatch(text)
  if rel is not None:
    return max(0, now - (int(rel[1]) * _UNIT_MS[rel[2]] if rel[1] else 0))
  try:
    return parse_iso_ms(value.strip())
  except (ValueError, OverflowError, OSError):
    raise ValueError(f"time {value[:40]!r} is not {TIME_HELP}") from None


def iso(ms: int) -> str:
  """Return epoch ms as ISO-8601 UTC."""
  return iso_ms(ms)
