"""StreamSpec validation, parse_spec's readable errors, and the caps on a user's spec."""

import itertools
import string
import time
from typing import Any

import pytest

from bond.compiler import parse_spec, stream_id
from bond.compiler.limits import (
  FeedLimitError,
  check_project_feeds,
  spec_feed_count,
)
from bond.config import Settings
from bond.connectors.x_stream import XStream, rule_for
from bond.errors import SpecError
from bond.schemas import CcxtSource, CustomSource, OnchainSource, StreamSpec, TwitterSource
from tests.conftest import nested


def _spec(**over: Any) -> dict[str, Any]:
  return {"sources": [{"type": "ccxt"}], "symbols": ["BTC"], "interval_sec": 5} | over


def _error(data: Any) -> SpecError:
  with pytest.raises(SpecError) as info:
    parse_spec(data)
  return info.value


@pytest.mark.parametrize(
  ("alias", "model"),
  [
    ("ccxt", CcxtSource),
    ("ccxt.ticker", CcxtSource),
    ("twitter", TwitterSource),
    ("x.tweets", TwitterSource),
    ("onchain", OnchainSource),
    ("onchain.grpc", OnchainSource),
    ("X.Tweets", TwitterSource),
  ],
)
def test_source_aliases(alias: str, model: type) -> None:
  spec = parse_spec(_spec(sources=[{"type": alias}]))
  assert isinstance(spec.sources[0], model)


@pytest.mark.parametrize("alias", ["custom", "custom.ws"])
def test_custom_aliases(alias: str) -> None:
  spec = parse_spec(_spec(sources=[{"type": alias, "url": "wss://feed.example.com/ws"}]))
  assert isinstance(spec.sources[0], CustomSource)


def test_bare_strings_are_sources() -> None:
  spec = parse_spec(_spec(sources=["ccxt.ticker", "x.tweets"]))
  assert [s.type for s in spec.sources] == ["ccxt", "twitter"]


@pytest.mark.parametrize(
  ("given", "pair"),
  [
    ("BTC", "BTC/USDT"),
    ("btc", "BTC/USDT"),
    ("eth/usdc", "ETH/USDC"),
    ("$sol", "SOL/USDT"),
    ("BTCUSDT", "BTC/USDT"),
  ],
)
def test_symbols_become_pairs(given: str, pair: str) -> None:
  assert parse_spec(_spec(symbols=[given])).symbols == [pair]


def test_duplicate_symbols_collapse() -> None:
  assert parse_spec(_spec(symbols=["BTC", "btc/usdt", "ETH"])).symbols == ["BTC/USDT", "ETH/USDT"]


def test_symbols_from_sources_fill_the_stream() -> None:
  spec = parse_spec({"sources": [{"type": "ccxt", "symbols": ["eth"]}]})
  assert spec.symbols == ["ETH/USDT"]


def test_defaults() -> None:
  spec = parse_spec({"sources": ["ccxt"], "symbols": ["BTC"]})
  assert spec.interval_sec == 5
  assert spec.exchanges is None


def test_onchain_needs_no_symbol_and_defaults_event_types() -> None:
  spec = parse_spec({"sources": ["onchain"]})
  assert spec.symbols == []
  assert isinstance(spec.sources[0], OnchainSource)
  assert spec.sources[0].event_types == ["tx", "transfer"]


def test_exchanges_are_lowercased() -> None:
  assert parse_spec(_spec(exchanges=["Binance", " OKX "])).exchanges == ["binance", "okx"]


def test_integral_float_interval_is_accepted() -> None:
  assert parse_spec(_spec(interval_sec=10.0)).interval_sec == 10


@pytest.mark.parametrize("interval", [0, -1, 3601, 1.5, "abc", None])
def test_interval_errors_name_the_field(interval: Any) -> None:
  message = str(_error(_spec(interval_sec=interval)))
  assert "interval_sec" in message
  assert "3600" in message or "integer" in message


def test_interval_bounds_are_inclusive() -> None:
  assert parse_spec(_spec(interval_sec=1)).interval_sec == 1
  assert parse_spec(_spec(interval_sec=3600)).interval_sec == 3600


def test_unknown_source_type_names_index_and_allowed() -> None:
  err = _error(_spec(sources=[{"type": "ccxt"}, {"type": "bloomberg"}, "reuters"]))
  message = str(err)
  assert "sources.1.type" in message and "'bloomberg'" in message
  assert "sources.2.type" in message and "'reuters'" in message
  assert "x.tweets" in message and "onchain.grpc" in message
  assert err.data["errors"] == [line for line in err.data["errors"] if line.startswith("sources.")]


def test_non_string_source_type() -> None:
  message = str(_error(_spec(sources=[{"type": 5}])))
  assert "sources.0.type" in message and "ccxt" in message


def test_missing_source_type() -> None:
  assert "sources.0.type: missing source type" in str(_error(_spec(sources=[{}])))


def test_extra_field_in_a_source() -> None:
  assert "sources.0.foo: unknown field" in str(_error(_spec(sources=[{"type": "ccxt", "foo": 1}])))


@pytest.mark.parametrize("url", ["http://example.com", "example.com", "ftp://x", ""])
def test_custom_url_must_be_websocket(url: str) -> None:
  message = str(_error(_spec(sources=[{"type": "custom", "url": url}])))
  assert "sources.0.url" in message and "ws://" in message


def test_custom_url_is_required() -> None:
  assert "sources.0.url: required" in str(_error(_spec(sources=[{"type": "custom.ws"}])))


def test_bad_event_type() -> None:
  message = str(_error(_spec(sources=[{"type": "onchain", "event_types": ["tx", "swap"]}])))
  assert "sources.0.event_types.1" in message and "transfer" in message


def test_sources_required_and_not_empty() -> None:
  assert "sources: required" in str(_error({"symbols": ["BTC"]}))
  assert "sources" in str(_error(_spec(sources=[])))


def test_ccxt_needs_a_symbol() -> None:
  assert "symbols" in str(_error({"sources": ["ccxt"]}))


def test_bad_symbol() -> None:
  message = str(_error(_spec(symbols=["BT C!"])))
  assert "symbols" in message and "BTC/USDT" in message


def test_empty_exchanges() -> None:
  assert "exchanges" in str(_error(_spec(exchanges=[])))


def test_unknown_top_level_field() -> None:
  assert "colour: unknown field" in str(_error(_spec(colour="blue")))


def test_several_errors_are_all_reported() -> None:
  err = _error(_spec(interval_sec=0, exchanges=[], extra=1))
  fields = {line.split(":")[0] for line in err.data["errors"]}
  assert {"interval_sec", "exchanges", "extra"} <= fields


@pytest.mark.parametrize("data", [None, [], "spec", 5])
def test_non_object(data: Any) -> None:
  assert "JSON object" in str(_error(data))


def test_model_and_parse_spec_agree() -> None:
  data = _spec(sources=["ccxt.ticker", "x.tweets"], symbols=["eth"], exchanges=["okx"])
  assert parse_spec(data) == StreamSpec.model_validate(data)


# ---------------------------------------------------------------------- caps (issue 13)

TICKERS = ["".join(p) for p in itertools.product(string.ascii_uppercase, repeat=3)]


def test_the_flood_of_the_issue_is_refused_quickly_naming_the_cap() -> None:
  # ~12,000 three-letter symbols in one twitter source (a 54+ KB body in the issue).
  flood = {"sources": [{"type": "twitter", "symbols": TICKERS[:12_000]}], "symbols": ["BTC"]}
  started = time.perf_counter()
  err = _error(flood)
  assert time.perf_counter() - started < 0.1  # counted before any symbol is normalised
  assert "sources.0.symbols: 12000 symbols; the limit is 20 (BOND_MAX_SYMBOLS)" in str(err)


@pytest.mark.parametrize(
  ("over", "needle"),
  [
    ({"symbols": TICKERS[:21]}, "symbols: 21 symbols; the limit is 20 (BOND_MAX_SYMBOLS)"),
    ({"sources": ["ccxt"] * 9}, "sources: 9 sources; the limit is 8 (BOND_MAX_SOURCES)"),
    (
      {"exchanges": [f"ex{i}" for i in range(11)]},
      "exchanges: 11 exchanges; the limit is 10 (BOND_MAX_EXCHANGES)",
    ),
    (
      {"sources": [{"type": "ccxt", "symbols": TICKERS[:21]}]},
      "sources.0.symbols: 21 symbols; the limit is 20 (BOND_MAX_SYMBOLS)",
    ),
    (
      {"sources": [{"type": "ccxt", "exchanges": [f"ex{i}" for i in range(11)]}]},
      "sources.0.exchanges: 11 exchanges; the limit is 10 (BOND_MAX_EXCHANGES)",
    ),
    (
      {"sources": [{"type": "onchain", "event_types": ["tx"] * 6}]},
      "sources.0.event_types: List should have at most 5 items",
    ),
    (
      {"sources": [{"type": "custom", "url": "wss://f.example", "mapping": {"price": "a" * 300}}]},
      "sources.0.mapping.price: String should have at most 256 characters",
    ),
    (
      {
        "sources": [
          {
            "type": "custom",
            "url": "wss://f.example",
            "mapping": {"filter": {f"k{i}": i for i in range(17)}},
          }
        ]
      },
      "sources.0.mapping.filter: Dictionary should have at most 16 items",
    ),
    (
      {"sources": [{"type": "custom", "url": "wss://f.example/" + "a" * 2100}]},
      "the limit is 2048",
    ),
    (
      {"sources": [{"type": "ccxt", "exchanges": ["bin ance"]}]},
      "'bin ance' is not a ccxt exchange id",
    ),
  ],
)
def test_every_list_is_capped_and_the_refusal_names_the_cap(
  over: dict[str, Any], needle: str
) -> None:
  assert needle in str(_error(_spec(**over)))


def test_caps_follow_the_settings() -> None:
  tight = Settings(bond_max_symbols=2, bond_max_sources=1, bond_max_exchanges=1)
  assert parse_spec(_spec(symbols=["BTC", "ETH"]), tight).symbols == ["BTC/USDT", "ETH/USDT"]
  with pytest.raises(SpecError, match=r"the limit is 2 \(BOND_MAX_SYMBOLS\)"):
    parse_spec(_spec(symbols=["BTC", "ETH", "SOL"]), tight)
  with pytest.raises(SpecError, match=r"the limit is 1 \(BOND_MAX_SOURCES\)"):
    parse_spec(_spec(sources=["ccxt", "twitter"]), tight)
  with pytest.raises(SpecError, match=r"the limit is 1 \(BOND_MAX_EXCHANGES\)"):
    parse_spec(_spec(exchanges=["binance", "okx"]), tight)
  roomy = Settings(bond_max_symbols=30, bond_max_feeds_per_stream=1000)
  assert len(parse_spec(_spec(symbols=TICKERS[:30]), roomy).symbols) == 30


def test_settings_cannot_raise_a_cap_past_its_ceiling() -> None:
  with pytest.raises(ValueError, match="bond_max_symbols"):
    Settings(bond_max_symbols=201)


def test_a_stored_spec_loads_whatever_todays_caps() -> None:
  # Read back from the registry (no validation context): only the ceilings apply.
  data = _spec(symbols=TICKERS[:30], exchanges=["binance", "okx"])
  assert len(StreamSpec.model_validate(data).symbols) == 30
  _error(data)  # while a user's spec of the same shape is refused
  # Stored before X symbols were checked: it loads (and can be deleted); XStream drops it.
  old = {
    "sources": [{"type": "twitter", "symbols": ["BTC OR THE OR A", "eth"]}],
    "symbols": ["ETH"],
  }
  assert StreamSpec.model_validate(old).sources[0].symbols == ["BTC OR THE OR A", "ETH"]  # type: ignore[union-attr]
  assert XStream(["BTC OR THE OR A", "ETH"], mode="mock").bases == ["ETH"]
  _error(old)


def test_symbols_across_sources_are_capped_together() -> None:
  data = {
    "sources": [
      {"type": "ccxt", "symbols": TICKERS[:15]},
      {"type": "twitter", "symbols": TICKERS[15:30]},
    ]
  }
  assert "symbols: 30 symbols across the sources; the limit is 20" in str(_error(data))


def test_feeds_per_stream_are_capped() -> None:
  # 20 pairs on 6 exchanges are 120 feeds, over the default 100.
  data = _spec(
    symbols=TICKERS[:20], exchanges=["binance", "okx", "bybit", "kraken", "gate", "mexc"]
  )
  message = str(_error(data))
  assert "120 feeds" in message and "(BOND_MAX_FEEDS_PER_STREAM)" in message
  # The default exchanges count too: 20 pairs on BOND_EXCHANGES' 3 are 60 feeds.
  spec = parse_spec(_spec(symbols=TICKERS[:20]))
  assert spec_feed_count(spec, ["binance", "okx", "bybit"]) == 60
  with pytest.raises(SpecError, match="BOND_MAX_FEEDS_PER_STREAM"):
    parse_spec(_spec(symbols=TICKERS[:20]), default_exchanges=[f"ex{i}" for i in range(6)])


def test_feed_count_covers_every_source() -> None:
  spec = parse_spec(
    {
      "sources": [
        {"type": "ccxt", "exchanges": ["binance", "okx"]},
        "twitter",
        "onchain",
        {"type": "custom", "url": "wss://a.example/ws"},
      ],
      "symbols": ["BTC", "ETH", "eth/usdc"],
    }
  )
  # 3 pairs x 2 exchanges + 2 X bases (ETH once) + 1 chain + 1 custom URL.
  assert spec_feed_count(spec, ["binance"]) == 6 + 2 + 1 + 1


def test_feeds_per_project_count_shared_feeds_once() -> None:
  settings = Settings(bond_max_feeds_per_project=7)
  ex = ["binance"]
  one = parse_spec(_spec(symbols=TICKERS[:4], sources=["ccxt", "twitter"]))  # 8 feeds
  with pytest.raises(FeedLimitError) as info:
    check_project_feeds(one, [], settings, ex)
  assert info.value.code == "too_many_feeds" and "BOND_MAX_FEEDS_PER_PROJECT" in str(info.value)
  first = parse_spec(_spec(symbols=TICKERS[:3]))  # 3 feeds
  same_pairs = parse_spec(_spec(symbols=TICKERS[:3], interval_sec=60))  # the same 3 feeds
  assert check_project_feeds(same_pairs, [first], settings, ex) == 3
  more = parse_spec(_spec(symbols=TICKERS[3:8]))  # 5 new feeds: 8 in all
  with pytest.raises(
    FeedLimitError, match="already run 3 feeds and this one would bring them to 8"
  ):
    check_project_feeds(more, [first, same_pairs], settings, ex)
  assert isinstance(FeedLimitError("x"), SpecError)  # the API answers it 422


@pytest.mark.parametrize(
  "symbol",
  [
    "BTC OR THE OR A",
    "BTC)",
    "(BTC",
    "$BTC -is:retweet",
    'BTC"',
    "BTC\nETH",
    "BTC OR",
    "B" * 16,
    "",
    "BTC/USDT/X",
    "BTC:ETH",
  ],
)
def test_x_symbols_are_tickers_so_nothing_reaches_the_rule(symbol: str) -> None:
  message = str(_error({"sources": [{"type": "twitter", "symbols": [symbol]}]}))
  assert "sources.0.symbols" in message and "ticker" in message
  with pytest.raises(ValueError):
    rule_for(symbol)


def test_x_rule_and_stream_take_only_tickers() -> None:
  assert rule_for("BTC") == {"value": "$BTC OR #BTC", "tag": "bond:BTC"}
  spec = parse_spec({"sources": [{"type": "twitter", "symbols": ["$btc", "eth/usdt", "#sol"]}]})
  assert spec.sources[0].symbols == ["BTC", "ETH", "SOL"]  # type: ignore[union-attr]
  stream = XStream(["BTC", "BTC OR THE OR A", "eth", "x y"], mode="mock")
  assert stream.bases == ["BTC", "ETH"]


def _custom(subscribe: Any) -> dict[str, Any]:
  return {"sources": [{"type": "custom", "url": "wss://f.example/ws", "subscribe": subscribe}]}


@pytest.mark.parametrize("depth", [9, 300, 5000])
def test_a_deep_subscribe_is_a_spec_error_not_a_crash(depth: int) -> None:
  message = str(_error(_custom(nested(depth))))
  assert "sources.0.subscribe: nested deeper than 8 levels" in message
  assert "BOND_MAX_SUBSCRIBE_DEPTH" in message


def test_a_subscribe_at_the_depth_cap_gets_a_stream_id() -> None:
  spec = parse_spec(_custom({"op": "sub", "args": [nested(6)]}))  # 8 levels with the list
  assert len(stream_id(spec)) == 16


def test_a_deep_list_subscribe_is_refused_too() -> None:
  deep: Any = "x"
  for _ in range(50):
    deep = [deep]
  assert "BOND_MAX_SUBSCRIBE_DEPTH" in str(_error(_custom({"args": deep})))


def test_a_big_subscribe_is_refused_naming_the_cap() -> None:
  message = str(_error(_custom({"args": ["x" * 5000]})))
  assert "bytes as JSON; the limit is 4096 (BOND_MAX_SUBSCRIBE_BYTES)" in message
  assert "BOND_MAX_SUBSCRIBE_BYTES" in str(_error(_custom({"args": list(range(2000))})))


def test_a_subscribe_that_is_not_json_is_refused() -> None:
  assert "JSON object" in str(_error(_custom({"n": float("nan")})))


@pytest.mark.parametrize(
  "data",
  [
    {"sources": ["ccxt"], "symbols": ["A" * 60_000]},
    {"sources": [{"type": "twitter", "symbols": ["B" * 60_000]}]},
    {"sources": [{"type": "ccxt", "exchanges": ["c" * 60_000]}], "symbols": ["BTC"]},
    {"sources": [{"type": "d" * 60_000}], "symbols": ["BTC"]},
    {"sources": ["e" * 60_000], "symbols": ["BTC"]},
    {"sources": [{"type": "custom", "url": "ws://" + "f" * 60_000}]},
    {"sources": [{"type": "bloomberg"}] * 10_000, "symbols": ["BTC"]},
  ],
)
def test_refusals_do_not_echo_a_huge_input(data: dict[str, Any]) -> None:
  assert len(str(_error(data))) < 1000
