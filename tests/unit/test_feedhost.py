"""The feed host's commands and the feed parameters the worker sends it (no I/O but stdout)."""

import json

from bond.agents.feedhost import Host, parse_run
from bond.agents.feedrunner import FeedParams
from bond.schemas import CustomSource

CUSTOM = CustomSource.model_validate(
  {"url": "wss://feed.example/ws", "subscribe": {"op": "subscribe", "args": ["a", "b"]}}
)


def test_feed_params_survive_the_trip_to_the_host():
  for params in (FeedParams(), FeedParams(True, ("transfer", "swap")), FeedParams(custom=CUSTOM)):
    wire = json.loads(json.dumps(params.to_wire()))
    assert FeedParams.from_wire(wire) == params


def test_a_run_command_names_feeds_by_id_with_their_params():
  msg = {"op": "run", "feeds": [
    {"feed": ["ccxt", "binance", "BTC/USDT", "BTC/USDT"], "params": FeedParams(True).to_wire()},
    {"feed": ["custom", "ticks", "ticks", "ticks"], "params": FeedParams(custom=CUSTOM).to_wire()},
  ]}  # fmt: skip
  wanted = parse_run(json.loads(json.dumps(msg)))
  assert sorted(wanted) == ["ccxt|binance|BTC/USDT", "custom|ticks|ticks"]
  feed, params = wanted["ccxt|binance|BTC/USDT"]
  assert (feed.source, feed.exchange, feed.symbol, feed.raw_key, params.liquidations) == (
    "ccxt", "binance", "BTC/USDT", "BTC/USDT", True)  # fmt: skip
  assert wanted["custom|ticks|ticks"][1].custom == CUSTOM


async def test_a_mute_holds_before_it_is_confirmed_and_the_next_run_lifts_it(capfd):
  host = Host()
  host.command({"op": "mute", "id": 7})
  assert host.runner.muted  # set before the answer went out
  assert json.loads(capfd.readouterr().out) == {"op": "muted", "id": 7}
  host.command({"op": "run", "feeds": []})
  assert host.changed.is_set() and host.wanted == {}
  await host.runner.apply(host.wanted)
  assert not host.runner.muted


def test_a_feed_restarts_only_when_its_streams_ask_for_more_than_it_gives():
  plain = FeedParams()
  liq = FeedParams(liquidations=True)
  assert plain.covers(plain) and liq.covers(plain) and liq.covers(liq)
  assert not plain.covers(liq)  # a new stream wants the feed's liquidations
  swaps = FeedParams(event_types=("swap",))
  both = FeedParams(event_types=("swap", "transfer"))
  assert both.covers(swaps) and not swaps.covers(both)
  custom = CUSTOM
  moved = CustomSource.model_validate({"url": "wss://feed.example/other"})
  assert FeedParams(custom=custom).covers(FeedParams(custom=custom))
  assert not FeedParams(custom=custom).covers(FeedParams(custom=moved))
