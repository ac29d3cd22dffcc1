"""Turn ccxt's unified structures into RawTicks, and drop trades already seen."""

import logging
import math
from collections import deque
from typing import Any, Literal

from bond.connectors.base import now_ms
from bond.schemas import RawTick

log = logging.getLogger(__name__)


def finite_number(value: Any) -> float | None:
  """Return `value` as a finite float, or None for anything else (bools, NaN, text)."""
  if value is None or isinstance(value, bool):
    return None
  try:
    number = float(value)
  except (TypeError, ValueError):
    return None
  return number if math.isfinite(number) else None


def _ts(value: Any) -> int | None:
  number = finite_number(value)
  return int(number) if number is not None and number > 0 else None


def parse_trade(trade: dict[str, Any], exchange: str, symbol: str, sim: bool) -> RawTick | None:
  """Return a trade RawTick from a ccxt unified trade, or None when it is unusable.

  Sample (ccxt unified trade, here from Binance `@trade` / `aggTrades`):
  {"id": "1843", "timestamp": 1761053405012, "symbol": "BTC/USDT", "side": "buy",
   "price": 68123.5, "amount": 0.0123, "cost": 837.9, "info": {"e": "trade", "t": 1843, ...}}
  """
  price, amount, ts = (
    finite_number(trade.get("price")),
    finite_number(trade.get("amount")),
    _ts(trade.get("timestamp")),
  )
  if price is None or price <= 0 or amount is None or amount < 0 or ts is None:
    return None
  trade_id = trade.get("id")
  return RawTick(
    ts=ts,
    ts_ingest=now_ms(),
    sim=sim,
    exchange=exchange,
    symbol=symbol,
    kind="trade",
    price=price,
    amount=amount,
    side=_side(trade.get("side")),
    trade_id=None if trade_id is None else str(trade_id),
  )


def parse_ticker(ticker: dict[str, Any], exchange: str, symbol: str, sim: bool) -> RawTick | None:
  """Return a ticker RawTick (last price) from a ccxt unified ticker, or None.

  Sample (ccxt unified ticker, from Binance `ticker/24hr` or `@ticker`):
  {"symbol": "BTC/USDT", "timestamp": 1761053405000, "last": 68123.5, "bid": 68123.4,
   "ask": 68123.6, "baseVolume": 1523.2, "info": {"e": "24hrTicker", "c": "68123.5", ...}}
  """
  price = finite_number(ticker.get("last")) or finite_number(ticker.get("close"))
  if price is None or price <= 0:
    return None
  ts = _ts(ticker.get("timestamp")) or now_ms()
  return RawTick(
    ts=ts, ts_ingest=now_ms(), sim=sim, exchange=exchange, symbol=symbol, kind="ticker", price=price
  )


def parse_liquidation(liq: dict[str, Any], exchange: str, symbol: str, sim: bool) -> RawTick | None:
  """Return a liquidation RawTick from a ccxt unified liquidation, or None.

  Sample (ccxt unified liquidation, from Binance USD-M `@forceOrder`):
  {"symbol": "BTC/USDT:USDT", "timestamp": 1761053405012, "price": 68050.1,
   "contracts": 0.5, "contractSize": 1, "baseValue": 0.5, "side": "sell",
   "info": {"s": "BTCUSDT", "S": "SELL", "q": "0.5", "p": "68050.1", "T": 1761053405012}}
  """
  price, ts = finite_number(liq.get("price")), _ts(liq.get("timestamp"))
  amount = finite_number(liq.get("baseValue"))
  if amount is None:
    contracts, size = (
      finite_number(liq.get("contracts")),
      finite_number(liq.get("contractSize")) or 1.0,
    )
    amount = None if contracts is None else contracts * size
  if price is None or price <= 0 or ts is None:
    return None
  info = liq.get("info")
  side = _side(liq.get("side")) or (_side(info.get("S")) if isinstance(info, dict) else None)
  return RawTick(
    ts=ts,
    ts_ingest=now_ms(),
    sim=sim,
    exchange=exchange,
    symbol=symbol,
    kind="liquidation",
    price=price,
    amount=amount,
    side=side,
  )


def _side(value: Any) -> Literal["buy", "sell"] | None:
  text = str(value).lower() if value is not None else ""
  if text == "buy":
    return "buy"
  if text == "sell":
    return "sell"
  return None


def int_id(trade_id: str | None) -> int | None:
  """Return a trade id as an int when it is one (Binance, sim), else None."""
  if trade_id is None:
    return None
  try:
    return int(trade_id)
  except ValueError:
    return None


class TradeDedupe:
  """Remember recent trade ids of one feed; for numeric ids also the highest one seen."""

  def __init__(self, monotonic: bool = False, maxlen: int = 20_000) -> None:
    # monotonic: ids are increasing integers (Binance, the sim), so anything at or below
    # the highest id seen is a duplicate even after it left the bounded set.
    self.monotonic = monotonic
    self._order: deque[str] = deque()
    self._seen: set[str] = set()
    self.maxlen = maxlen
    self.last_id: int | None = None
    self.last_ts: int | None = None

  def is_new(self, tick: RawTick) -> bool:
    """Return whether `tick` was not seen yet, and remember it."""
    key = tick.trade_id
    if key is None:
      return True
    if key in self._seen:
      return False
    number = int_id(key)
    if (
      self.monotonic and number is not None and self.last_id is not None and number <= self.last_id
    ):
      return False
    self._seen.add(key)
    self._order.append(key)
    if len(self._order) > self.maxlen:
      self._seen.discard(self._order.popleft())
    if number is not None:
      self.last_id = number if self.last_id is None else max(self.last_id, number)
    self.last_ts = tick.ts if self.last_ts is None else max(self.last_ts, tick.ts)
    return True
