"""REST API pieces without I/O: the OpenAPI document, body reading, market cache, spec rules."""

import asyncio
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.requests import Request

from bond.config import Settings
from bond.errors import ConfigError, SpecError, UpstreamError
from bond.gateway.api import (
  ApiMetrics,
  MarketCache,
  ObserveMiddleware,
  _check_exchanges,
  _check_symbols,
  _explicit,
  _ws_url,
  create_api_app,
)
from bond.gateway.errors import ApiError, read_json_object
from bond.gateway.openapi import build_openapi
from bond.schemas import StreamSpec

EXCHANGES = ["binance", "okx", "bybit"]


def request_with(body_chunks: list[bytes], headers: dict[str, str]) -> Request:
  """Return a Request whose body arrives in the given chunks."""
  messages: Iterator[bytes] = iter(body_chunks)

  async def receive() -> dict[str, Any]:
    chunk = next(messages, None)
    if chunk is None:
      return {"type": "http.request", "body": b"", "more_body": False}
    return {"type": "http.request", "body": chunk, "more_body": True}

  raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
  scope = {
    "type": "http",
    "method": "POST",
    "path": "/v1/streams",
    "headers": raw,
    "query_string": b"",
  }
  return Request(scope, receive)


def test_openapi_document_is_valid() -> None:
  doc = build_openapi()
  validate(doc)
  json.dumps(doc)  # plain JSON
  body = doc["paths"]["/v1/streams"]["post"]["requestBody"]["content"]["application/json"]["schema"]
  assert len(body["oneOf"]) == 2


async def test_read_json_object() -> None:
  json_ct = {"Content-Type": "application/json"}
  assert await read_json_object(request_with([b'{"a":', b" 1}"], json_ct)) == {"a": 1}
  assert await read_json_object(request_with([b'{"a": 1}'], {})) == {"a": 1}
  cases: list[tuple[list[bytes], dict[str, str], int]] = [
    ([b"[1]"], json_ct, 400),
    ([b"{"], json_ct, 400),
    ([b""], json_ct, 400),
    ([b"1" * 5000], json_ct, 400),  # an integer too long to convert
    ([b"[" * 5000 + b"]" * 5000], json_ct, 400),
    ([b'{"a": NaN}'], json_ct, 400),
    ([b'{"a": -Infinity}'], json_ct, 400),
    ([b'{"a": 1e400}'], json_ct, 400),
    ([b"{}"], {"Content-Type": "text/plain"}, 415),
    ([b"{}"], {**json_ct, "Content-Length": str(65 * 1024)}, 413),
    ([b" " * 8192] * 9, json_ct, 413),  # no length declared: the streamed bytes count
  ]
  for chunks, headers, status in cases:
    with pytest.raises(ApiError) as err:
      await read_json_object(request_with(chunks, headers))
    assert err.value.status == status, (chunks[0][:20], headers)


async def test_observe_middleware_refuses_declared_oversized_bodies() -> None:
  called = False

  async def app(scope: Any, receive: Any, send: Any) -> None:
    nonlocal called
    called = True

  sent: list[dict[str, Any]] = []

  async def send(message: dict[str, Any]) -> None:
    sent.append(message)

  async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}

  metrics = ApiMetrics()
  scope = {
    "type": "http",
    "method": "POST",
    "path": "/v1/streams",
    "headers": [(b"content-length", b"70000")],
  }
  await ObserveMiddleware(app, metrics)(scope, receive, send)
  assert not called
  assert sent[0]["status"] == 413
  assert json.loads(sent[1]["body"])["error"]["code"] == "body_too_large"
  assert (
    b'bond_api_requests_total{method="POST",route="unmatched",status="413"} 1.0'
    in metrics.render([])
  )


async def test_market_cache_caches_and_tolerates_failures() -> None:
  calls: list[str] = []

  async def loader(exchange_id: str, settings: Settings) -> set[str]:
    calls.append(exchange_id)
    await asyncio.sleep(0.01)
    if exchange_id == "down":
      raise UpstreamError("unreachable")
    if exchange_id == "slow":
      await asyncio.sleep(10)
    return {"BTC/USDT"}

  cache = MarketCache(loader, Settings(), timeout_sec=0.1)
  got = await asyncio.gather(*(cache.get("binance") for _ in range(5)))
  assert got == [frozenset({"BTC/USDT"})] * 5 and calls == ["binance"]  # one load for all
  assert await cache.get("down") is None
  assert await cache.get("down") is None and calls.count("down") == 1  # failure cached a while
  assert await cache.get("slow") is None  # timed out: unchecked, not an error


def test_exchanges_are_spelled_out_and_checked() -> None:
  spec = StreamSpec.model_validate({"sources": [{"type": "ccxt"}], "symbols": ["BTC"]})
  assert _explicit(spec, EXCHANGES).exchanges == EXCHANGES
  tweets = StreamSpec.model_validate({"sources": ["twitter"], "symbols": ["BTC"]})
  assert _explicit(tweets, EXCHANGES).exchanges is None
  own = StreamSpec.model_validate(
    {"sources": [{"type": "ccxt", "exchanges": ["okx"]}], "symbols": ["BTC"]}
  )
  assert _explicit(own, EXCHANGES).exchanges is None
  _check_exchanges(own, EXCHANGES)
  bad = StreamSpec.model_validate(
    {"sources": [{"type": "ccxt", "exchanges": ["kraken"]}], "symbols": ["BTC"]}
  )
  with pytest.raises(
    SpecError, match="'kraken' not available here; available: binance, okx, bybit"
  ):
    _check_exchanges(bad, EXCHANGES)


async def test_unknown_symbols_name_the_exchanges_and_a_close_match() -> None:
  async def loader(exchange_id: str, settings: Settings) -> set[str]:
    if exchange_id == "bybit":
      raise UpstreamError("down")
    return {"BTC/USDT", "ETH/USDT"} if exchange_id == "binance" else {"ETH/USDT"}

  settings = Settings(bond_exchanges="binance,okx,bybit")
  state: Any = SimpleNamespace(settings=settings, markets=MarketCache(loader, settings))
  spec = _explicit(
    StreamSpec.model_validate({"sources": ["ccxt"], "symbols": ["BTC", "ETHH/USDT"]}),
    settings.exchanges,
  )
  with pytest.raises(SpecError) as err:
    await _check_symbols(spec, state)
  message = err.value.message
  assert "symbol BTC/USDT is not listed on okx" in message
  assert "symbol ETHH/USDT is not listed on binance, okx (did you mean ETH/USDT?)" in message
  assert "bybit" not in message  # unavailable markets are not held against the symbol
  await _check_symbols(
    _explicit(
      StreamSpec.model_validate({"sources": ["ccxt"], "symbols": ["ETH"]}), settings.exchanges
    ),
    state,
  )


def test_ws_url() -> None:
  assert (
    _ws_url(Settings(ws_host="localhost:8080"), "ab", "t") == "ws://localhost:8080/ws/ab?token=t"
  )
  assert (
    _ws_url(Settings(ws_host="wss://bond.example/"), "ab", "t")
    == "wss://bond.example/ws/ab?token=t"
  )


async def test_lifespan_refuses_the_default_secret_outside_dev() -> None:
  app = create_api_app(Settings(bond_env="prod", bond_secret="dev-secret-change-me"))
  with pytest.raises(ConfigError, match="BOND_SECRET"):
    async with app.router.lifespan_context(app):
      pass
