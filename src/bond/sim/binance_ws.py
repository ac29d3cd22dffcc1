"""The sim exchange's WebSocket side: Binance's market streams, subscriptions and fan-out.

Clients connect to a raw stream (`/ws/<stream>`), a combined one (`/stream?streams=a/b`,
frames wrapped as `{"stream":..,"data":..}`), and may SUBSCRIBE / UNSUBSCRIBE /
LIST_SUBSCRIPTIONS later. Each socket has a bounded send queue; like Binance, a client that
cannot keep up is disconnected (1008) rather than buffered forever.
"""

import asyncio
import contextlib
import json
import math
import random
from typing import Any

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bond.sim.market import Market, Trade, ticker_24hr

PATHS = (
  "/ws",
  "/ws/{name:path}",
  "/stream",
  "/stream/ws",
  "/stream/ws/{name:path}",
  "/market/ws/{name:path}",
  "/public/ws/{name:path}",
)


# ---------------------------------------------------------------------- payloads


def trade_msg(m: Market, trade: Trade) -> str:
  """Return the `<symbol>@trade` payload of one trade."""
  maker = "true" if trade.buyer_maker else "false"
  return (
    f'{{"e":"trade","E":{trade.ts},"s":"{m.id}","t":{trade.id},"p":"{m.fmt_price(trade.price)}",'
    f'"q":"{m.fmt_qty(trade.qty)}","T":{trade.ts},"m":{maker},"M":true}}'
  )


def agg_trade_msg(m: Market, trade: Trade) -> str:
  """Return the `<symbol>@aggTrade` payload of one trade (one trade per aggregate)."""
  maker = "true" if trade.buyer_maker else "false"
  return (
    f'{{"e":"aggTrade","E":{trade.ts},"s":"{m.id}","a":{trade.id},"p":"{m.fmt_price(trade.price)}",'
    f'"q":"{m.fmt_qty(trade.qty)}","f":{trade.id},"l":{trade.id},"T":{trade.ts},"m":{maker},"M":true}}'
  )


def force_order_msg(m: Market, rng: random.Random, ts: int) -> str:
  """Return a `<symbol>@forceOrder` payload: a liquidation near the current price."""
  side = "SELL" if rng.random() < 0.5 else "BUY"
  price = m.price * (0.999 if side == "SELL" else 1.001)
  qty = m.fmt_qty(max(m.step, round(math.exp(rng.gauss(8.0, 1.0)) / m.price / m.step) * m.step))
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
  return _dump({"e": "forceOrder", "E": ts, "o": order})


def mini_ticker_msg(m: Market, ts: int) -> str:
  """Return the `<symbol>@miniTicker` payload."""
  return _dump(
    {
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
  )


# The short names of the 24hrTicker event for the long names of the REST ticker.
_TICKER_FIELDS = {
  "p": "priceChange", "P": "priceChangePercent", "w": "weightedAvgPrice",
  "x": "prevClosePrice", "c": "lastPrice", "Q": "lastQty", "b": "bidPrice", "B": "bidQty",
  "a": "askPrice", "A": "askQty", "o": "openPrice", "h": "highPrice", "l": "lowPrice",
  "v": "volume", "q": "quoteVolume", "O": "openTime", "C": "closeTime", "F": "firstId",
  "L": "lastId", "n": "count",
}  # fmt: skip


def ticker_msg(m: Market, ts: int) -> str:
  """Return the `<symbol>@ticker` payload (the 24h ticker in the stream's short names)."""
  t = ticker_24hr(m, ts)
  return _dump(
    {"e": "24hrTicker", "E": ts, "s": m.id, **{k: t[v] for k, v in _TICKER_FIELDS.items()}}
  )


def _dump(body: dict[str, Any]) -> str:
  return json.dumps(body, separators=(",", ":"))


# ---------------------------------------------------------------------- connections


class Conn:
  """One WebSocket client: its subscriptions and a bounded outgoing queue."""

  def __init__(self, ws: WebSocket, combined: bool, max_queue: int) -> None:
    self.ws = ws
    self.combined = combined
    self.streams: set[str] = set()
    self.out: asyncio.Queue[str | None] = asyncio.Queue(maxsize=max_queue)
    self.closed = False

  def push(self, stream: str, payload: str) -> bool:
    """Queue one payload (wrapped on combined streams); False when the queue is full."""
    if self.closed:
      return True
    text = f'{{"stream":"{stream}","data":{payload}}}' if self.combined else payload
    try:
      self.out.put_nowait(text)
    except asyncio.QueueFull:
      return False
    return True


class StreamHub:
  """Every open socket and who subscribed to which stream; fans payloads out to them."""

  def __init__(self, stats: dict[str, int], max_client_queue: int) -> None:
    self.stats = stats
    self.max_client_queue = max_client_queue
    self._conns: set[Conn] = set()
    self._subs: dict[str, set[Conn]] = {}

  def routes(self) -> list[BaseRoute]:
    """Return the WebSocket routes Binance's stream URLs use."""
    return [WebSocketRoute(path, self._serve) for path in PATHS]

  def subscribers(self, stream: str) -> set[Conn] | None:
    """Return the sockets subscribed to `stream` (None or empty when nobody listens)."""
    return self._subs.get(stream)

  def fanout(self, conns: set[Conn], stream: str, payload: str) -> None:
    """Queue a payload for each socket; disconnect the ones that cannot keep up."""
    for conn in list(conns):
      if not conn.push(stream, payload):
        self.stats["dropped"] += 1
        conn.closed = True
        asyncio.get_running_loop().create_task(self.close(conn, 1008))

  async def drop_all(self) -> int:
    """Close every socket (1011, clients must reconnect); return how many."""
    conns = list(self._conns)
    for conn in conns:
      await self.close(conn, 1011)
    return len(conns)

  async def close(self, conn: Conn, code: int) -> None:
    """Forget a socket and close it with `code`."""
    self._forget(conn)
    with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
      await conn.ws.close(code)

  async def _serve(self, ws: WebSocket) -> None:
    await ws.accept()
    conn = Conn(ws, combined=ws.url.path.rstrip("/") == "/stream", max_queue=self.max_client_queue)
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
        self._command(conn, await ws.receive_text())
    except (WebSocketDisconnect, RuntimeError):
      pass
    finally:
      sender.cancel()
      with contextlib.suppress(asyncio.CancelledError):
        await sender
      self._forget(conn)

  def _command(self, conn: Conn, text: str) -> None:
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

  def _subscribe(self, conn: Conn, streams: list[str]) -> None:
    for stream in streams:
      conn.streams.add(stream)
      self._subs.setdefault(stream, set()).add(conn)

  async def _sender(self, conn: Conn) -> None:
    while True:
      text = await conn.out.get()
      if text is None:
        return
      await conn.ws.send_text(text)

  def _forget(self, conn: Conn) -> None:
    conn.closed = True
    self._conns.discard(conn)
    for stream in conn.streams:
      self._subs.get(stream, set()).discard(conn)
