"""Poll exchanges over REST (ccxt.async_support): tickers and trades since the last id."""

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

import ccxt

from bond.config import Settings, get_settings
from bond.connectors import markets
from bond.connectors.backoff import Backoff
from bond.connectors.base import Connector, now_ms
from bond.connectors.ccxt_common import TradeDedupe, int_id, parse_ticker, parse_trade
from bond.schemas import normalize_pair

log = logging.getLogger(__name__)

PAGE = 1000


class CcxtPoller(Connector):
  """Every `poll_sec`, per (exchange, symbol): fetch_ticker, then fetch_trades since the last trade.

  `async with CcxtPoller(["binance"], ["BTC/USDT"], poll_sec=1, market="sim",
  sim_url=sim.base_url) as feed: async for tick in feed: ...` yields RawTick (and
  Heartbeat). `stats`: polls, errors, trades, tickers, duplicates_dropped, invalid.
  """

  source = "ccxt"

  def __init__(
    self,
    exchanges: list[str],
    symbols: list[str],
    poll_sec: float | None = None,
    market: str | None = None,
    sim_url: str | None = None,
    settings: Settings | None = None,
    backoff: Backoff | None = None,
    tickers: bool = True,
    trades: bool = True,
    heartbeat_sec: float = 1.0,
  ) -> None:
    super().__init__(heartbeat_sec=heartbeat_sec)
    self.settings = settings or get_settings()
    self.exchanges = [e.strip().lower() for e in exchanges]
    self.symbols = [normalize_pair(s) for s in symbols]
    self.poll_sec = poll_sec if poll_sec is not None else self.settings.bond_poll_sec
    self.market = market
    self.sim = markets.is_sim(self.settings, market)
    self.sim_url = sim_url
    self.backoff = backoff or Backoff(base_sec=1.0, max_sec=60.0)
    self.want_tickers = tickers
    self.want_trades = trades
    self.stats.update(polls=0, trades=0, tickers=0, duplicates_dropped=0, invalid=0)
    self._clients: dict[str, Any] = {}
    self._dedupe: dict[tuple[str, str], TradeDedupe] = {}
    self._started_ms = 0

  def feeds(self) -> Iterable[tuple[str, str]]:
    return [(e, s) for e in self.exchanges for s in self.symbols]

  async def _open(self) -> None:
    self._started_ms = now_ms()
    for ex in self.exchanges:
      self._clients[ex] = markets.create_rest(
        ex, market=self.market, sim_url=self.sim_url, settings=self.settings
      )

  async def _close(self) -> None:
    clients, self._clients = self._clients, {}
    for client in clients.values():
      await client.close()

  def workers(self) -> Iterable[Coroutine[Any, Any, None]]:
    return [self._poll_loop(ex, sym) for ex, sym in self.feeds()]

  async def _poll_loop(self, exchange: str, symbol: str) -> None:
    client = self._clients[exchange]
    feed = (exchange, symbol)
    # Binance-shaped ids (and the sim's) only grow, so `fromId` pages without gaps.
    dedupe = self._dedupe.setdefault(feed, TradeDedupe(monotonic=client.id == "binance"))
    failures = 0
    loop = asyncio.get_running_loop()
    while True:
      began = loop.time()
      try:
        await self.poll_once(exchange, symbol, client, dedupe)
        failures = 0
      except markets.RETRIABLE as exc:
        failures += 1
        self.stats["errors"] += 1
        delay = self.backoff.delay(failures)
        log.warning("%s %s poll failed (%r); retry in %.1fs", exchange, symbol, exc, delay)
        await asyncio.sleep(delay)
        continue
      except ccxt.ExchangeError as exc:
        # Not retriable as such (bad symbol, bad request): keep the feed alive, slowly.
        failures += 1
        self.stats["errors"] += 1
        log.error("%s %s poll rejected: %r", exchange, symbol, exc)
        await asyncio.sleep(max(self.poll_sec, self.backoff.delay(failures)))
        continue
      await asyncio.sleep(max(0.0, self.poll_sec - (loop.time() - began)))

  async def poll_once(self, exchange: str, symbol: str, client: Any, dedupe: TradeDedupe) -> None:
    """Fetch the ticker and the new trades of one feed and queue them."""
    feed = (exchange, symbol)
    self.stats["polls"] += 1
    if self.want_tickers:
      ticker = await client.fetch_ticker(symbol)
      tick = parse_ticker(ticker, exchange, symbol, self.sim)
      if tick is None:
        self.stats["invalid"] += 1
      else:
        self.stats["tickers"] += 1
        await self.emit(tick, feed)
    if self.want_trades:
      trades = await self._fetch_new_trades(client, symbol, dedupe)
      ticks = [
        t for t in (parse_trade(x, exchange, symbol, self.sim) for x in trades) if t is not None
      ]
      self.stats["invalid"] += len(trades) - len(ticks)
      # ccxt sorts by timestamp only; trades of the same millisecond go back in id order.
      ticks.sort(key=lambda t: (t.ts, int_id(t.trade_id) or 0))
      for tick in ticks:
        if dedupe.is_new(tick):
          self.stats["trades"] += 1
          await self.emit(tick, feed)
        else:
          self.stats["duplicates_dropped"] += 1

  async def _fetch_new_trades(
    self, client: Any, symbol: str, dedupe: TradeDedupe
  ) -> list[dict[str, Any]]:
    if dedupe.monotonic and dedupe.last_id is not None:
      found: list[dict[str, Any]] = []
      from_id = dedupe.last_id + 1
      while True:
        page = await client.fetch_trades(symbol, limit=PAGE, params={"fromId": from_id})
        found += page
        if len(page) < PAGE:
          return found
        from_id = int(page[-1]["id"]) + 1
    since = dedupe.last_ts if dedupe.last_ts is not None else self._started_ms
    return await client.fetch_trades(symbol, since=since, limit=PAGE)
