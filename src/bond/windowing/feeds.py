"""Feeds: what a connector runs, what a pane aggregates, and which streams depend on which."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bond.schemas import CcxtSource, CustomSource, OnchainSource, StreamSpec, TwitterSource


@dataclass(frozen=True, slots=True)
class Feed:
  """One upstream feed: (source, exchange, symbol) and the key of its raw topic records."""

  source: str  # ccxt | twitter | onchain | custom
  exchange: str  # exchange id, "x", the chain, or the custom source id
  symbol: str  # pair, base asset, chain, or custom source id
  raw_key: str  # the key of its raw topic records
  # The feed id, e.g. `ccxt|binance|BTC/USDT` (made once: stage 2 reads it per pane and window).
  id: str = field(init=False, repr=False, compare=False)

  def __post_init__(self) -> None:
    object.__setattr__(self, "id", f"{self.source}|{self.exchange}|{self.symbol}")

  @property
  def label(self) -> str:
    """Return the name this feed adds to a window's `raw_data.sources` when it contributed."""
    return "custom" if self.source == "custom" else self.exchange


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


def feed_of_raw(source: str, raw: Mapping[str, Any], key: str) -> Feed:
  """Return the feed a raw record (or heartbeat) belongs to."""
  if source == "ccxt":
    return Feed("ccxt", raw.get("exchange", ""), raw.get("symbol", key), key)
  if source == "twitter":
    return Feed("twitter", "x", key, key)
  if source == "onchain":
    chain = raw.get("chain") or raw.get("exchange") or key
    return Feed("onchain", chain, chain, key)
  return Feed("custom", key, key, key)
