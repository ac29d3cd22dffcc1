"""A local exchange speaking the subset of Binance's REST and WebSocket API that ccxt uses.

Seeded random-walk prices for USDT pairs, trades at a configurable rate (batched per
tick), 24h tickers, liquidations on the matching USDT-M perpetuals, bounded history for
REST backfill. `drop_connections()` and `pause()` let tests break the stream on purpose.

    async with SimExchange(port=0, trades_per_sec=50, seed=7) as sim:
      print(sim.rest_url, sim.ws_url)
"""

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Self

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bond.sim._server import LocalServer

log = logging.getLogger(__name__)

# Starting prices of the simulated USDT pairs (roughly their 2024-2025 levels).
START_PRICES: dict[str, float] = {
  "BTC": 68000.0,
  "ETH": 3500.0,
  "SOL": 150.0,
  "DOGE": 0.15,
  "XRP": 0.55,
  "LINK": 15.0,
  "ADA": 0.45,
  "AVAX": 30.0,
  "DOT": 6.5,
  "LTC": 80.0,
  "TRX": 0.12,
  "MATIC": 0.7,
  "SHIB": 0.000022,
  "PEPE": 0.0000105,
  "BNB": 580.0,
  "TON": 6.5,
  "NEAR": 5.5,
  "SUI": 1.8,
  "APT": 8.5,
  "ARB": 0.8,
  "OP": 1.8,
  "UNI": 9.5,
  "ATOM": 7.5,
}
QUOTE = "USDT"
HISTORY = 5000


def _now_ms() -> int:
  return time.time_ns() // 1_000_000


@dataclass
class _Trade:
  id: int
  price: float
  qty: float
  ts: int
  buyer_maker: bool


@dataclass
class _Market:
  base: str
  price: float
  tick: float
  step: float
  # Ids continue across restarts of the sim, as a real exchange's do: they start from the
  # clock (in microseconds), which outruns any trade rate the sim produces.
  next_id: int = field(default_factory=lambda: time.time_ns() // 1000)
  history: deque[_Trade] = field(default_factory=lambda: deque(maxlen=HISTORY))
  open_price: float = 0.0
  high: float = 0.0
  low: float = math.inf
  volume: float = 0.0
  quote_volume: float = 0.0
  count: int = 0
  open_ms: int = 0
  carry: float = 0.0

  @property
  def id(self) -> str:
    return f"{self.base}{QUOTE}"

  @property
  def price_decimals(self) -> int:
    return max(0, round(-math.log10(self.tick)))

  @property
  def qty_decimals(self) -> int:
    return max(0, round(-math.log10(self.step)))

  def fmt_price(self, value: float) -> str:
    return f"{value:.{self.price_decimals}f}"

  def fmt_qty(self, value: float) -> str:
    return f"{value:.{self.qty_decimals}f}"


def _market(base: str, price: float) -> _Market:
  tick = max(1e-8, 10.0 ** (math.floor(math.log10(price)) - 6))
  step = min(1.0, 10.0 ** math.floor(math.log10(1.0 / price)))
  return _Market(
    base=base, price=price, tick=tick, step=step, open_price=price, high=price, low=price
  )


class _Conn:
  """One WebSocket client: its subscriptions and a bounded outgoing queue."""

  def __init__(self, ws: WebSocket, combined: bool, max_queue: int) -> None:
    self.ws = ws
    self.combined = combined
    self.streams: set[str] = set()
    self.out: asyncio.Queue[str | None] = asyncio.Queue(maxsize=max_queue)
    self.closed = False

  def push(self, stream: str, payload: str) -> bool:
    if self.closed:
      return True
    text = f'{{"stream":"{stream}","data":{payload}}}' if self.combined else payload
    try:
      self.out.put_nowait(text)
    except asyncio.QueueFull:
      return False
    return True


class SimExchange:
  """A Binance-shaped exchange on 127.0.0.1 for ccxt in sim mode, tests and benchmarks."""

  def __init__(
    self,
    port: int = 0,
    trades_per_sec: float = 20.0,
    seed: int = 42,
    symbols: list[str] | None = None,
    host: str = "127.0.0.1",
    tick_sec: float = 0.05,
    ticker_interval_sec: float = 1.0,
    liquidation_ratio: float = 0.01,
    volatility: float = 0.0002,
    max_client_queue: int = 200_000,
  ) -> None:
    self.trades_per_sec = trades_per_sec
    self.tick_sec = tick_sec
    self.ticker_interval_sec = ticker_interval_sec
    self.liquidation_ratio = liquidation_ratio
    self.volatility = volatility
    self.max_client_queue = max_client_queue
    self.rng = random.Random(seed)
    bases = [s.upper().split("/")[0] for s in symbols] if symbols else list(START_PRICES)
    self.markets: dict[str, _Market] = {}
    for base in bases:
      base = base.removesuffix(QUOTE) if base.endswith(QUOTE) and base != QUOTE else base
      self.markets[f"{base}{QUOTE}"] = _market(base, START_PRICES.get(base, 10.0))
    self.stats: dict[str, int] = {"trades": 0, "liquidations": 0, "connections": 0, "dropped": 0}
    self._conns: set[_Conn] = set()
    self._subs: dict[str, set[_Conn]] = {}
    self._paused = False
    self._gen_task: asyncio.Task[None] | None = None
    self._server = LocalServer(self._app(), host=host, port=port)

  # ------------------------------------------------------------------ lifecycle

  @property
  def port(self) -> int:
    """Return the bound port (after start)."""
    return self._server.port

  @property
  def host(self) -> str:
    """Return the host the server listens on."""
    return self._server.host

  @property
  def rest_url(self) -> str:
    """Return the base URL of the spot REST API (`.../api/v3`)."""
    return f"http://{self.host}:{self.port}/api/v3"

  @property
  def ws_url(self) -> str:
    """Return the spot raw-stream WebSocket URL ccxt appends `/<n>` to."""
    return f"ws://{self.host}:{self.port}/stream/ws"

  @property
  def base_url(self) -> str:
    """Return `http://host:port`."""
    return f"http://{self.host}:{self.port}"

  async def start(self) -> None:
    """Start serving and generating trades."""
    if self._gen_task is not None:
      return
    now = _now_ms()
    for m in self.markets.values():
      m.open_ms = now
    await self._server.start()
    self._gen_task = asyncio.create_task(self._generate())
    log.info("sim exchange on %s (%d symbols)", self.base_url, len(self.markets))

  async def stop(self) -> None:
    """Stop generating, close every socket and the server; idempotent."""
    task, self._gen_task = self._gen_task, None
    if task is not None:
      task.cancel()
      with contextlib.suppress(asyncio.CancelledError):
        await task
    await self.drop_connections()
    await self._server.stop()

  async def __aenter__(self) -> Self:
    await self.start()
    return self

  async def __aexit__(self, *exc: object) -> None:
    await self.stop()

  def pause(self) -> None:
    """Stop producing trades (REST keeps answering)."""
    self._paused = True

  def resume(self) -> None:
    """Produce trades again."""
    self._paused = False

  async def drop_connections(self) -> int:
    """Close every WebSocket connection (clients must reconnect); return how many."""
    conns = list(self._conns)
    for conn in conns:
      await self._close_conn(conn, 1011)
    return len(conns)

  def last_trade_id(self, symbol: str) -> int:
    """Return the last trade id generated for `BTCUSDT` or `BTC/USDT`."""
    return self.markets[symbol.replace("/", "").upper()].next_id - 1

  def symbols(self) -> list[str]:
    """Return the unified symbols served (`BTC/USDT`, ...)."""
    return [f"{m.base}/{QUOTE}" for m in self.markets.values()]

  # ------------------------------------------------------------------ generation

  async def _generate(self) -> None:
    last_ticker = time.monotonic()
    last = time.monotonic()
    while True:
      await asyncio.sleep(self.tick_sec)
      now = time.monotonic()
      dt, last = now - last, now
      if self._paused:
        continue
      ts = _now_ms()
      for m in self.markets.values():
        m.carry += self.trades_per_sec * dt
        n = int(m.carry)
        if n:
          m.carry -= n
          self._trades(m, n, ts)
      if now - last_ticker >= self.ticker_interval_sec:
        last_ticker = now
        for m in self.markets.values():
          self._tickers(m, ts)

  def _trades(self, m: _Market, n: int, ts: int) -> None:
    rng = self.rng
    lower = m.id.lower()
    trade_subs = self._subs.get(f"{lower}@trade")
    agg_subs = self._subs.get(f"{lower}@aggTrade")
    liq_subs = self._subs.get(f"{lower}@forceOrder")
    for _ in range(n):
      m.price *= math.exp(self.volatility * rng.gauss(0.0, 1.0))
      notional = math.exp(rng.gauss(6.5, 1.2))
      qty = max(m.step, round(notional / m.price / m.step) * m.step)
      trade = _Trade(m.next_id, m.price, qty, ts, rng.random() < 0.5)
      m.next_id += 1
      m.history.append(trade)
      m.high = max(m.high, m.price)
      m.low = min(m.low, m.price)
      m.volume += qty
      m.quote_volume += qty * m.price
      m.count += 1
      self.stats["trades"] += 1
      p, q = m.fmt_price(trade.price), m.fmt_qty(qty)
      maker = "true" if trade.buyer_maker else "false"
      if trade_subs:
        msg = (
          f'{{"e":"trade","E":{ts},"s":"{m.id}","t":{trade.id},"p":"{p}","q":"{q}",'
          f'"T":{ts},"m":{maker},"M":true}}'
        )
        self._fanout(trade_subs, f"{lower}@trade", msg)
      if agg_subs:
        msg = (
          f'{{"e":"aggTrade","E":{ts},"s":"{m.id}","a":{trade.id},"p":"{p}","q":"{q}",'
          f'"f":{trade.id},"l":{trade.id},"T":{ts},"m":{maker},"M":true}}'
        )
        self._fanout(agg_subs, f"{lower}@aggTrade", msg)
      if rng.random() < self.liquidation_ratio:
        self.stats["liquidations"] += 1
        if liq_subs:
          self._fanout(liq_subs, f"{lower}@forceOrder", self._force_order(m, ts))

  def _force_order(self, m: _Market, ts: int) -> str:
    side = "SELL" if self.rng.random() < 0.5 else "BUY"
    price = m.price * (0.999 if side == "SELL" else 1.001)
    qty = m.fmt_qty(
      max(m.step, round(math.exp(self.rng.gauss(8.0, 1.0)) / m.price / m.step) * m.step)
    )
    order = {
      "s": m.id,
      "S": side,
      "o": "LIMIT",
      "f": "IOC",
      "q": qty,
      "p": m.fmt_price(price),
      "ap": m.fmt_price(m.price),
      "X": "FILLED",
      "l": qty,
      "z": qty,
      "T": ts,
    }
    return json.dumps({"e": "forceOrder", "E": ts, "o": order}, separators=(",", ":"))

  def _tickers(self, m: _Market, ts: int) -> None:
    lower = m.id.lower()
    mini = self._subs.get(f"{lower}@miniTicker")
    full = self._subs.get(f"{lower}@ticker")
    if mini:
      msg = {
        "e": "24hrMiniTicker",
        "E": ts,
        "s": m.id,
        "c": m.fmt_price(m.price),
        "o": m.fmt_price(m.open_price),
        "h": m.fmt_price(m.high),
        "l": m.fmt_price(m.low),
        "v": m.fmt_qty(m.volume),
        "q": f"{m.quote_volume:.8f}",
      }
      self._fanout(mini, f"{lower}@miniTicker", json.dumps(msg, separators=(",", ":")))
    if full:
      t = self._ticker_24hr(m, ts)
      msg = {
        "e": "24hrTicker",
        "E": ts,
        "s": m.id,
        "p": t["priceChange"],
        "P": t["priceChangePercent"],
        "w": t["weightedAvgPrice"],
        "x": t["prevClosePrice"],
        "c": t["lastPrice"],
        "Q": t["lastQty"],
        "b": t["bidPrice"],
        "B": t["bidQty"],
        "a": t["askPrice"],
        "A": t["askQty"],
        "o": t["openPrice"],
        "h": t["highPrice"],
        "l": t["lowPrice"],
        "v": t["volume"],
        "q": t["quoteVolume"],
        "O": t["openTime"],
        "C": t["closeTime"],
        "F": t["firstId"],
        "L": t["lastId"],
        "n": t["count"],
      }
      self._fanout(full, f"{lower}@ticker", json.dumps(msg, separators=(",", ":")))

  def _fanout(self, conns: set[_Conn], stream: str, payload: str) -> None:
    for conn in list(conns):
      if not conn.push(stream, payload):
        # Like Binance, disconnect a client that cannot keep up instead of buffering forever.
        self.stats["dropped"] += 1
        conn.closed = True
        asyncio.get_running_loop().create_task(self._close_conn(conn, 1008))

  def _ticker_24hr(self, m: _Market, ts: int) -> dict[str, Any]:
    last = m.history[-1] if m.history else None
    change = m.price - m.open_price
    wavg = m.quote_volume / m.volume if m.volume else m.price
    spread = m.tick
    return {
      "symbol": m.id,
      "priceChange": m.fmt_price(change),
      "priceChangePercent": f"{100 * change / m.open_price:.3f}",
      "weightedAvgPrice": m.fmt_price(wavg),
      "prevClosePrice": m.fmt_price(m.open_price),
      "lastPrice": m.fmt_price(m.price),
      "lastQty": m.fmt_qty(last.qty if last else 0.0),
      "bidPrice": m.fmt_price(m.price - spread),
      "bidQty": m.fmt_qty(m.step * 100),
      "askPrice": m.fmt_price(m.price + spread),
      "askQty": m.fmt_qty(m.step * 100),
      "openPrice": m.fmt_price(m.open_price),
      "highPrice": m.fmt_price(m.high if m.count else m.price),
      "lowPrice": m.fmt_price(m.low if m.count else m.price),
      "volume": m.fmt_qty(m.volume),
      "quoteVolume": f"{m.quote_volume:.8f}",
      "openTime": m.open_ms,
      "closeTime": ts,
      "firstId": m.history[0].id if m.history else -1,
      "lastId": last.id if last else -1,
      "count": m.count,
    }

  # ------------------------------------------------------------------ HTTP

  def _app(self) -> Starlette:
    routes = [
      Route("/api/v3/ping", self._ping),
      Route("/api/v3/time", self._time),
      Route("/api/v3/exchangeInfo", self._exchange_info),
      Route("/api/v3/ticker/24hr", self._ticker),
      Route("/api/v3/ticker/price", self._price),
      Route("/api/v3/trades", self._recent_trades),
      Route("/api/v3/aggTrades", self._agg_trades),
      Route("/fapi/v1/exchangeInfo", self._futures_info),
      Route("/dapi/v1/exchangeInfo", self._empty_info),
      WebSocketRoute("/ws", self._ws),
      WebSocketRoute("/ws/{name:path}", self._ws),
      WebSocketRoute("/stream", self._ws),
      WebSocketRoute("/stream/ws", self._ws),
      WebSocketRoute("/stream/ws/{name:path}", self._ws),
      WebSocketRoute("/market/ws/{name:path}", self._ws),
      WebSocketRoute("/public/ws/{name:path}", self._ws),
    ]
    return Starlette(routes=routes)

  def _lookup(self, request: Request) -> _Market | JSONResponse:
    sym = request.query_params.get("symbol", "")
    m = self.markets.get(sym.upper())
    if m is None:
      return JSONResponse({"code": -1121, "msg": "Invalid symbol."}, status_code=400)
    return m

  def _selected(self, request: Request) -> list[_Market] | JSONResponse:
    if "symbol" in request.query_params:
      found = self._lookup(request)
      return [found] if isinstance(found, _Market) else found
    if "symbols" in request.query_params:
      try:
        names = json.loads(request.query_params["symbols"])
      except ValueError:
        return JSONResponse({"code": -1100, "msg": "Illegal characters found."}, status_code=400)
      chosen = [self.markets.get(str(n).upper()) for n in names]
      if any(c is None for c in chosen):
        return JSONResponse({"code": -1121, "msg": "Invalid symbol."}, status_code=400)
      return [c for c in chosen if c is not None]
    return list(self.markets.values())

  async def _ping(self, request: Request) -> JSONResponse:
    return JSONResponse({})

  async def _time(self, request: Request) -> JSONResponse:
    return JSONResponse({"serverTime": _now_ms()})

  def _symbol_info(self, m: _Market) -> dict[str, Any]:
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

  async def _exchange_info(self, request: Request) -> JSONResponse:
    chosen = self._selected(request)
    if isinstance(chosen, JSONResponse):
      return chosen
    return JSONResponse(
      {
        "timezone": "UTC",
        "serverTime": _now_ms(),
        "rateLimits": [
          {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}
        ],
        "exchangeFilters": [],
        "symbols": [self._symbol_info(m) for m in chosen],
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
        "filters": self._symbol_info(m)["filters"][:2],
        "orderTypes": ["LIMIT", "MARKET"],
        "timeInForce": ["GTC", "IOC"],
      }
      for m in self.markets.values()
    ]
    return JSONResponse(
      {
        "timezone": "UTC",
        "serverTime": _now_ms(),
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
        "serverTime": _now_ms(),
        "rateLimits": [],
        "exchangeFilters": [],
        "symbols": [],
      }
    )

  async def _ticker(self, request: Request) -> JSONResponse:
    chosen = self._selected(request)
    if isinstance(chosen, JSONResponse):
      return chosen
    ts = _now_ms()
    body = [self._ticker_24hr(m, ts) for m in chosen]
    return JSONResponse(body[0] if "symbol" in request.query_params else body)

  async def _price(self, request: Request) -> JSONResponse:
    chosen = self._selected(request)
    if isinstance(chosen, JSONResponse):
      return chosen
    body = [{"symbol": m.id, "price": m.fmt_price(m.price)} for m in chosen]
    return JSONResponse(body[0] if "symbol" in request.query_params else body)

  @staticmethod
  def _limit(request: Request, default: int = 500) -> int:
    try:
      return max(1, min(1000, int(request.query_params.get("limit", default))))
    except ValueError:
      return default

  async def _recent_trades(self, request: Request) -> JSONResponse:
    m = self._lookup(request)
    if isinstance(m, JSONResponse):
      return m
    limit = self._limit(request)
    rows = list(m.history)[-limit:]
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
    limit = self._limit(request)
    q = request.query_params
    history = m.history
    try:
      if "fromId" in q:
        start = int(q["fromId"])
        first = history[0].id if history else m.next_id
        offset = max(0, start - first)
        rows = [history[i] for i in range(offset, min(len(history), offset + limit))]
      elif "startTime" in q or "endTime" in q:
        start_ms = int(q.get("startTime", 0))
        end_ms = int(q.get("endTime", 2**62))
        rows = [t for t in history if start_ms <= t.ts <= end_ms][:limit]
      else:
        rows = list(history)[-limit:]
    except ValueError:
      return JSONResponse(
        {"code": -1100, "msg": "Illegal characters found in a parameter."}, status_code=400
      )
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

  # ------------------------------------------------------------------ WebSocket

  async def _ws(self, ws: WebSocket) -> None:
    await ws.accept()
    path = ws.url.path
    conn = _Conn(ws, combined=path.rstrip("/") == "/stream", max_queue=self.max_client_queue)
    self._conns.add(conn)
    self.stats["connections"] += 1
    name = ws.path_params.get("name", "")
    initial = [s for s in name.split("/") if "@" in s]
    if conn.combined and ws.query_params.get("streams"):
      initial += ws.query_params["streams"].split("/")
    self._subscribe(conn, initial)
    sender = asyncio.create_task(self._sender(conn))
    try:
      while True:
        text = await ws.receive_text()
        self._command(conn, text)
    except (WebSocketDisconnect, RuntimeError):
      pass
    finally:
      sender.cancel()
      with contextlib.suppress(asyncio.CancelledError):
        await sender
      self._forget(conn)

  def _command(self, conn: _Conn, text: str) -> None:
    try:
      msg = json.loads(text)
      method, params, req_id = msg.get("method"), msg.get("params") or [], msg.get("id")
    except (ValueError, AttributeError):
      conn.push("", json.dumps({"error": {"code": 2, "msg": "Invalid JSON"}}))
      return
    if method == "SUBSCRIBE":
      self._subscribe(conn, [str(p) for p in params])
      reply: dict[str, Any] = {"result": None, "id": req_id}
    elif method == "UNSUBSCRIBE":
      for stream in params:
        conn.streams.discard(stream)
        self._subs.get(stream, set()).discard(conn)
      reply = {"result": None, "id": req_id}
    elif method == "LIST_SUBSCRIPTIONS":
      reply = {"result": sorted(conn.streams), "id": req_id}
    else:
      reply = {"error": {"code": 1, "msg": f"Unknown method {method!r}"}, "id": req_id}
    # Replies are never wrapped, even on combined streams.
    with contextlib.suppress(asyncio.QueueFull):
      conn.out.put_nowait(json.dumps(reply))

  def _subscribe(self, conn: _Conn, streams: list[str]) -> None:
    for stream in streams:
      conn.streams.add(stream)
      self._subs.setdefault(stream, set()).add(conn)

  async def _sender(self, conn: _Conn) -> None:
    while True:
      text = await conn.out.get()
      if text is None:
        return
      await conn.ws.send_text(text)

  def _forget(self, conn: _Conn) -> None:
    conn.closed = True
    self._conns.discard(conn)
    for stream in conn.streams:
      self._subs.get(stream, set()).discard(conn)

  async def _close_conn(self, conn: _Conn, code: int) -> None:
    self._forget(conn)
    with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
      await conn.ws.close(code)
