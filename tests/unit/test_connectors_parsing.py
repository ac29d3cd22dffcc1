"""Connector parsers and policies, without I/O."""

import math

import pytest

from bond.connectors.backoff import Backoff
from bond.connectors.ccxt_common import TradeDedupe, parse_liquidation, parse_ticker, parse_trade
from bond.connectors.custom_ws import InvalidMessage, get_path, map_message
from bond.connectors.x_stream import parse_tweet, rule_for
from bond.schemas import CustomMapping


def test_backoff_linear_and_exponential_caps():
  linear = Backoff(base_sec=0.25, max_sec=16, linear=True, jitter=0)
  assert [linear.delay(n) for n in (1, 2, 3, 100)] == [0.25, 0.5, 0.75, 16]
  expo = Backoff(base_sec=5, max_sec=320, jitter=0)
  assert [expo.delay(n) for n in (1, 2, 3, 7, 8)] == [5, 10, 20, 320, 320]
  jittered = Backoff(base_sec=1, max_sec=10, jitter=0.1)
  assert all(0.9 <= jittered.delay(1) <= 1.1 for _ in range(50))


def test_parse_trade_rejects_bad_numbers():
  good = {"id": "7", "timestamp": 1761053405012, "price": 68000.5, "amount": 0.1, "side": "buy"}
  tick = parse_trade(good, "okx", "BTC/USDT", sim=True)
  assert tick and tick.kind == "trade" and tick.trade_id == "7" and tick.side == "buy" and tick.sim
  for bad in (
    {"price": math.nan},
    {"price": -1},
    {"amount": None},
    {"timestamp": None},
    {"price": "x"},
  ):
    assert parse_trade({**good, **bad}, "okx", "BTC/USDT", sim=False) is None


def test_parse_ticker_and_liquidation():
  t = parse_ticker({"last": 3500.1, "timestamp": 1761053405000}, "binance", "ETH/USDT", sim=False)
  assert t and t.kind == "ticker" and t.price == 3500.1
  liq = parse_liquidation(
    {"price": 3499.0, "baseValue": 2.5, "timestamp": 1761053405000, "info": {"S": "SELL"}},
    "binance",
    "ETH/USDT",
    sim=True,
  )
  assert liq and liq.kind == "liquidation" and liq.side == "sell" and liq.amount == 2.5


def test_trade_dedupe_monotonic_ids():
  dedupe = TradeDedupe(monotonic=True)
  ticks = [
    parse_trade({"id": str(i), "timestamp": 1, "price": 1.0, "amount": 1.0}, "b", "B/U", False)
    for i in (1, 2, 2, 1, 3)
  ]
  assert [dedupe.is_new(t) for t in ticks if t] == [True, True, False, False, True]
  assert dedupe.last_id == 3


def test_get_path_and_mapping():
  msg = {
    "type": "trade",
    "data": {"p": "1.5", "q": 2, "T": 1761053405, "s": "BTCUSDT"},
    "items": [{"x": 1}],
  }
  assert get_path(msg, "items.0.x") == 1
  mapping = CustomMapping(
    ts="data.T", price="data.p", amount="data.q", symbol="data.s", filter={"type": "trade"}
  )
  ev = map_message(msg, mapping, "src")
  assert (
    ev and ev.ts == 1761053405000 and ev.price == 1.5 and ev.amount == 2 and ev.symbol == "BTCUSDT"
  )
  assert map_message({**msg, "type": "status"}, mapping, "src") is None
  with pytest.raises(InvalidMessage):
    map_message({**msg, "data": {**msg["data"], "p": "NaN"}}, mapping, "src")


def test_parse_tweet_symbols_from_rules_and_text():
  line = {
    "data": {
      "id": "1",
      "text": "$eth and #SOL up",
      "author_id": "9",
      "created_at": "2025-10-21T13:30:05.000Z",
    },
    "matching_rules": [{"id": "5", "tag": "bond:BTC"}],
  }
  tweet = parse_tweet(line, ["BTC", "ETH", "SOL"])
  assert tweet and tweet.symbols == ["BTC", "ETH", "SOL"] and tweet.ts == 1761053405000
  assert parse_tweet({"data": {"id": "2", "text": "nothing"}}, ["BTC"]) is None
  assert rule_for("BTC") == {"value": "$BTC OR #BTC", "tag": "bond:BTC"}
