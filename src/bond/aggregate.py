"""Window arithmetic and aggregation, free of I/O: panes per feed, windows per stream.

A pane is the aggregate of one feed (source, exchange, symbol) over a short aligned span
(`pane_ms`, 1 s by default). A stream's window `[k*I, (k+1)*I)` is composed from the panes
of its feeds that fall inside it, so the per-event work is done once per feed, whatever
the number of streams.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bond.schemas import (
  CcxtSource,
  CustomSource,
  OnchainSource,
  StreamSpec,
  TwitterSource,
  base_asset,
)

Pane = dict[str, Any]


# ---------------------------------------------------------------------- time


def window_start(ts_ms: int, size_ms: int) -> int:
  """Return the start of the epoch-aligned window holding ts_ms (an event at k*size is in k)."""
  return ts_ms - ts_ms % size_ms


def first_window_end(created_ms: int, size_ms: int) -> int:
  """Return the end of a new stream's first window: the one starting at the next boundary."""
  start = -(-created_ms // size_ms) * size_ms
  return start + size_ms


def iso_ms(ms: int) -> str:
  """Return epoch ms as ISO-8601 UTC with a Z (milliseconds only when not whole seconds)."""
  dt = datetime.fromtimestamp(ms / 1000, UTC)
  if ms % 1000:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
  return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------- feeds


@dataclass(frozen=True)
class Feed:
  """One upstream feed: what a connector runs and what a pane aggregates."""

  source: str  # ccxt | twitter | onchain | custom
  exchange: str  # exchange id, "x", the chain, or the custom source id
  symbol: str  # pair, base asset, chain, or custom source id
  raw_key: str  # the key of its raw topic records

  @property
  def id(self) -> str:
    return f"{self.source}|{self.exchange}|{self.symbol}"


def feeds_for(spec: StreamSpec, default_exchanges: list[str]) -> list[Feed]:
  """Return the feeds a stream depends on, in a stable order."""
  feeds: list[Feed] = []
  for src in spec.sources:
    if isinstance(src, CcxtSource):
      for ex in spec.exchanges_for(src, default_exchanges):
        feeds += [Feed("ccxt", ex, pair, pair) for pair in spec.pairs_for(src)]
    elif isinstance(src, TwitterSource):
      feeds += [Feed("twitter", "x", b, b) for b in spec.bases_for(src)]
    elif isinstance(src, OnchainSource):
      feeds.append(Feed("onchain", src.chain, src.chain, src.chain))
    elif isinstance(src, CustomSource):
      sid = src.source_id
      feeds.append(Feed("custom", sid, sid, sid))
  return list(dict.fromkeys(feeds))


def feed_of_raw(source: str, raw: dict[str, Any], key: str) -> Feed:
  """Return the feed a raw record (or heartbeat) belongs to."""
  if source == "ccxt":
    return Feed("ccxt", raw.get("exchange", ""), raw.get("symbol", key), key)
  if source == "twitter":
    return Feed("twitter", "x", key, key)
  if source == "onchain":
    chain = raw.get("chain") or raw.get("exchange") or key
    return Feed("onchain", chain, chain, key)
  return Feed("custom", key, key, key)


# ---------------------------------------------------------------------- panes


def pane_add(pane: Pane, source: str, raw: dict[str, Any]) -> None:
  """Merge one raw event into a pane (in place)."""
  pane["in"] = pane.get("in", 0) + 1
  if raw.get("sim"):
    pane["sim"] = True
  if source == "ccxt":
    kind = raw.get("kind")
    if kind == "liquidation":
      pane["liq"] = pane.get("liq", 0) + 1
      return
    price = raw.get("price")
    if price is None:
      return
    ts = raw["ts"]
    prefix = "" if kind == "trade" else "t"
    _price_stats(pane, prefix, ts, float(price))
    if kind == "trade":
      amount = float(raw.get("amount") or 0.0)
      pane["v"] = pane.get("v", 0.0) + amount
      pane["pv"] = pane.get("pv", 0.0) + price * amount
  elif source == "twitter":
    pane["tw"] = pane.get("tw", 0) + 1
  elif source == "onchain":
    counts = pane.setdefault("oc", {})
    counts[raw["type"]] = counts.get(raw["type"], 0) + 1
  else:
    pane["cu"] = pane.get("cu", 0) + 1


def _price_stats(pane: Pane, prefix: str, ts: int, price: float) -> None:
  n = prefix + "n"
  pane[n] = pane.get(n, 0) + 1
  pane[prefix + "ps"] = pane.get(prefix + "ps", 0.0) + price
  first, last = pane.get(prefix + "o"), pane.get(prefix + "c")
  if first is None or ts < first[0]:
    pane[prefix + "o"] = [ts, price]
  if last is None or ts >= last[0]:
    pane[prefix + "c"] = [ts, price]
  hi, lo = pane.get(prefix + "h"), pane.get(prefix + "l")
  pane[prefix + "h"] = price if hi is None or price > hi else hi
  pane[prefix + "l"] = price if lo is None or price < lo else lo


def pane_merge(into: Pane, other: Pane) -> None:
  """Merge pane `other` into `into` (in place); the result is as if one pane saw both."""
  for key, value in other.items():
    if key in ("o", "to"):
      cur = into.get(key)
      if cur is None or value[0] < cur[0]:
        into[key] = value
    elif key in ("c", "tc"):
      cur = into.get(key)
      if cur is None or value[0] >= cur[0]:
        into[key] = value
    elif key in ("h", "th"):
      into[key] = value if into.get(key) is None else max(into[key], value)
    elif key in ("l", "tl"):
      into[key] = value if into.get(key) is None else min(into[key], value)
    elif key == "oc":
      counts = into.setdefault("oc", {})
      for kind, count in value.items():
        counts[kind] = counts.get(kind, 0) + count
    elif key == "sim":
      into["sim"] = into.get("sim", False) or value
    else:
      into[key] = into.get(key, 0) + value


# ---------------------------------------------------------------------- windows


def _symbol_fields(pane: Pane, tweets: int) -> dict[str, Any]:
  trades = pane.get("n", 0)
  pre = "" if trades else "t"
  count = pane.get(pre + "n", 0)
  volume = pane.get("v", 0.0)
  return {
    "price_avg": pane[pre + "ps"] / count if count else None,
    "price_open": pane[pre + "o"][1] if count else None,
    "price_high": pane[pre + "h"] if count else None,
    "price_low": pane[pre + "l"] if count else None,
    "price_close": pane[pre + "c"][1] if count else None,
    "vwap": pane["pv"] / volume if volume > 0 else None,
    "volume_sum": volume,
    "trades": trades,
    "tweets": tweets,
    "liquidations": pane.get("liq", 0),
  }


def compose_window(
  stream_id: str,
  spec: StreamSpec,
  feeds: list[Feed],
  end_ms: int,
  panes: dict[str, Pane],
) -> dict[str, Any]:
  """Return the AggregatedEvent (as a dict) of the window ending at end_ms.

  `panes` maps feed id to the merged pane of that feed over the whole window.
  """
  size_ms = spec.interval_sec * 1000
  by_pair: dict[str, Pane] = {pair: {} for pair in spec.symbols}
  tweets: dict[str, int] = {}
  onchain: dict[str, int] = {}
  custom = 0
  sources: set[str] = set()
  sim = False
  for feed in feeds:
    pane = panes.get(feed.id)
    if not pane:
      continue
    sim = sim or bool(pane.get("sim"))
    if feed.source == "ccxt":
      pane_merge(by_pair.setdefault(feed.symbol, {}), pane)
      if pane.get("n") or pane.get("tn") or pane.get("liq"):
        sources.add(feed.exchange)
    elif feed.source == "twitter":
      tweets[feed.symbol] = tweets.get(feed.symbol, 0) + pane.get("tw", 0)
      if pane.get("tw"):
        sources.add("x")
    elif feed.source == "onchain":
      for kind, count in pane.get("oc", {}).items():
        onchain[kind] = onchain.get(kind, 0) + count
      if pane.get("oc"):
        sources.add(feed.exchange)
    else:
      custom += pane.get("cu", 0)
      if pane.get("cu"):
        sources.add("custom")
  wanted: list[str] = []
  for src in spec.sources:
    if isinstance(src, OnchainSource):
      wanted += src.event_types
  onchain_out = {kind: onchain.get(kind, 0) for kind in dict.fromkeys(wanted)}
  symbols = spec.symbols
  per_symbol = {
    pair: _symbol_fields(by_pair.get(pair, {}), tweets.get(base_asset(pair), 0)) for pair in symbols
  }
  top = per_symbol[symbols[0]] if symbols else _symbol_fields({}, 0)
  event: dict[str, Any] = {
    "stream_id": stream_id,
    "seq": end_ms,
    "ts": iso_ms(end_ms),
    "window_start": iso_ms(end_ms - size_ms),
    "interval_sec": spec.interval_sec,
    "symbol": symbols[0] if symbols else None,
    **top,
    "onchain": onchain_out,
    "custom_count": custom,
    "raw_data": {"trades": top["trades"], "sources": sorted(sources), "sim": sim},
    "by_symbol": per_symbol if len(symbols) > 1 else None,
  }
  return event
