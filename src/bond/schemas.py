"""The shapes of everything that crosses a topic, a socket or the REST API.

Raw events (RawTick, Tweet, OnchainEvent, CustomEvent, Heartbeat) are what connectors
publish to the per-source topics; AggregatedEvent is one closed window of one stream;
StreamSpec is what a user asks for. All are plain JSON on the wire.
"""

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
  BaseModel,
  ConfigDict,
  Field,
  ValidationInfo,
  field_validator,
  model_validator,
)

from bond.netguard import BlockedAddress, check_url
from bond.spec_limits import json_depth, limits_of

QUOTE_DEFAULT = "USDT"
KNOWN_QUOTES = ("USDT", "USDC", "USD", "BUSD", "FDUSD", "EUR", "BTC", "ETH")
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,15}(/[A-Z0-9]{1,15})?$")
_TICKER_RE = re.compile(r"^[A-Z0-9]{1,15}$")
_EXCHANGE_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,31}$")
MAX_PATH_CHARS = 256
MAX_FILTER_ENTRIES = 16

SourceName = Literal["ccxt", "twitter", "onchain", "custom"]
SOURCE_ALIASES: dict[str, SourceName] = {
  "ccxt": "ccxt",
  "ccxt.ticker": "ccxt",
  "ccxt.trades": "ccxt",
  "twitter": "twitter",
  "x": "twitter",
  "x.tweets": "twitter",
  "onchain": "onchain",
  "onchain.grpc": "onchain",
  "custom": "custom",
  "custom.ws": "custom",
}
ONCHAIN_TYPES = ("tx", "transfer", "block", "account", "metric")


def normalize_pair(symbol: str) -> str:
  """Return an exchange pair: `btc` -> `BTC/USDT`, `eth/usdc` -> `ETH/USDC`."""
  text = symbol.strip().upper().lstrip("$#")
  if "/" not in text:
    for quote in ("USDT", "USDC", "BUSD", "FDUSD"):
      if text.endswith(quote) and len(text) > len(quote):
        text = f"{text[: -len(quote)]}/{quote}"
        break
    else:
      text = f"{text}/{QUOTE_DEFAULT}"
  if not _SYMBOL_RE.match(text):
    raise ValueError(f"symbol {symbol[:40]!r} is not a ticker like BTC or a pair like BTC/USDT")
  return text


def base_asset(symbol: str) -> str:
  """Return the base asset of a pair or ticker: `BTC/USDT` -> `BTC`."""
  return symbol.strip().upper().lstrip("$#").split("/")[0]


def ticker(symbol: str) -> str:
  """Return the checked base asset of a ticker or pair (`$btc` -> `BTC`); raise ValueError.

  Only letters and digits pass, so a symbol cannot carry operators into an X rule.
  """
  if not isinstance(symbol, str):
    raise ValueError(f"symbol {str(symbol)[:40]!r} is not a ticker like BTC")
  base = base_asset(symbol)
  if not _TICKER_RE.match(base):
    raise ValueError(
      f"symbol {symbol[:40]!r} is not a ticker like BTC (1 to 15 letters and digits)"
    )
  normalize_pair(symbol)  # and nothing odd after the base: "BTC/USDT/X" is no pair
  return base


class _Raw(BaseModel):
  model_config = ConfigDict(extra="ignore")

  ts: int = Field(description="event time at the source, epoch ms")
  ts_ingest: int = Field(0, description="when Bond received it, epoch ms")
  sim: bool = False


class RawTick(_Raw):
  """One exchange ticker update, trade or liquidation, keyed by symbol in bond.raw.ccxt."""

  exchange: str
  symbol: str
  kind: Literal["ticker", "trade", "liquidation"]
  price: float | None = None
  amount: float | None = None
  side: Literal["buy", "sell"] | None = None
  trade_id: str | None = None


class Tweet(_Raw):
  """One post mentioning symbols, keyed by symbol in bond.raw.x."""

  id: str
  text: str
  author: str
  symbols: list[str]


class OnchainEvent(_Raw):
  """One on-chain event, keyed by chain in bond.raw.onchain."""

  chain: str = "sol"
  type: Literal["tx", "transfer", "block", "account", "metric"]
  slot: int | None = None
  signature: str | None = None
  amount: float | None = None


class CustomEvent(_Raw):
  """One mapped message of a custom WebSocket feed, keyed by source id in bond.raw.custom."""

  source: str
  payload: dict[str, Any] = Field(default_factory=dict)
  symbol: str | None = None
  price: float | None = None
  amount: float | None = None


class Heartbeat(_Raw):
  """Progress of a quiet feed: nothing older than `ts` will come from it."""

  heartbeat: Literal[True] = True
  source: SourceName
  exchange: str = ""
  symbol: str = ""


# ---------------------------------------------------------------------- stream specs


class CcxtSource(BaseModel):
  """Exchange prices, trades and (optionally) liquidations through ccxt."""

  model_config = ConfigDict(extra="forbid")

  type: Literal["ccxt"] = "ccxt"
  symbols: list[str] | None = None
  exchanges: list[str] | None = None
  liquidations: bool = False

  @field_validator("symbols", mode="before")
  @classmethod
  def _few_symbols(cls, value: Any, info: ValidationInfo) -> Any:
    limits_of(info).cap(value, "max_symbols", "symbols")
    return value

  @field_validator("exchanges", mode="before")
  @classmethod
  def _few_exchanges(cls, value: Any, info: ValidationInfo) -> Any:
    limits_of(info).cap(value, "max_exchanges", "exchanges")
    return value

  @field_validator("symbols")
  @classmethod
  def _pairs(cls, value: list[str] | None) -> list[str] | None:
    return None if value is None else _dedupe([normalize_pair(s) for s in value])

  @field_validator("exchanges")
  @classmethod
  def _exchange_ids(cls, value: list[str] | None) -> list[str] | None:
    return None if value is None else _exchange_names(value)


class TwitterSource(BaseModel):
  """Posts on X mentioning the stream's symbols (cashtags, hashtags, names)."""

  model_config = ConfigDict(extra="forbid")

  type: Literal["twitter"] = "twitter"
  symbols: list[str] | None = None

  @field_validator("symbols", mode="before")
  @classmethod
  def _few_symbols(cls, value: Any, info: ValidationInfo) -> Any:
    limits_of(info).cap(value, "max_symbols", "symbols")
    return value

  @field_validator("symbols")
  @classmethod
  def _bases(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
    if value is None:
      return None
    # A user's symbols must be tickers; a stored stream loads as it was stored (XStream
    # drops anything else before it builds a rule).
    read = ticker if limits_of(info).intake else base_asset
    return _dedupe([read(s) for s in value])


class OnchainSource(BaseModel):
  """Solana activity from a Yellowstone Geyser gRPC endpoint (or the mock)."""

  model_config = ConfigDict(extra="forbid")

  type: Literal["onchain"] = "onchain"
  chain: Literal["sol"] = "sol"
  event_types: list[Literal["tx", "transfer", "block", "account", "metric"]] = Field(
    default_factory=lambda: ["tx", "transfer"],  # type: ignore[arg-type]
    min_length=1,
    max_length=len(ONCHAIN_TYPES),
  )

  @field_validator("event_types")
  @classmethod
  def _distinct(cls, value: list[str]) -> list[str]:
    return _dedupe(value)


Path = Annotated[str, Field(min_length=1, max_length=MAX_PATH_CHARS)]


class CustomMapping(BaseModel):
  """Where to find fields in a custom feed's JSON messages (dotted paths)."""

  model_config = ConfigDict(extra="forbid")

  ts: Path | None = Field(
    None, description="path of the event time (epoch s or ms); receive time if absent"
  )
  price: Path | None = None
  amount: Path | None = None
  symbol: Path | None = None
  filter: (
    dict[Path, Annotated[str, Field(max_length=MAX_PATH_CHARS)] | int | float | bool] | None
  ) = Field(
    None,
    max_length=MAX_FILTER_ENTRIES,
    description="keep only messages whose paths equal these values",
  )


class CustomSource(BaseModel):
  """Any WebSocket feed, mapped declaratively; never code sent over REST."""

  model_config = ConfigDict(extra="forbid")

  type: Literal["custom"] = "custom"
  url: str
  mapping: CustomMapping = Field(default_factory=CustomMapping)
  subscribe: dict[str, Any] | None = Field(None, description="a JSON message sent after connecting")

  @field_validator("url")
  @classmethod
  def _ws_url(cls, value: str, info: ValidationInfo) -> str:
    # A user's spec: public addresses or BOND_CUSTOM_ALLOW. A stored stream loads as it
    # was stored: the connector checks every resolved address on each connect anyway.
    limits = limits_of(info)
    if not limits.intake:
      if not re.match(r"^wss?://[^\s/]+", value, re.I):
        raise ValueError("url must be a ws:// or wss:// URL")
      return value
    try:
      check_url(value, limits.custom_allow)
    except BlockedAddress as exc:
      raise ValueError(exc.message) from None
    return value

  @field_validator("subscribe", mode="before")
  @classmethod
  def _small_subscribe(cls, value: Any, info: ValidationInfo) -> Any:
    if value is None:
      return value
    limits = limits_of(info)
    depth = json_depth(value, limits.max_subscribe_depth)
    if depth > limits.max_subscribe_depth:
      raise ValueError(
        f"nested deeper than {limits.max_subscribe_depth} levels; "
        f"the limit is {limits.max_subscribe_depth} (BOND_MAX_SUBSCRIBE_DEPTH)"
      )
    try:
      size = len(json.dumps(value, separators=(",", ":"), allow_nan=False).encode())
    except (TypeError, ValueError):
      raise ValueError("must be a JSON object (strings, finite numbers, lists, objects)") from None
    if size > limits.max_subscribe_bytes:
      raise ValueError(
        f"{size} bytes as JSON; the limit is {limits.max_subscribe_bytes} "
        "(BOND_MAX_SUBSCRIBE_BYTES)"
      )
    return value

  @property
  def source_id(self) -> str:
    """Return a stable id for this feed (url + mapping), used as the raw topic key."""
    import hashlib

    body = self.model_dump_json(include={"url", "mapping", "subscribe"})
    return "custom-" + hashlib.sha256(body.encode()).hexdigest()[:12]


Source = Annotated[
  CcxtSource | TwitterSource | OnchainSource | CustomSource, Field(discriminator="type")
]


class StreamSpec(BaseModel):
  """What a user asks for: sources, symbols, a window interval, optional exchanges."""

  model_config = ConfigDict(extra="forbid")

  sources: list[Source] = Field(min_length=1)
  symbols: list[str] = Field(default_factory=list)
  interval_sec: int = Field(
    5, ge=1, le=3600, description="window length in whole seconds, 1 to 3600"
  )
  exchanges: list[str] | None = None

  @model_validator(mode="before")
  @classmethod
  def _aliases(cls, data: Any, info: ValidationInfo) -> Any:
    if not isinstance(data, dict):
      return data
    data = dict(data)
    limits = limits_of(info)
    # Count before validating anything: a 12,000-symbol list is refused in microseconds.
    for name, cap, what in (
      ("sources", "max_sources", "sources"),
      ("symbols", "max_symbols", "symbols"),
      ("exchanges", "max_exchanges", "exchanges"),
    ):
      try:
        limits.cap(data.get(name), cap, what)
      except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    sources = data.get("sources")
    if isinstance(sources, list):
      fixed = []
      for src in sources:
        if isinstance(src, str):
          src = {"type": src}
        if isinstance(src, dict) and isinstance(src.get("type"), str):
          name = src["type"].strip().lower()
          if name not in SOURCE_ALIASES:
            allowed = ", ".join(sorted(SOURCE_ALIASES))
            raise ValueError(f"sources: unknown type {src['type'][:40]!r}; allowed: {allowed}")
          src = {**src, "type": SOURCE_ALIASES[name]}
        fixed.append(src)
      data["sources"] = fixed
    interval = data.get("interval_sec")
    if isinstance(interval, float) and not interval.is_integer():
      raise ValueError("interval_sec must be whole seconds from 1 to 3600")
    return data

  @field_validator("symbols")
  @classmethod
  def _pairs(cls, value: list[str]) -> list[str]:
    return _dedupe([normalize_pair(s) for s in value])

  @field_validator("exchanges")
  @classmethod
  def _exchanges(cls, value: list[str] | None) -> list[str] | None:
    return None if value is None else _exchange_names(value)

  @model_validator(mode="after")
  def _symbols_everywhere(self, info: ValidationInfo) -> "StreamSpec":
    # The stream's symbols are the union of its own and its sources' when given only there.
    if not self.symbols:
      found: list[str] = []
      for src in self.sources:
        if isinstance(src, CcxtSource | TwitterSource) and src.symbols:
          found += [normalize_pair(s) for s in src.symbols]
      self.symbols = _dedupe(found)
      try:
        limits_of(info).cap(self.symbols, "max_symbols", "symbols across the sources")
      except ValueError as exc:
        raise ValueError(f"symbols: {exc}") from None
    needs_symbols = any(isinstance(s, CcxtSource | TwitterSource) for s in self.sources)
    if needs_symbols and not self.symbols:
      raise ValueError('symbols: give at least one symbol, e.g. ["BTC/USDT"]')
    return self

  def pairs_for(self, source: CcxtSource) -> list[str]:
    """Return the exchange pairs a ccxt source covers."""
    return source.symbols or self.symbols

  def bases_for(self, source: TwitterSource) -> list[str]:
    """Return the base assets a twitter source covers."""
    return source.symbols or _dedupe([base_asset(s) for s in self.symbols])

  def exchanges_for(self, source: CcxtSource, default: list[str]) -> list[str]:
    """Return the exchanges a ccxt source covers."""
    return source.exchanges or self.exchanges or default


def _dedupe(items: list[str]) -> list[str]:
  return list(dict.fromkeys(items))


def _exchange_names(value: list[str]) -> list[str]:
  names = _dedupe([v.strip().lower() for v in value if v.strip()])
  if not names:
    raise ValueError("exchanges: give at least one exchange id, e.g. binance")
  for name in names:
    if not _EXCHANGE_RE.match(name):
      raise ValueError(f"exchange {name[:40]!r} is not a ccxt exchange id like binance or okx")
  return names


# ---------------------------------------------------------------------- aggregated


class SymbolAggregate(BaseModel):
  """The per-symbol fields of one window."""

  price_avg: float | None = None
  price_open: float | None = None
  price_high: float | None = None
  price_low: float | None = None
  price_close: float | None = None
  vwap: float | None = None
  volume_sum: float = 0.0
  trades: int = 0
  tweets: int = 0
  liquidations: int = 0


class AggregatedEvent(SymbolAggregate):
  """One closed window of one stream: seq is the window end in epoch ms."""

  stream_id: str
  seq: int
  ts: str
  window_start: str
  interval_sec: int
  symbol: str | None = None
  onchain: dict[str, int] = Field(default_factory=dict)
  custom_count: int = 0
  raw_data: dict[str, Any] = Field(default_factory=dict)
  by_symbol: dict[str, SymbolAggregate] | None = None
