"""Each statistic on its own: what it takes, how states merge, its output, its wire form."""

import pytest

from bond.schemas import StreamSpec
from bond.windowing import REGISTRY, Pane, PaneRecord, WireError, compose_window, feeds_for
from bond.windowing.aggregators import (
  CustomCount,
  Liquidations,
  Ohlc,
  OnchainCounts,
  Registry,
  TradeCount,
  Tweets,
  Volume,
  Vwap,
)

SPEC = StreamSpec.model_validate({"sources": ["ccxt"], "symbols": ["BTC/USDT"], "interval_sec": 1})


def run(agg, events):
  state = None
  for raw in events:
    if agg.accepts(raw):
      state = agg.add(agg.init() if state is None else state, raw)
  return state


def roundtrip(agg, state):
  return agg.decode(agg.encode(state))


def t(ts, price, amount=1.0, kind="trade"):
  return {"kind": kind, "ts": ts, "price": price, "amount": amount}


def test_ohlc_takes_trades_in_time_order_and_later_of_equal_times_as_close():
  agg = Ohlc()
  state = run(agg, [t(20, 5.0), t(10, 7.0), t(30, 1.0), t(30, 3.0), t(5, None)])
  assert agg.result(state, SPEC) == {
    "price_avg": 4.0,
    "price_open": 7.0,
    "price_high": 7.0,
    "price_low": 1.0,
    "price_close": 3.0,
  }
  assert agg.result(roundtrip(agg, state), SPEC) == agg.result(state, SPEC)


def test_ohlc_falls_back_to_tickers_only_without_trades():
  agg = Ohlc()
  tickers = [t(1, 10.0, kind="ticker"), t(2, 12.0, kind="ticker")]
  assert agg.result(run(agg, tickers), SPEC)["price_avg"] == 11.0
  mixed = run(agg, [*tickers, t(3, 100.0)])
  assert agg.result(mixed, SPEC)["price_avg"] == 100.0
  assert agg.result(None, SPEC) == dict.fromkeys(
    ["price_avg", "price_open", "price_high", "price_low", "price_close"]
  )


def test_ohlc_ignores_liquidations():
  assert not Ohlc().accepts({"kind": "liquidation", "price": 1.0, "ts": 1})


def test_vwap_weights_prices_by_amount_and_is_none_without_volume():
  agg = Vwap()
  state = run(agg, [t(1, 100.0, 1.0), t(2, 110.0, 3.0), t(3, 90.0, 2.0)])
  assert agg.result(state, SPEC)["vwap"] == pytest.approx((100 + 330 + 180) / 6)
  assert agg.result(run(agg, [t(1, 100.0, 0.0)]), SPEC) == {"vwap": None}
  assert agg.result(None, SPEC) == {"vwap": None}
  assert roundtrip(agg, state) == state


def test_volume_and_trade_count_take_trades_only():
  events = [t(1, 1.0, 2.5), t(2, 1.0, None), t(3, 2.0, kind="ticker"), t(4, None, 9.0)]
  assert Volume().result(run(Volume(), events), SPEC) == {"volume_sum": 2.5}
  assert Volume().result(None, SPEC) == {"volume_sum": 0.0}
  assert TradeCount().result(run(TradeCount(), events), SPEC) == {"trades": 2}
  assert TradeCount().result(None, SPEC) == {"trades": 0}


def test_counts_of_tweets_liquidations_and_custom_events():
  assert Tweets().result(run(Tweets(), [{"ts": 1}] * 3), SPEC) == {"tweets": 3}
  liq = [{"kind": "liquidation", "ts": 1}, t(2, 1.0)]
  assert Liquidations().result(run(Liquidations(), liq), SPEC) == {"liquidations": 1}
  assert CustomCount().result(run(CustomCount(), [{"ts": 1}] * 2), SPEC) == {"custom_count": 2}
  assert CustomCount().result(None, SPEC) == {"custom_count": 0}


def test_onchain_counts_the_asked_types_only_and_zero_fills_them():
  spec = StreamSpec.model_validate(
    {"sources": [{"type": "onchain", "event_types": ["tx", "transfer"]}], "interval_sec": 1}
  )
  agg = OnchainCounts()
  state = run(agg, [{"type": "tx"}, {"type": "tx"}, {"type": "swap"}])
  assert agg.result(state, spec) == {"onchain": {"tx": 2, "transfer": 0}}
  assert agg.result(roundtrip(agg, state), spec) == agg.result(state, spec)


def test_merge_never_changes_the_merged_pane():
  a, b = Pane(), Pane()
  a.add("ccxt", t(1, 1.0))
  b.add("ccxt", t(2, 2.0))
  before = b.to_wire()
  a.merge(b)
  a.merge(b)
  assert b.to_wire() == before and a.events == 3


def test_registry_refuses_a_second_statistic_of_a_name_or_field():
  reg = Registry()
  reg.register(Volume())
  with pytest.raises(ValueError, match="already registered"):
    reg.register(Volume())

  class Again(TradeCount):
    name = "trades2"
    fields = Volume.fields

  with pytest.raises(ValueError, match="volume_sum"):
    reg.register(Again())


def test_builtin_fields_are_in_aggregated_event_order():
  names = [f.name for agg in REGISTRY for f in agg.fields]
  assert names[:10] == [
    "price_avg",
    "price_open",
    "price_high",
    "price_low",
    "price_close",
    "vwap",
    "volume_sum",
    "trades",
    "tweets",
    "liquidations",
  ]
  assert names[10:12] == ["onchain", "custom_count"]


def test_pane_record_roundtrips_and_refuses_other_versions():
  pane = Pane()
  pane.add("ccxt", {**t(1, 2.0), "sim": True})
  rec = PaneRecord("ccxt|ex|BTC/USDT", 1000, pane, ["s1"], 2000)
  back = PaneRecord.from_wire(rec.to_wire())
  assert back == rec and not back.partial
  assert "e" not in rec.to_wire() and "opened" not in rec.to_wire()
  # The empty pane stage 1 opened back for a feed just heard of says so (a record without
  # the field, written before it existed, is an ordinary pane).
  opened = PaneRecord("ccxt|ex|BTC/USDT", 0, Pane(), ["s1"], 1000, opened=True)
  assert PaneRecord.from_wire(opened.to_wire()).opened is True
  with pytest.raises(WireError, match="version"):
    PaneRecord.from_wire({**rec.to_wire(), "v": 99})
  with pytest.raises(WireError):
    PaneRecord.from_wire({"v": 1, "feed": "x"})


def test_window_says_whether_it_is_complete_and_which_feeds_it_lacks():
  spec = StreamSpec.model_validate(
    {
      "sources": ["ccxt", "twitter"],
      "symbols": ["BTC/USDT", "ETH/USDT"],
      "interval_sec": 2,
      "exchanges": ["a"],
    }
  )
  feeds = feeds_for(spec, ["a"])
  btc, eth_tw = Pane(), Pane()
  btc.add("ccxt", t(1, 10.0, 2.0))
  eth_tw.add("twitter", {"ts": 1})
  panes = {"ccxt|a|BTC/USDT": btc, "twitter|x|ETH": eth_tw}
  full = compose_window("s", spec, feeds, 4000, panes)
  assert full["complete"] is True and "missing" not in full
  assert full["window_start"] == "1970-01-01T00:00:02Z" and full["ts"] == "1970-01-01T00:00:04Z"
  assert full["by_symbol"]["ETH/USDT"]["tweets"] == 1 and full["tweets"] == 0
  assert full["raw_data"] == {"trades": 1, "sources": ["a", "x"], "sim": False}
  short = compose_window("s", spec, feeds, 4000, panes, missing=["ccxt|a|ETH/USDT"])
  assert short["complete"] is False and short["missing"] == ["ccxt|a|ETH/USDT"]
