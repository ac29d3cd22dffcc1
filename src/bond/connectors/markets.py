"""Create ccxt clients for live exchanges or, in sim mode, pointed at the local sim exchange.

In sim mode every exchange id (binance, okx, bybit, ...) is served by a ccxt binance
client whose URLs lead to `SimExchange`; events keep the requested exchange id as label.
"""

import functools
import logging
import ssl
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro

from bond.config import Settings, get_settings
from bond.errors import ConfigError

log = logging.getLogger(__name__)

# Errors after which a retry can help (RateLimitExceeded and ExchangeNotAvailable are
# NetworkErrors in ccxt, listed for the reader).
RETRIABLE: tuple[type[BaseException], ...] = (
  ccxt.NetworkError,
  ccxt.RateLimitExceeded,
  ccxt.ExchangeNotAvailable,
)


def sim_base_url(settings: Settings | None = None, base_url: str | None = None) -> str:
  """Return the sim exchange's `http://host:port` from an explicit URL or BOND_SIM_PORT."""
  if base_url:
    return base_url.rstrip("/")
  settings = settings or get_settings()
  return f"http://{settings.bond_sim_host}:{settings.bond_sim_port}"


def _sim_urls(client: Any, base_url: str) -> None:
  """Point a ccxt binance client's REST and WS URLs at the sim exchange."""
  ws_base = "ws" + base_url.removeprefix("http")
  api = client.urls["api"]
  api["public"] = f"{base_url}/api/v3"
  api["private"] = f"{base_url}/api/v3"
  api["v1"] = f"{base_url}/api/v1"
  api["fapiPublic"] = f"{base_url}/fapi/v1"
  api["fapiPublicV2"] = f"{base_url}/fapi/v2"
  api["fapiPublicV3"] = f"{base_url}/fapi/v3"
  api["dapiPublic"] = f"{base_url}/dapi/v1"
  ws = api.get("ws")
  if isinstance(ws, dict):
    # ccxt 4.5.x tells spot from futures sockets by "/stream" in the URL (the real spot
    # host is stream.binance.com), so the spot URL must contain it.
    ws["spot"] = ws["margin"] = f"{ws_base}/stream/ws"
    # linear .../ws is rewritten by ccxt to .../market/ws or .../public/ws.
    ws["linear"] = ws["inverse"] = f"{ws_base}/ws"


def _options(sim: bool, extra: dict[str, Any] | None) -> dict[str, Any]:
  config: dict[str, Any] = {"enableRateLimit": True, "options": {}}
  if sim:
    # Spot for prices and trades, USD-M perpetuals for the @forceOrder liquidation stream.
    config["options"] = {
      "fetchMarkets": {"types": ["spot", "linear"]},
      "fetchCurrencies": False,
      "tradesLimit": 10_000,
    }
  else:
    config["options"] = {"tradesLimit": 10_000}
  if extra:
    config["options"].update(extra)
  return config


def _class(module: Any, exchange_id: str, sim: bool) -> Any:
  name = "binance" if sim else exchange_id
  cls = getattr(module, name, None)
  if cls is None:
    raise ConfigError(f"unknown exchange {exchange_id!r} for ccxt; try binance, okx or bybit")
  return cls


def is_sim(settings: Settings | None, market: str | None) -> bool:
  """Return whether to talk to the sim exchange (explicit `market`, else BOND_MARKET)."""
  if market is not None:
    return market == "sim"
  return (settings or get_settings()).bond_market == "sim"


def create_rest(
  exchange_id: str,
  market: str | None = None,
  sim_url: str | None = None,
  settings: Settings | None = None,
  options: dict[str, Any] | None = None,
) -> Any:
  """Return a `ccxt.async_support` client for `exchange_id` (sim-backed in sim mode)."""
  return _create(ccxt_async, exchange_id, market, sim_url, settings, options)


def create_ws(
  exchange_id: str,
  market: str | None = None,
  sim_url: str | None = None,
  settings: Settings | None = None,
  options: dict[str, Any] | None = None,
) -> Any:
  """Return a `ccxt.pro` client for `exchange_id` (sim-backed in sim mode)."""
  return _create(ccxt_pro, exchange_id, market, sim_url, settings, options)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
  """Return the process's one TLS context for ccxt clients, with ccxt's CA bundle.

  Each ccxt client builds its own on its first request, loading the CA file: 30-90 ms
  with the event loop held, once per feed started (and the worker's windows waiting).
  """
  import certifi

  return ssl.create_default_context(cafile=certifi.where())


def _create(
  module: Any,
  exchange_id: str,
  market: str | None,
  sim_url: str | None,
  settings: Settings | None,
  options: dict[str, Any] | None,
) -> Any:
  sim = is_sim(settings, market)
  client = _class(module, exchange_id, sim)(_options(sim, options))
  if getattr(client, "verify", True) and hasattr(client, "ssl_context"):
    client.ssl_context = _ssl_context()
  if sim:
    _sim_urls(client, sim_base_url(settings, sim_url))
  return client


async def list_markets(
  exchange_id: str,
  settings: Settings | None = None,
  market: str | None = None,
  sim_url: str | None = None,
) -> set[str]:
  """Return the spot symbols (`BTC/USDT`, ...) the exchange lists, for validation."""
  client = create_rest(exchange_id, market=market, sim_url=sim_url, settings=settings)
  try:
    markets = await client.load_markets()
  finally:
    await client.close()
  return {sym for sym, m in markets.items() if m.get("spot")}


def perp_symbol(symbol: str) -> str:
  """Return the USDT-M perpetual of a spot pair: `BTC/USDT` -> `BTC/USDT:USDT`."""
  base, _, quote = symbol.partition("/")
  return f"{base}/{quote}:{quote}"
