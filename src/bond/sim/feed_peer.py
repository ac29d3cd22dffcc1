"""A tiny local JSON WebSocket feed for the custom connector's tests and demos.

    async with FeedPeer(port=0, rate=50, seed=1) as peer:
      url = peer.url  # ws://127.0.0.1:<port>/feed

Each client gets seeded trade messages (and, in between, status messages that a
mapping filter should skip). `inject(text)` sends raw text (bad payloads) to every
client, `drop_connections()` closes them, `received` keeps what clients sent.

Sample message: {"type": "trade", "seq": 7, "data": {"s": "BTCUSDT", "p": "68000.1",
"q": "0.012", "T": 1761053405012}}
"""

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from typing import Any, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

log = logging.getLogger(__name__)


class FeedPeer:
  """A JSON-over-WebSocket price feed on 127.0.0.1."""

  def __init__(
    self,
    port: int = 0,
    rate: float = 20.0,
    seed: int = 42,
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
    require_subscribe: bool = False,
    status_every: int = 5,
  ) -> None:
    self.port = port
    self.rate = rate
    self.seed = seed
    self.symbols = symbols
    self.require_subscribe = require_subscribe
    self.status_every = status_every
    self.received: list[Any] = []
    self.stats: dict[str, int] = {"connections": 0, "sent": 0}
    self._server: Server | None = None
    self._clients: set[ServerConnection] = set()
    self._subscribed = asyncio.Event()

  @property
  def url(self) -> str:
    """Return the feed's ws:// URL."""
    return f"ws://127.0.0.1:{self.port}/feed"

  async def start(self) -> None:
    """Start serving."""
    if self._server is not None:
      return
    self._server = await serve(
      self._handle, "127.0.0.1", self.port, max_size=None, compression=None
    )
    self.port = next(iter(self._server.sockets)).getsockname()[1]

  async def stop(self) -> None:
    """Close every client and stop serving; idempotent."""
    server, self._server = self._server, None
    if server is not None:
      server.close()
      await server.wait_closed()

  async def __aenter__(self) -> Self:
    await self.start()
    return self

  async def __aexit__(self, *exc: object) -> None:
    await self.stop()

  async def inject(self, text: str) -> None:
    """Send raw text to every connected client."""
    for ws in list(self._clients):
      with contextlib.suppress(ConnectionClosed):
        await ws.send(text)

  async def drop_connections(self) -> int:
    """Close every client connection; return how many."""
    clients = list(self._clients)
    for ws in clients:
      await ws.close(1011, "dropped by test peer")
    return len(clients)

  async def _handle(self, ws: ServerConnection) -> None:
    self.stats["connections"] += 1
    self._clients.add(ws)
    reader = asyncio.create_task(self._read(ws))
    try:
      if self.require_subscribe:
        await self._subscribed.wait()
      await self._send_loop(ws)
    except ConnectionClosed:
      pass
    finally:
      reader.cancel()
      self._clients.discard(ws)

  async def _read(self, ws: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
      async for message in ws:
        try:
          self.received.append(json.loads(message))
        except ValueError:
          self.received.append(message)
        self._subscribed.set()

  async def _send_loop(self, ws: ServerConnection) -> None:
    rng = random.Random(self.seed)
    prices = dict.fromkeys(self.symbols, 100.0)
    seq = 0
    interval = 1.0 / self.rate if self.rate > 0 else 3600.0
    while True:
      await asyncio.sleep(interval)
      seq += 1
      if self.status_every and seq % self.status_every == 0:
        msg: dict[str, Any] = {"type": "status", "seq": seq, "data": {"ok": True}}
      else:
        sym = rng.choice(self.symbols)
        prices[sym] *= math.exp(rng.gauss(0, 0.001))
        msg = {
          "type": "trade",
          "seq": seq,
          "data": {
            "s": sym,
            "p": f"{prices[sym]:.4f}",
            "q": f"{rng.uniform(0.001, 2):.4f}",
            "T": int(time.time() * 1000),
          },
        }
      await ws.send(json.dumps(msg))
      self.stats["sent"] += 1
