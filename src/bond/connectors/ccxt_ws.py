"""Stream trades, tickers and liquidations over ccxt.pro, with REST backfill after reconnects.

ccxt.pro does not reconnect subscriptions by itself: a dropped socket surfaces as a
NetworkError from the pending `watch_*` call, and the next call opens a new socket.
Trades that happened in between are fetched over REST and merged by trade id, so
the feed has neither silent gaps nor duplicates.
"""

import asyncio
import logging
from bisect import insort
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import ccxt

from bond.config import Settings, get_settings
from bond.connectors import markets
from bond.connectors.backoff import Backoff, retry
from bond.connectors.base import Connector
from bond.connectors.ccxt_common import (
  TradeDedupe,
  int_id,
  parse_liquidation,
  parse_ticker,
  parse_trade,
)
from bond.schemas import RawTick, normalize_pair

log = logging.getLogger(__name__)

PAGE = 1000
MAX_BACKFILL_PAGES = 50
MAX_PARKED = 10_000  # tickers and liquidations of one feed waiting for its trades


class CcxtWsFeed(Connector):
  """ccxt.pro `watch_trades` / `watch_ticker` / `watch_liquidations` per (exchange, symbol).

  `async with CcxtWsFeed(["binance"], ["BTC/USDT"], market="sim", sim_url=sim.base_url)
  as feed: async for tick in feed: ...` yields RawTick (and Heartbeat). `stats`: trades,
  tickers, liquidations, disconnects, errors, backfills, backfilled,
  duplicates_dropped, invalid.
  """

  source = "ccxt"

  def __init__(
    self,
    exchanges: list[str],
    symbols: list[str],
    market: str | None = None,
    sim_url: str | None = None,
    settings: Settings | None = None,
    trades: bool = True,
    tickers: bool = True,
    liquidations: bool = False,
    backoff: Backoff | None = None,
    heartbeat_sec: float = 1.0,
  ) -> None:
    super().__init__(heartbeat_sec=heartbeat_sec)
    self.settings = settings or get_settings()
    self.exchanges = [e.strip().lower() for e in exchanges]
    self.symbols = [normalize_pair(s) for s in symbols]
    self.market = market
    self.sim = markets.is_sim(self.settings, market)
    self.sim_url = sim_url
    self.want_trades = trades
    self.want_tickers = tickers
    self.want_liquidations = liquidations
    self.backoff = backoff or Backoff(base_sec=0.5, max_sec=30.0)
    self.stats.update(
      trades=0,
      tickers=0,
      liquidations=0,
      disconnects=0,
      backfills=0,
      backfilled=0,
      duplicates_dropped=0,
      invalid=0,
    )
    self._ws: dict[str, Any] = {}
    self._rest: dict[str, Any] = {}
    self._dedupe: dict[tuple[str, str], TradeDedupe] = {}
    # Tickers and liquidations wait for the feed's trades (or a heartbeat) to reach their
    # time: they come over other connections, and a later time sent first would close panes
    # that trades still on their way belong to (a trade connection closed for being slow,
    # its loss not noticed yet; a gap being backfilled). Sent in time order with the trades.
    self._parked: dict[tuple[str, str], list[RawTick]] = {}
    self._resumed: set[tuple[str, str]] = set()

  def feeds(self) -> Iterable[tuple[str, str]]:
    return [(e, s) for e in self.exchanges for s in self.symbols]

  async def _open(self) -> None:
    for ex in self.exchanges:
      self._ws[ex] = markets.create_ws(ex, self.market, self.sim_url, self.settings)
      self._rest[ex] = markets.create_rest(ex, self.market, self.sim_url, self.settings)

  async def _close(self) -> None:
    for client in [*self._ws.values(), *self._rest.values()]:
      await client.close()
    self._ws, self._rest = {}, {}

  def workers(self) -> Iterable[Coroutine[Any, Any, None]]:
    jobs: list[Coroutine[Any, Any, None]] = []
    for ex, sym in self.feeds():
      if self.want_trades:
        jobs.append(self._trades_loop(ex, sym))
      if self.want_tickers:
        jobs.append(self._ticker_loop(ex, sym))
      if self.want_liquidations:
        jobs.append(self._liquidations_loop(ex, sym))
    return jobs

  # ------------------------------------------------------------------ shared loop

  async def _watch(
    self,
    label: str,
    call: Callable[[], Awaitable[Any]],
    on_reconnect: Callable[[], None] | None = None,
  ) -> Any:
    """Await one `watch_*` call, retrying with backoff until it yields data."""
    failures = 0
    while True:
      try:
        return await call()
      except markets.RETRIABLE as exc:
        failures += 1
        self.stats["disconnects"] += 1
        if on_reconnect is not None:
          on_reconnect()
        delay = self.backoff.delay(failures)
        log.warning("%s: connection lost (%r); reconnect in %.2fs", label, exc, delay)
        await asyncio.sleep(delay)
      except ccxt.ExchangeError as exc:
        failures += 1
        self.stats["errors"] += 1
        delay = self.backoff.delay(failures)
        log.error("%s: exchange error %r; retry in %.2fs", label, exc, delay)
        await asyncio.sleep(delay)

  # ------------------------------------------------------------------ trades

  async def _trades_loop(self, exchange: str, symbol: str) -> None:
    client = self._ws[exchange]
    feed = (exchange, symbol)
    dedupe = self._dedupe.setdefault(feed, TradeDedupe(monotonic=self._contiguous(exchange)))
    # Resumed from a trade published by an earlier run: backfill from it, as after a reconnect.
    reconnected = feed in self._resumed

    def lost() -> None:
      nonlocal reconnected
      reconnected = True
      # Trades missed while disconnected come back by backfill, older than any heartbeat
      # sent meanwhile would claim: no heartbeat until they are out.
      self.hold_heartbeats(feed)

    while True:
      batch = await self._watch(
        f"{exchange} {symbol} trades", lambda: client.watch_trades(symbol), lost
      )
      ticks = [
        t for t in (parse_trade(x, exchange, symbol, self.sim) for x in batch) if t is not None
      ]
      self.stats["invalid"] += len(batch) - len(ticks)
      ticks.sort(key=lambda t: (t.ts, int_id(t.trade_id) or 0))
      fresh = [t for t in ticks if self._unseen(dedupe, t)]
      if fresh and dedupe.last_ts is not None and (reconnected or self._gap(dedupe, fresh[0])):
        await self._backfill(exchange, symbol, dedupe, fresh[0])
      if fresh:
        reconnected = False
      for tick in fresh:
        if dedupe.is_new(tick):
          self.stats["trades"] += 1
          await self._emit_after_parked(tick, feed)
        else:
          self.stats["duplicates_dropped"] += 1
      if fresh and not reconnected:
        self.release_heartbeats(feed)  # the gap is backfilled and live trades flow again

  def resume_from(self, exchange: str, symbol: str, trade_id: str, ts: int) -> None:
    """Continue after `trade_id`, the last trade an earlier run published: the gap is backfilled."""
    feed = (exchange, normalize_pair(symbol))
    dedupe = self._dedupe.setdefault(feed, TradeDedupe(monotonic=self._contiguous(exchange)))
    number = int_id(trade_id)
    if number is not None:
      dedupe.last_id = number if dedupe.last_id is None else max(dedupe.last_id, number)
    dedupe.last_ts = ts if dedupe.last_ts is None else max(dedupe.last_ts, ts)
    self._resumed.add(feed)
    self.hold_heartbeats(feed)

  def _contiguous(self, exchange: str) -> bool:
    # The sim numbers each symbol's trades 1, 2, 3 ... and serves them by id over REST.
    return self.sim

  def _unseen(self, dedupe: TradeDedupe, tick: RawTick) -> bool:
    number = int_id(tick.trade_id)
    if (
      dedupe.monotonic
      and number is not None
      and dedupe.last_id is not None
      and number <= dedupe.last_id
    ):
      self.stats["duplicates_dropped"] += 1
      return False
    return True

  @staticmethod
  def _gap(dedupe: TradeDedupe, first: RawTick) -> bool:
    number = int_id(first.trade_id)
    return (
      dedupe.monotonic
      and number is not None
      and dedupe.last_id is not None
      and number > dedupe.last_id + 1
    )

  async def _backfill(
    self, exchange: str, symbol: str, dedupe: TradeDedupe, first: RawTick
  ) -> None:
    """Fetch over REST the trades between the last one emitted and `first`, and emit them."""
    rest = self._rest[exchange]
    feed = (exchange, symbol)
    stop_id = int_id(first.trade_id)
    self.stats["backfills"] += 1
    policy = Backoff(base_sec=0.25, max_sec=5.0)

    async def fetch(**kwargs: Any) -> list[dict[str, Any]]:
      return await retry(
        lambda: rest.fetch_trades(symbol, **kwargs), policy, markets.RETRIABLE, max_attempts=5
      )

    trades: list[dict[str, Any]] = []
    try:
      if dedupe.monotonic and dedupe.last_id is not None and stop_id is not None:
        from_id = dedupe.last_id + 1
        for _ in range(MAX_BACKFILL_PAGES):
          page = await fetch(limit=PAGE, params={"fromId": from_id})
          trades += page
          if len(page) < PAGE or int(page[-1]["id"]) >= stop_id - 1:
            break
          from_id = int(page[-1]["id"]) + 1
      elif rest.id == "binance":
        # Live Binance: /api/v3/trades carries the same ids as @trade (aggTrades do not).
        trades = await fetch(limit=PAGE, params={"fetchTradesMethod": "publicGetTrades"})
      else:
        trades = await fetch(since=dedupe.last_ts, limit=PAGE)
    except ccxt.BaseError as exc:
      self.stats["errors"] += 1
      log.error("%s %s backfill failed, trades may be missing: %r", exchange, symbol, exc)
      return
    ticks = [
      t for t in (parse_trade(x, exchange, symbol, self.sim) for x in trades) if t is not None
    ]
    ticks.sort(key=lambda t: (t.ts, int_id(t.trade_id) or 0))
    for tick in ticks:
      number = int_id(tick.trade_id)
      if stop_id is not None and number is not None and number >= stop_id:
        continue
      if tick.ts > first.ts:
        continue
      if dedupe.is_new(tick):
        self.stats["backfilled"] += 1
        self.stats["trades"] += 1
        await self._emit_after_parked(tick, feed)
    log.info("%s %s backfilled up to trade %s", exchange, symbol, first.trade_id)

  # ------------------------------------------------------------------ tickers, liquidations

  async def _ticker_loop(self, exchange: str, symbol: str) -> None:
    client = self._ws[exchange]
    feed = (exchange, symbol)
    while True:
      ticker = await self._watch(f"{exchange} {symbol} ticker", lambda: client.watch_ticker(symbol))
      tick = parse_ticker(ticker, exchange, symbol, self.sim)
      if tick is None:
        self.stats["invalid"] += 1
        continue
      self.stats["tickers"] += 1
      if self.held(feed):
        continue  # a ticker's time would claim progress past the trades still being backfilled
      self._park(feed, tick)

  async def _liquidations_loop(self, exchange: str, symbol: str) -> None:
    client = self._ws[exchange]
    if not client.has.get("watchLiquidations"):
      log.warning("%s has no public liquidation stream; skipping %s", exchange, symbol)
      return
    await self._watch(f"{exchange} markets", client.load_markets)
    contract = markets.perp_symbol(symbol)
    if contract not in client.markets:
      log.warning("%s lists no perpetual %s; no liquidations for %s", exchange, contract, symbol)
      return
    feed = (exchange, symbol)
    while True:
      batch = await self._watch(
        f"{exchange} {symbol} liquidations", lambda: client.watch_liquidations(contract)
      )
      for liq in batch:
        tick = parse_liquidation(liq, exchange, symbol, self.sim)
        if tick is None:
          self.stats["invalid"] += 1
          continue
        self.stats["liquidations"] += 1
        self._park(feed, tick)

  def _park(self, feed: tuple[str, str], tick: RawTick) -> None:
    """Keep a ticker or liquidation until the feed's trades or a heartbeat reach its time."""
    parked = self._parked.setdefault(feed, [])
    if len(parked) < MAX_PARKED:
      insort(parked, tick, key=lambda t: t.ts)
    else:
      self.stats["parked_dropped"] = self.stats.get("parked_dropped", 0) + 1

  async def _emit_until(self, feed: tuple[str, str], ts: int) -> None:
    """Emit the feed's parked events that are not later than `ts`."""
    parked = self._parked.get(feed)
    while parked and parked[0].ts <= ts:
      await self.emit(parked.pop(0), feed)

  async def before_heartbeat(self, feed: tuple[str, str], ts: int) -> None:
    await self._emit_until(feed, ts)

  async def _emit_after_parked(self, tick: RawTick, feed: tuple[str, str]) -> None:
    """Emit a trade, after the parked events of its feed that are not later than it."""
    await self._emit_until(feed, tick.ts)
    await self.emit(tick, feed)
