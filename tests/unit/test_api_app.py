"""REST API pieces without I/O: the OpenAPI document, body reading, market cache, spec rules."""

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.requests import Request

from bond.config import Settings
from bond.errors import ApiError, ConfigError, SpecError, UpstreamError
from bond.gateway.api import create_api_app
from bond.gateway.endpoints import ws_url
from bond.gateway.errors import read_json_object
from bond.gateway.markets import MarketCache, check_symbols
from bond.gateway.observe import ApiMetrics, ObserveMiddleware
from bond.gateway.openapi import build_openapi
from bond.gateway.specs import check_exchanges, explicit
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
    assert err.value.http_status == status, (chunks[0][:20], headers)


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
  assert explicit(spec, EXCHANGES).exchanges == EXCHANGES
  tweets = StreamSpec.model_validate({"sources": ["twitter"], "symbols": ["BTC"]})
  assert explicit(tweets, EXCHANGES).exchanges is None
  own = StreamSpec.model_validate(
    {"sources": [{"type": "ccxt", "exchanges": ["okx"]}], "symbols": ["BTC"]}
  )
  assert explicit(own, EXCHANGES).exchanges is None
  check_exchanges(own, EXCHANGES)
  bad = StreamSpec.model_validate(
    {"sources": [{"type": "ccxt", "exchanges": ["kraken"]}], "symbols": ["BTC"]}
  )
  with pytest.raises(
    SpecError, match="'kraken' not available here; available: binance, okx, bybit"
  ):
    check_exchanges(bad, EXCHANGES)


async def test_unknown_symbols_name_the_exchanges_and_a_close_match() -> None:
  async def loader(exchange_id: str, settings: Settings) -> set[str]:
    if exchange_id == "bybit":
      raise UpstreamError("down")
    return {"BTC/USDT", "ETH/USDT"} if exchange_id == "binance" else {"ETH/USDT"}

  settings = Settings(bond_exchanges="binance,okx,bybit")
  markets = MarketCache(loader, settings)
  spec = explicit(
    StreamSpec.model_validate({"sources": ["ccxt"], "symbols": ["BTC", "ETHH/USDT"]}),
    settings.exchanges,
  )
  with pytest.raises(SpecError) as err:
    await check_symbols(spec, settings, markets)
  message = err.value.message
  assert "symbol BTC/USDT is not listed on okx" in message
  assert "symbol ETHH/USDT is not listed on binance, okx (did you mean ETH/USDT?)" in message
  assert "bybit" not in message  # unavailable markets are not held against the symbol
  await check_symbols(
    explicit(
      StreamSpec.model_validate({"sources": ["ccxt"], "symbols": ["ETH"]}), settings.exchanges
    ),
    settings,
    markets,
  )


def test_ws_url() -> None:
  assert (
    ws_url(Settings(ws_host="localhost:8080").ws_host, "ab", "t")
    == "ws://localhost:8080/ws/ab?token=t"
  )
  assert (
    ws_url(Settings(ws_host="wss://bond.example/").ws_host, "ab", "t")
    == "wss://bond.example/ws/ab?token=t"
  )


STRONG = "s" * 32
KEYS = "alpha:key-alpha"


async def test_lifespan_refuses_the_default_secret_outside_dev() -> None:
  conf = Settings(bond_env="prod", bond_secret="dev-secret-change-me", bond_api_keys=KEYS)
  app = create_api_app(conf)
  with pytest.raises(ConfigError, match="BOND_SECRET is the default"):
    async with app.router.lifespan_context(app):
      pass


@pytest.mark.parametrize(
  ("env", "variable"),
  [
    ({"bond_secret": STRONG}, "BOND_API_KEYS is empty"),
    ({"bond_secret": STRONG, "bond_api_keys": "  "}, "BOND_API_KEYS is empty"),
    ({"bond_secret": STRONG, "bond_api_keys": "nokey"}, "BOND_API_KEYS entry 'nokey'"),
    ({"bond_api_keys": KEYS}, "BOND_SECRET is the default"),
    ({"bond_secret": "s" * 31, "bond_api_keys": KEYS}, "BOND_SECRET is shorter than 32"),
    (
      {
        "bond_secret": STRONG,
        "bond_secret_previous": "dev-secret-change-me",
        "bond_api_keys": KEYS,
      },
      "BOND_SECRET_PREVIOUS is the default",
    ),
    (
      {"bond_secret": STRONG, "bond_secret_previous": "short", "bond_api_keys": KEYS},
      "BOND_SECRET_PREVIOUS is shorter than 32",
    ),
  ],
)
@pytest.mark.parametrize("bond_env", ["prod", "production", "staging"])
def test_production_mode_refuses_unsafe_settings(
  env: dict[str, str], variable: str, bond_env: str
) -> None:
  with pytest.raises(ConfigError) as err:
    Settings(bond_env=bond_env, **env).require_safe_secret()  # type: ignore[arg-type]
  assert variable in err.value.message and "\n" not in err.value.message
  Settings(bond_env="dev", **env).require_safe_secret()  # type: ignore[arg-type] # dev: anything goes


def test_production_mode_accepts_safe_settings() -> None:
  Settings(bond_env="prod", bond_secret=STRONG, bond_api_keys=KEYS).require_safe_secret()
  Settings(
    bond_env="prod", bond_secret=STRONG, bond_secret_previous="p" * 40, bond_api_keys=KEYS
  ).require_safe_secret()


def test_entry_points_exit_with_one_line_naming_the_variable(
  monkeypatch: pytest.MonkeyPatch,
) -> None:
  from bond.config import get_settings
  from bond.gateway import app

  monkeypatch.setenv("BOND_ENV", "prod")
  monkeypatch.setenv("BOND_SECRET", STRONG)
  monkeypatch.delenv("BOND_API_KEYS", raising=False)
  get_settings.cache_clear()
  try:
    for factory, name in ((app.api, "api"), (app.gateway, "gateway")):
      with pytest.raises(SystemExit) as err:
        factory()
      text = str(err.value.code)
      assert text.startswith(f"bond {name}: refusing to start: BOND_API_KEYS is empty")
      assert "\n" not in text
  finally:
    get_settings.cache_clear()


def test_the_gateway_process_loads_neither_the_rest_api_nor_the_mcp_server() -> None:
  # Both factories live in one module; the gateway paid 30 MiB and 0.9 s of start-up for
  # the API's MCP server before each factory imported only its own side.
  import subprocess
  import sys

  code = (
    "import sys; from bond.gateway.app import gateway; gateway(); "
    "print(sorted(m for m in ('mcp', 'bond.gateway.api', 'bond.mcp_server') if m in sys.modules))"
  )
  env = {"PATH": "/usr/bin:/bin", "BOND_ENV": "dev", "HOME": "/tmp"}
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60, check=True)  # fmt: skip
  assert out.stdout.strip() == "[]"
