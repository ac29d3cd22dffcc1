"""The simulated markets: seeded random-walk prices, bounded trade history, 24h statistics.

No I/O here: `SimExchange` drives the clock and serves what these objects hold over the
Binance-shaped REST (`binance_rest.py`) and WebSocket (`binance_ws.py`) APIs.
"""

import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# Starting prices of the simulated USDT pairs (roughly their 2024-2025 levels).
START_PRICES: dict[str, float] = {
  "BTC": 68000.0,
  "ETH": 3500.0,
  "SOL": 150.0,
  "DOGE": 0.15,
  "XRP": 0.55,
  "LINK": 15.0,
  "ADA": 0.45,
  "AVAX": 30.0,
  "DOT": 6.5,
  "LTC": 80.0,
  "TRX": 0.12,
  "MATIC": 0.7,
  "SHIB": 0.000022,
  "PEPE": 0.0000105,
  "BNB": 580.0,
  "TON": 6.5,
  "NEAR": 5.5,
  "SUI": 1.8,
  "APT": 8.5,
  "ARB": 0.8,
  "OP": 1.8,
  "UNI": 9.5,
  "ATOM": 7.5,
}
QUOTE = "USDT"
HISTORY = 5000


def now_ms() -> int:
  """Return the wall clock in milliseconds."""
  return time.time_ns() // 1_000_000


@dataclass
class Trade:
  """One simulated trade, as the exchange keeps it for REST backfill."""

  id: int
  price: float
  qty: float
  ts: int
  buyer_maker: bool


@dataclass
class Market:
  """One USDT pair: its price walk, trade history and 24h statistics."""

  base: str
  price: float
  tick: float
  step: float
  # Ids continue across restarts of the sim, as a real exchange's do: they start from the
  # clock (in microseconds), which outruns any trade rate the sim produces.
  next_id: int = field(default_factory=lambda: time.time_ns() // 1000)
  history: deque[Trade] = field(default_factory=lambda: deque(maxlen=HISTORY))
  open_price: float = 0.0
  high: float = 0.0
  low: float = math.inf
  volume: float = 0.0
  quote_volume: float = 0.0
  count: int = 0
  open_ms: int = 0
  carry: float = 0.0

  @property
  def id(self) -> str:
    """Return the exchange's symbol id (`BTCUSDT`)."""
    return f"{self.base}{QUOTE}"

  @property
  def price_decimals(self) -> int:
    """Return how many decimals prices are quoted with."""
    return max(0, round(-math.log10(self.tick)))

  @property
  def qty_decimals(self) -> int:
    """Return how many decimals quantities are quoted with."""
    return max(0, round(-math.log10(self.step)))

  def fmt_price(self, value: float) -> str:
    """Format a price as the exchange's REST and WebSocket APIs spell it."""
    return f"{value:.{self.price_decimals}f}"

  def fmt_qty(self, value: float) -> str:
    """Format a quantity as the exchange's REST and WebSocket APIs spell it."""
    return f"{value:.{self.qty_decimals}f}"

  def trade(self, rng: random.Random, volatility: float, ts: int) -> Trade:
    """Move the price one random-walk step and record the trade made at it."""
    self.price *= math.exp(volatility * rng.gauss(0.0, 1.0))
    notional = math.exp(rng.gauss(6.5, 1.2))
    qty = max(self.step, round(notional / self.price / self.step) * self.step)
    trade = Trade(self.next_id, self.price, qty, ts, rng.random() < 0.5)
    self.next_id += 1
    self.history.append(trade)
    self.high = max(self.high, self.price)
    self.low = min(self.low, self.price)
    self.volume += qty
    self.quote_volume += qty * self.price
    self.count += 1
    return trade


def new_market(base: str, price: float) -> Market:
  """Return a market of `base`/USDT starting at `price`, with tick and lot sizes to match."""
  tick = max(1e-8, 10.0 ** (math.floor(math.log10(price)) - 6))
  step = min(1.0, 10.0 ** math.floor(math.log10(1.0 / price)))
  return Market(
    base=base, price=price, tick=tick, step=step, open_price=price, high=price, low=price
  )


def ticker_24hr(m: Market, ts: int) -> dict[str, Any]:
  """Return the `GET /api/v3/ticker/24hr` body of one market."""
  last = m.history[-1] if m.history else None
  change = m.price - m.open_price
  wavg = m.quote_volume / m.volume if m.volume else m.price
  spread = m.tick
  return {
    "symbol": m.id,
    "priceChange": m.fmt_price(change),
    "priceChangePercent": f"{100 * change / m.open_price:.3f}",
    "weightedAvgPrice": m.fmt_price(wavg),
    "prevClosePrice": m.fmt_price(m.open_price),
    "lastPrice": m.fmt_price(m.price),
    "lastQty": m.fmt_qty(last.qty if last else 0.0),
    "bidPrice": m.fmt_price(m.price - spread),
    "bidQty": m.fmt_qty(m.step * 100),
    "askPrice": m.fmt_price(m.price + spread),
    "askQty": m.fmt_qty(m.step * 100),
    "openPrice": m.fmt_price(m.open_price),
    "highPrice": m.fmt_price(m.high if m.count else m.price),
    "lowPrice": m.fmt_price(m.low if m.count else m.price),
    "volume": m.fmt_qty(m.volume),
    "quoteVolume": f"{m.quote_volume:.8f}",
    "openTime": m.open_ms,
    "closeTime": ts,
    "firstId": m.history[0].id if m.history else -1,
    "lastId": last.id if last else -1,
    "count": m.count,
  }
