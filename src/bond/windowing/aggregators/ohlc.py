"""Price open/high/low/close and mean, from trades; from tickers when a window has no trade."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bond.schemas import StreamSpec
from bond.windowing.aggregators.base import Aggregator, OutField, Scope, register


@dataclass(slots=True)
class PriceStats:
  """Count, sum, first, last, highest and lowest of a series of (ts_ms, price)."""

  n: int
  total: float
  open_ts_ms: int
  open: float
  close_ts_ms: int
  close: float
  high: float
  low: float

  @classmethod
  def of(cls, ts_ms: int, price: float) -> "PriceStats":
    """Return the stats of one price."""
    return cls(1, price, ts_ms, price, ts_ms, price, price, price)

  def add(self, ts_ms: int, price: float) -> None:
    """Add one price (an equal timestamp later in the stream becomes the close)."""
    self.n += 1
    self.total += price
    if ts_ms < self.open_ts_ms:
      self.open_ts_ms, self.open = ts_ms, price
    if ts_ms >= self.close_ts_ms:
      self.close_ts_ms, self.close = ts_ms, price
    self.high = max(self.high, price)
    self.low = min(self.low, price)

  def merge(self, other: "PriceStats") -> None:
    """Add another series (later in the stream on equal timestamps)."""
    self.n += other.n
    self.total += other.total
    if other.open_ts_ms < self.open_ts_ms:
      self.open_ts_ms, self.open = other.open_ts_ms, other.open
    if other.close_ts_ms >= self.close_ts_ms:
      self.close_ts_ms, self.close = other.close_ts_ms, other.close
    self.high = max(self.high, other.high)
    self.low = min(self.low, other.low)

  def copy(self) -> "PriceStats":
    """Return an independent copy."""
    return PriceStats(*self.to_list())

  def to_list(self) -> list[Any]:
    """Return [n, total, open_ts_ms, open, close_ts_ms, close, high, low]."""
    return [self.n, self.total, self.open_ts_ms, self.open, self.close_ts_ms, self.close,
            self.high, self.low]  # fmt: skip

  @classmethod
  def from_list(cls, data: list[Any] | None) -> "PriceStats | None":
    """Return stats from `to_list`'s form (None stays None)."""
    return None if data is None else cls(*data)


@dataclass(slots=True)
class OhlcState:
  """Price stats of trades and, apart, of tickers (the fallback of a window without trades)."""

  trade: PriceStats | None = None
  ticker: PriceStats | None = None


def _merged(into: PriceStats | None, other: PriceStats | None) -> PriceStats | None:
  if other is None:
    return into
  if into is None:
    return other.copy()
  into.merge(other)
  return into


class Ohlc(Aggregator[OhlcState]):
  """price_avg / open / high / low / close: of the trades, or of the tickers if none traded."""

  name = "ohlc"
  sources = frozenset({"ccxt"})
  scope = Scope.SYMBOL
  fields = (
    OutField("price_avg", "quote currency per base unit (mean of prices)"),
    OutField("price_open", "quote currency per base unit"),
    OutField("price_high", "quote currency per base unit"),
    OutField("price_low", "quote currency per base unit"),
    OutField("price_close", "quote currency per base unit"),
  )

  def init(self) -> OhlcState:
    return OhlcState()

  def accepts(self, raw: Mapping[str, Any]) -> bool:
    return raw.get("kind") != "liquidation" and raw.get("price") is not None

  def add(self, state: OhlcState, raw: Mapping[str, Any]) -> OhlcState:
    ts_ms, price = int(raw["ts"]), float(raw["price"])
    if raw.get("kind") == "trade":
      if state.trade is None:
        state.trade = PriceStats.of(ts_ms, price)
      else:
        state.trade.add(ts_ms, price)
    elif state.ticker is None:
      state.ticker = PriceStats.of(ts_ms, price)
    else:
      state.ticker.add(ts_ms, price)
    return state

  def merge(self, into: OhlcState, other: OhlcState) -> OhlcState:
    into.trade = _merged(into.trade, other.trade)
    into.ticker = _merged(into.ticker, other.ticker)
    return into

  def result(self, state: OhlcState | None, spec: StreamSpec) -> dict[str, Any]:
    stats = None if state is None else state.trade or state.ticker
    if stats is None or not stats.n:
      return dict.fromkeys(f.name for f in self.fields)
    return {
      "price_avg": stats.total / stats.n,
      "price_open": stats.open,
      "price_high": stats.high,
      "price_low": stats.low,
      "price_close": stats.close,
    }

  def encode(self, state: OhlcState) -> Any:
    return [
      None if state.trade is None else state.trade.to_list(),
      None if state.ticker is None else state.ticker.to_list(),
    ]

  def decode(self, data: Any) -> OhlcState:
    return OhlcState(PriceStats.from_list(data[0]), PriceStats.from_list(data[1]))


register(Ohlc())
