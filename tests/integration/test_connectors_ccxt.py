"""Real ccxt clients (async REST and pro WebSocket) against the sim exchange on loopback."""

import asyncio
import time
from typing import Any

import ccxt
import pytest

from bond.connectors import markets
from bond.connectors.backoff import Backoff
from bond.connectors.ccxt_poll import CcxtPoller
from bond.connectors.ccxt_ws import CcxtWsFeed
from bond.schemas import Heartbeat, RawTick
from tests.integration.peers import collect


def trades_of(events: list[Any], symbol: str, exchange: str | None = None) -> list[int]:
  return [
    int(e.trade_id)
    for e in events
    if isinstance(e, RawTick)
    and e.kind == "trade"
    and e.symbol == symbol
    and (exchange is None or e.exchange == exchange)
  ]


async def test_sim_rest_endpoints_through_ccxt(sim_factory):
  sim = await sim_factory(trades_per_sec=100, seed=3)
  await asyncio.sleep(0.3)
  found = await markets.list_markets("okx", market="sim", sim_url=sim.base_url)
  assert {"BTC/USDT", "ETH/USDT", "PEPE/USDT", "ATOM/USDT"} <= found
  client = markets.create_rest("bybit", market="sim", sim_url=sim.base_url)
  try:
    ticker = await client.fetch_ticker("BTC/USDT")
    assert 30_000 < ticker["last"] < 150_000
    first = sim.markets["SOLUSDT"].history[0].id
    trades = await client.fetch_trades("SOL/USDT", limit=5, params={"fromId": first + 1})
    assert [t["id"] for t in trades] == [str(first + k) for k in range(1, 6)]
    with pytest.raises(ccxt.BadSymbol):
      await client.fetch_ticker("NOPE/USDT")
  finally:
    await client.close()


async def test_poller_yields_tickers_and_new_trades_once(sim_factory):
  sim = await sim_factory(trades_per_sec=40, seed=5, symbols=["BTC", "ETH"])
  feed = CcxtPoller(
    ["binance", "okx"], ["BTC/USDT"], poll_sec=0.3, market="sim", sim_url=sim.base_url
  )
  async with feed:
    events = await collect(feed, lambda ev: len(trades_of(ev, "BTC/USDT", "okx")) >= 60)
  okx = trades_of(events, "BTC/USDT", "okx")
  assert okx == list(range(okx[0], okx[0] + len(okx)))  # contiguous, no duplicates
  ticks = [e for e in events if isinstance(e, RawTick)]
  assert all(e.sim for e in ticks)
  assert {e.exchange for e in ticks} == {"binance", "okx"}
  assert any(e.kind == "ticker" and e.price for e in ticks)
  assert feed.stats["polls"] >= 2 and feed.stats["errors"] == 0


async def test_poller_backs_off_and_counts_errors_while_exchange_down(sim_factory):
  sim = await sim_factory(trades_per_sec=20, seed=6, symbols=["BTC"])
  port = sim.port
  feed = CcxtPoller(
    ["binance"],
    ["BTC/USDT"],
    poll_sec=0.2,
    market="sim",
    sim_url=sim.base_url,
    backoff=Backoff(base_sec=0.1, max_sec=0.3),
  )
  async with feed:
    events = await collect(feed, lambda ev: len(trades_of(ev, "BTC/USDT")) >= 5)
    await sim.stop()
    await asyncio.sleep(1.0)
    assert feed.stats["errors"] >= 2
    await sim.start()  # same port, trade ids continue like a real exchange's
    assert sim.port == port
    events += await collect(feed, lambda ev: len(trades_of(ev, "BTC/USDT")) >= 40)
  ids = trades_of(events, "BTC/USDT")
  # Trades made while the server was down never existed; everything served is there once.
  assert ids == sorted(set(ids))
  assert feed.stats["polls"] > feed.stats["errors"]


async def test_ws_feed_streams_trades_tickers_and_liquidations(sim_factory):
  sim = await sim_factory(
    trades_per_sec=200, seed=9, symbols=["BTC", "ETH"], liquidation_ratio=0.05
  )
  feed = CcxtWsFeed(
    ["binance", "bybit"], ["ETH/USDT"], market="sim", sim_url=sim.base_url, liquidations=True
  )

  def done(ev: list[Any]) -> bool:
    kinds = {(e.exchange, e.kind) for e in ev if isinstance(e, RawTick)}
    return {
      (x, k) for x in ("binance", "bybit") for k in ("trade", "ticker", "liquidation")
    } <= kinds

  async with feed:
    events = await collect(feed, done)
  for ex in ("binance", "bybit"):
    ids = trades_of(events, "ETH/USDT", ex)
    assert ids == list(range(ids[0], ids[0] + len(ids)))
  liq = next(e for e in events if isinstance(e, RawTick) and e.kind == "liquidation")
  assert liq.symbol == "ETH/USDT" and liq.price and liq.amount and liq.side in ("buy", "sell")
  assert all(e.sim for e in events if isinstance(e, RawTick))


async def test_ws_reconnect_backfills_without_gap_or_duplicate(sim_factory):
  sim = await sim_factory(trades_per_sec=100, seed=11, symbols=["BTC", "SOL"])
  feed = CcxtWsFeed(
    ["binance"],
    ["BTC/USDT", "SOL/USDT"],
    market="sim",
    sim_url=sim.base_url,
    tickers=False,
    backoff=Backoff(base_sec=0.3, max_sec=1.0, jitter=0),
  )
  async with feed:
    events = await collect(feed, lambda ev: len(trades_of(ev, "BTC/USDT")) >= 50)
    dropped = 0
    for _ in range(2):
      dropped += await sim.drop_connections()
      events += await collect(feed, lambda ev: len(trades_of(ev, "BTC/USDT")) >= 120)
  assert dropped >= 2
  assert feed.stats["disconnects"] >= 2
  assert feed.stats["backfilled"] > 0
  for sym in ("BTC/USDT", "SOL/USDT"):
    ids = trades_of(events, sym)
    assert len(ids) == len(set(ids)), "duplicate trade ids"
    assert ids == list(range(ids[0], ids[0] + len(ids))), "gap in trade ids"


async def test_liquidations_during_a_reconnect_wait_for_the_backfilled_trades(sim_factory):
  # A liquidation that reconnects before the trades are backfilled must not go out first:
  # its later time would close the panes those trades belong to (counted as late, lost).
  sim = await sim_factory(trades_per_sec=100, seed=13, symbols=["ETH"], liquidation_ratio=0.3)
  feed = CcxtWsFeed(["binance"], ["ETH/USDT"], market="sim", sim_url=sim.base_url, tickers=False,
                    liquidations=True, backoff=Backoff(base_sec=1.0, max_sec=1.0, jitter=0))  # fmt: skip
  async with feed:
    events = await collect(feed, lambda ev: len(trades_of(ev, "ETH/USDT")) >= 50)
    for _ in range(2):
      await sim.drop_connections()
      before = feed.stats["backfilled"]
      events += await collect(
        feed,
        lambda ev, before=before: (
          feed.stats["backfilled"] > before and len(trades_of(ev, "ETH/USDT")) >= 150
        ),
      )
  assert feed.stats["backfilled"] > 0 and feed.stats["liquidations"] > 0
  ticks = [e for e in events if isinstance(e, RawTick) and e.kind in ("trade", "liquidation")]
  newest, worst = 0, 0
  for tick in ticks:
    worst = max(worst, newest - tick.ts)
    newest = max(newest, tick.ts)
  # Live, the two subscriptions interleave within a sim tick; a gap of a second is not that.
  assert worst < 300, f"an event went out {worst} ms after a later one of its feed"
  ids = trades_of(events, "ETH/USDT")
  assert ids == list(range(ids[0], ids[0] + len(ids))), "gap in trade ids"


def claims_past_the_trades(events: list[Any]) -> list[tuple[str, int, int | None]]:
  """Return the tickers and liquidations not released by the feed's progress: the next trade
  or heartbeat after each must reach its time (kind, its time, that next time)."""
  bad: list[tuple[str, int, int | None]] = []
  waiting: list[RawTick] = []
  for e in events:
    if isinstance(e, Heartbeat) or (isinstance(e, RawTick) and e.kind == "trade"):
      bad += [(w.kind, w.ts, e.ts) for w in waiting if w.ts > e.ts]
      waiting = []
    elif isinstance(e, RawTick):
      waiting.append(e)
  return bad + [(w.kind, w.ts, None) for w in waiting]


def kinds(events: list[Any], kind: str) -> int:
  return sum(1 for e in events if isinstance(e, RawTick) and e.kind == kind)


async def test_tickers_and_liquidations_wait_for_the_trades_to_reach_their_time(sim_factory):
  # They come over connections of their own. Sent as they arrive, one later than trades still
  # on their way (a slow trade connection; one the exchange closed for being slow, not noticed
  # yet) closes the panes those trades belong to, and they are dropped as late: a full chaos
  # run lost 4 trades of a window that way, behind a ticker.
  sim = await sim_factory(trades_per_sec=100, seed=22, symbols=["ETH"], liquidation_ratio=0.2)
  feed = CcxtWsFeed(
    ["binance"], ["ETH/USDT"], market="sim", sim_url=sim.base_url, liquidations=True
  )
  async with feed:
    events = await collect(feed, lambda ev: kinds(ev, "ticker") >= 1)
    sim.hold_trades()  # the trade connection lags 1.5 s behind the others
    await asyncio.sleep(1.5)
    sim.release_trades()
    events += await collect(
      feed, lambda ev: kinds(ev, "ticker") >= 3 and kinds(ev, "liquidation") >= 20
    )
  last = max(i for i, e in enumerate(events) if isinstance(e, RawTick) and e.kind == "trade")
  assert claims_past_the_trades(events[: last + 1]) == []
  ids = trades_of(events, "ETH/USDT")
  assert ids == list(range(ids[0], ids[0] + len(ids))), "gap in trade ids"
  # No trade at all: each ticker goes out with the heartbeat that reaches its time.
  quiet = await sim_factory(trades_per_sec=0, seed=21, symbols=["ETH"])
  feed = CcxtWsFeed(["binance"], ["ETH/USDT"], market="sim", sim_url=quiet.base_url)
  async with feed:
    events = await collect(feed, lambda ev: kinds(ev, "ticker") >= 2)
  last = max(i for i, e in enumerate(events) if isinstance(e, Heartbeat))
  assert claims_past_the_trades(events[: last + 1]) == []


async def test_ws_feed_sends_heartbeats_when_quiet(sim_factory):
  sim = await sim_factory(trades_per_sec=50, seed=12, symbols=["BTC"])
  feed = CcxtWsFeed(["binance"], ["BTC/USDT"], market="sim", sim_url=sim.base_url, tickers=False)
  async with feed:
    await collect(feed, lambda ev: len(trades_of(ev, "BTC/USDT")) >= 5)
    sim.pause()
    start = time.time() * 1000
    events = await collect(feed, lambda ev: any(isinstance(e, Heartbeat) for e in ev), wait_sec=5)
  beat = next(e for e in events if isinstance(e, Heartbeat))
  assert beat.source == "ccxt" and beat.exchange == "binance" and beat.symbol == "BTC/USDT"
  assert beat.ts >= start - 1000 and beat.sim
