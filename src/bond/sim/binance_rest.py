"""The sim exchange's REST side: the part of Binance's spot and futures API that ccxt calls.

`exchangeInfo` (spot, USDT-M and an empty COIN-M), tickers, prices, recent trades and
aggTrades for backfill, with Binance's error bodies (`{"code": -1121, "msg": ...}`).
"""

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from bond.sim.market import QUOTE, Market, now_ms, ticker_24hr

MAX_LIMIT = 1000


def symbol_info(m: Market) -> dict[str, Any]:
  """Return one market's entry in the spot `exchangeInfo`."""
  return {
    "symbol": m.id,
    "status": "TRADING",
    "baseAsset": m.base,
    "baseAssetPrecision": 8,
    "quoteAsset": QUOTE,
    "quotePrecision": 8,
    "quoteAssetPrecision": 8,
    "orderTypes": ["LIMIT", "MARKET"],
    "icebergAllowed": True,
    "ocoAllowed": True,
    "isSpotTradingAllowed": True,
    "isMarginTradingAllowed": False,
    "filters": [
      {
        "filterType": "PRICE_FILTER",
        "minPrice": f"{m.tick:.8f}",
        "maxPrice": "1000000.00000000",
        "tickSize": f"{m.tick:.8f}",
      },
      {
        "filterType": "LOT_SIZE",
        "minQty": f"{m.step:.8f}",
        "maxQty": "9000000.00000000",
        "stepSize": f"{m.step:.8f}",
      },
      {"filterType": "NOTIONAL", "minNotional": "5.00000000", "maxNotional": "9000000.00000000"},
    ],
    "permissions": [],
    "permissionSets": [["SPOT"]],
  }


def _error(code: int, msg: str) -> JSONResponse:
  return JSONResponse({"code": code, "msg": msg}, status_code=400)


def _limit(request: Request, default: int = 500) -> int:
  try:
    return max(1, min(MAX_LIMIT, int(request.query_params.get("limit", default))))
  except ValueError:
    return default


class BinanceRest:
  """The REST endpoints over a dict of markets (`BTCUSDT` -> Market)."""

  def __init__(self, markets: dict[str, Market]) -> None:
    self.markets = markets

  def routes(self) -> list[BaseRoute]:
    """Return the REST routes, under Binance's paths."""
    return [
      Route("/api/v3/ping", self._ping),
      Route("/api/v3/time", self._time),
      Route("/api/v3/exchangeInfo", self._exchange_info),
      Route("/api/v3/ticker/24hr", self._ticker),
      Route("/api/v3/ticker/price", self._price),
      Route("/api/v3/trades", self._recent_trades),
      Route("/api/v3/aggTrades", self._agg_trades),
      Route("/fapi/v1/exchangeInfo", self._futures_info),
      Route("/dapi/v1/exchangeInfo", self._empty_info),
    ]

  def _lookup(self, request: Request) -> Market | JSONResponse:
    m = self.markets.get(request.query_params.get("symbol", "").upper())
    return _error(-1121, "Invalid symbol.") if m is None else m

  def _selected(self, request: Request) -> list[Market] | JSONResponse:
    if "symbol" in request.query_params:
      found = self._lookup(request)
      return [found] if isinstance(found, Market) else found
    if "symbols" in request.query_params:
      try:
        names = json.loads(request.query_params["symbols"])
      except ValueError:
        return _error(-1100, "Illegal characters found.")
      chosen = [self.markets.get(str(n).upper()) for n in names]
      if any(c is None for c in chosen):
        return _error(-1121, "Invalid symbol.")
      return [c for c in chosen if c is not None]
    return list(self.markets.values())

  async def _ping(self, request: Request) -> JSONResponse:
    return JSONResponse({})

  async def _time(self, request: Request) -> JSONResponse:
    return JSONResponse({"serverTime": now_ms()})

  async def _exchange_info(self, request: Request) -> JSONResponse:
    chosen = self._selected(request)
    if isinstance(chosen, JSONResponse):
      return chosen
    return JSONResponse(
      {
        "timezone": "UTC",
        "serverTime": now_ms(),
        "rateLimits": [
          {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}
        ],
        "exchangeFilters": [],
        "symbols": [symbol_info(m) for m in chosen],
      }
    )

  async def _futures_info(self, request: Request) -> JSONResponse:
    # USDT-M perpetuals mirror the spot pairs so ccxt can watch their @forceOrder stream.
    symbols = [
      {
        "symbol": m.id,
        "pair": m.id,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": m.open_ms,
        "status": "TRADING",
        "baseAsset": m.base,
        "quoteAsset": QUOTE,
        "marginAsset": QUOTE,
        "pricePrecision": m.price_decimals,
        "quantityPrecision": m.qty_decimals,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "filters": symbol_info(m)["filters"][:2],
        "orderTypes": ["LIMIT", "MARKET"],
        "timeInForce": ["GTC", "IOC"],
      }
      for m in self.markets.values()
    ]
    return JSONResponse(
      {
        "timezone": "UTC",
        "serverTime": now_ms(),
        "rateLimits": [],
        "exchangeFilters": [],
        "assets": [],
        "symbols": symbols,
      }
    )

  async def _empty_info(self, request: Request) -> JSONResponse:
    return JSONResponse(
      {
        "timezone": "UTC",
        "serverTime": now_ms(),
        "rateLimits": [],
        "exchangeFilters": [],
        "symbols": [],
      }
    )

  async def _ticker(self, request: Request) -> JSONResponse:
    chosen = self._selected(request)
    if isinstance(chosen, JSONResponse):
      return chosen
    ts = now_ms()
    body = [ticker_24hr(m, ts) for m in chosen]
    return JSONResponse(body[0] if "symbol" in request.query_params else body)

  async def _price(self, request: Request) -> JSONResponse:
    chosen = self._selected(request)
    if isinstance(chosen, JSONResponse):
      return chosen
    body = [{"symbol": m.id, "price": m.fmt_price(m.price)} for m in chosen]
    return JSONResponse(body[0] if "symbol" in request.query_params else body)

  async def _recent_trades(self, request: Request) -> JSONResponse:
    m = self._lookup(request)
    if isinstance(m, JSONResponse):
      return m
    rows = list(m.history)[-_limit(request) :]
    return JSONResponse(
      [
        {
          "id": t.id,
          "price": m.fmt_price(t.price),
          "qty": m.fmt_qty(t.qty),
          "quoteQty": f"{t.price * t.qty:.8f}",
          "time": t.ts,
          "isBuyerMaker": t.buyer_maker,
          "isBestMatch": True,
        }
        for t in rows
      ]
    )

  async def _agg_trades(self, request: Request) -> JSONResponse:
    m = self._lookup(request)
    if isinstance(m, JSONResponse):
      return m
    limit = _limit(request)
    q = request.query_params
    history = m.history
    try:
      if "fromId" in q:
        first = history[0].id if history else m.next_id
        offset = max(0, int(q["fromId"]) - first)
        rows = [history[i] for i in range(offset, min(len(history), offset + limit))]
      elif "startTime" in q or "endTime" in q:
        start_ms = int(q.get("startTime", 0))
        end_ms = int(q.get("endTime", 2**62))
        rows = [t for t in history if start_ms <= t.ts <= end_ms][:limit]
      else:
        rows = list(history)[-limit:]
    except ValueError:
      return _error(-1100, "Illegal characters found in a parameter.")
    return JSONResponse(
      [
        {
          "a": t.id,
          "p": m.fmt_price(t.price),
          "q": m.fmt_qty(t.qty),
          "f": t.id,
          "l": t.id,
          "T": t.ts,
          "m": t.buyer_maker,
          "M": True,
        }
        for t in rows
      ]
    )
