"""A local exchange speaking the subset of Binance's REST and WebSocket API that ccxt uses.

Seeded random-walk prices for USDT pairs (`market.py`), trades at a configurable rate
(batched per tick), 24h tickers, liquidations on the matching USDT-M perpetuals, bounded
history for REST backfill (`binance_rest.py`), market streams (`binance_ws.py`).
`drop_connections()` and `pause()` let tests break the stream on purpose.

    async with SimExchange(port=0, trades_per_sec=50, seed=7) as sim:
      print(sim.rest_url, sim.ws_url)
"""

import asyncio
import contextlib
import logging
import random
import time
from typing import Self

from starlette.applications import Starlette

from bond.sim._server import LocalServer
from bond.sim.binance_rest import BinanceRest
from bond.sim.binance_ws import (
  Conn,
  StreamHub,
  agg_trade_msg,
  force_order_msg,
  mini_ticker_msg,
  ticker_msg,
  trade_msg,
)
from bond.sim.market import QUOTE, START_PRICES, Market, new_market, now_ms

__all__ = ["START_PRICES", "SimExchange"]

log = logging.getLogger(__name__)


class SimExchange:
  """A Binance-shaped exchange on 127.0.0.1 for ccxt in sim mode, tests and benchmarks."""

  def __init__(
    self,
    port: int = 0,
    trades_per_sec: float = 20.0,
    seed: int = 42,
    symbols: list[str] | None = None,
    host: str = "127.0.0.1",
    tick_sec: float = 0.05,
    ticker_interval_sec: float = 1.0,
    liquidation_ratio: float = 0.01,
    volatility: float = 0.0002,
    max_client_queue: int = 200_000,
  ) -> None:
    self.trades_per_sec = trades_per_sec
    self.tick_sec = tick_sec
    self.ticker_interval_sec = ticker_interval_sec
    self.liquidation_ratio = liquidation_ratio
    self.volatility = volatility
    self.max_client_queue = max_client_queue
    self.rng = random.Random(seed)
    bases = [s.upper().split("/")[0] for s in symbols] if symbols else list(START_PRICES)
    self.markets: dict[str, Market] = {}
    for base in bases:
      base = base.removesuffix(QUOTE) if base.endswith(QUOTE) and base != QUOTE else base
      self.markets[f"{base}{QUOTE}"] = new_market(base, START_PRICES.get(base, 10.0))
    self.stats: dict[str, int] = {"trades": 0, "liquidations": 0, "connections": 0, "dropped": 0}
    self._hub = StreamHub(self.stats, max_client_queue)
    self._paused = False
    # Trade messages held back from their sockets (`hold_trades`): a slow trade connection
    # while the ticker and liquidation streams keep flowing.
    self._held_trades: list[tuple[set[Conn], str, str]] | None = None
    self._gen_task: asyncio.Task[None] | None = None
    app = Starlette(routes=[*BinanceRest(self.markets).routes(), *self._hub.routes()])
    self._server = LocalServer(app, host=host, port=port)

  @property
  def port(self) -> int:
    """Return the bound port (after start)."""
    return self._server.port

  @property
  def host(self) -> str:
    """Return the host the server listens on."""
    return self._server.host

  @property
  def rest_url(self) -> str:
    """Return the base URL of the spot REST API (`.../api/v3`)."""
    return f"http://{self.host}:{self.port}/api/v3"

  @property
  def ws_url(self) -> str:
    """Return the spot raw-stream WebSocket URL ccxt appends `/<n>` to."""
    return f"ws://{self.host}:{self.port}/stream/ws"

  @property
  def base_url(self) -> str:
    """Return `http://host:port`."""
    return f"http://{self.host}:{self.port}"

  async def start(self) -> None:
    """Start serving and generating trades."""
    if self._gen_task is not None:
      return
    now = now_ms()
    for m in self.markets.values():
      m.open_ms = now
    await self._server.start()
    self._gen_task = asyncio.create_task(self._generate())
    log.info("sim exchange on %s (%d symbols)", self.base_url, len(self.markets))

  async def stop(self) -> None:
    """Stop generating, close every socket and the server; idempotent."""
    task, self._gen_task = self._gen_task, None
    if task is not None:
      task.cancel()
      with contextlib.suppress(asyncio.CancelledError):
        await task
    await self.drop_connections()
    await self._server.stop()

  async def __aenter__(self) -> Self:
    await self.start()
    return self

  async def __aexit__(self, *exc: object) -> None:
    await self.stop()

  def pause(self) -> None:
    """Stop producing trades (REST keeps answering)."""
    self._paused = True

  def resume(self) -> None:
    """Produce trades again."""
    self._paused = False

  def hold_trades(self) -> None:
    """Keep every trade message from its sockets until `release_trades` (other streams flow)."""
    if self._held_trades is None:
      self._held_trades = []

  def release_trades(self) -> None:
    """Send the held trade messages, in order."""
    held, self._held_trades = self._held_trades or [], None
    for conns, stream, payload in held:
      self._hub.fanout(conns, stream, payload)

  async def drop_connections(self) -> int:
    """Close every WebSocket connection (clients must reconnect); return how many."""
    return await self._hub.drop_all()

  def symbols(self) -> list[str]:
    """Return the unified symbols served (`BTC/USDT`, ...)."""
    return [f"{m.base}/{QUOTE}" for m in self.markets.values()]

  async def _generate(self) -> None:
    last_ticker = time.monotonic()
    last = time.monotonic()
    while True:
      await asyncio.sleep(self.tick_sec)
      now = time.monotonic()
      dt, last = now - last, now
      if self._paused:
        continue
      ts = now_ms()
      for m in self.markets.values():
        m.carry += self.trades_per_sec * dt
        n = int(m.carry)
        if n:
          m.carry -= n
          self._trades(m, n, ts)
      if now - last_ticker >= self.ticker_interval_sec:
        last_ticker = now
        for m in self.markets.values():
          self._tickers(m, ts)

  def _trades(self, m: Market, n: int, ts: int) -> None:
    lower = m.id.lower()
    hub = self._hub
    trade_subs = hub.subscribers(f"{lower}@trade")
    agg_subs = hub.subscribers(f"{lower}@aggTrade")
    liq_subs = hub.subscribers(f"{lower}@forceOrder")
    for _ in range(n):
      trade = m.trade(self.rng, self.volatility, ts)
      self.stats["trades"] += 1
      if trade_subs and self._held_trades is not None:
        self._held_trades.append((set(trade_subs), f"{lower}@trade", trade_msg(m, trade)))
      elif trade_subs:
        hub.fanout(trade_subs, f"{lower}@trade", trade_msg(m, trade))
      if agg_subs:
        hub.fanout(agg_subs, f"{lower}@aggTrade", agg_trade_msg(m, trade))
      if self.rng.random() < self.liquidation_ratio:
        self.stats["liquidations"] += 1
        if liq_subs:
          hub.fanout(liq_subs, f"{lower}@forceOrder", force_order_msg(m, self.rng, ts))

  def _tickers(self, m: Market, ts: int) -> None:
    lower = m.id.lower()
    mini = self._hub.subscribers(f"{lower}@miniTicker")
    full = self._hub.subscribers(f"{lower}@ticker")
    if mini:
      self._hub.fanout(mini, f"{lower}@miniTicker", mini_ticker_msg(m, ts))
    if full:
      self._hub.fanout(full, f"{lower}@ticker", ticker_msg(m, ts))
