"""StreamSpec validation and parse_spec's readable errors."""

from typing import Any

import pytest

from bond.compiler import parse_spec
from bond.errors import SpecError
from bond.schemas import CcxtSource, CustomSource, OnchainSource, StreamSpec, TwitterSource


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
