"""Any JSON WebSocket feed, mapped declaratively (dotted paths) or by an SDK user's function."""

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from bond.config import Settings, get_settings
from bond.connectors.backoff import Backoff
from bond.connectors.base import Connector, now_ms
from bond.connectors.ccxt_common import finite_number
from bond.schemas import CustomEvent, CustomMapping, CustomSource

log = logging.getLogger(__name__)

Mapper = Callable[[dict[str, Any]], CustomEvent | None]
_MISSING = object()
# What a user's mapper may raise on an odd message; it is counted and skipped.
MAPPER_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)


def get_path(message: Any, path: str) -> Any:
  """Return the value at a dotted path (`data.p`, `items.0.price`), or a sentinel if absent."""
  node = message
  for part in path.split("."):
    if isinstance(node, dict) and part in node:
      node = node[part]
    elif (
      isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node)
    ):
      node = node[int(part)]
    else:
      return _MISSING
  return node


def _number(value: Any) -> float | None:
  return None if value is _MISSING else finite_number(value)


def _epoch_ms(value: Any) -> int | None:
  number = _number(value)
  if number is None and isinstance(value, str):
    try:
      return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
      return None
  if number is None or number <= 0:
    return None
  # Seconds (1.7e9), milliseconds (1.7e12), microseconds (1.7e15), nanoseconds (1.7e18).
  if number < 1e11:
    return int(number * 1000)
  if number < 1e14:
    return int(number)
  if number < 1e17:
    return int(number / 1000)
  return int(number / 1_000_000)


class InvalidMessage(ValueError):
  """A message that matched the filter but cannot be mapped."""


def map_message(message: dict[str, Any], mapping: CustomMapping, source: str) -> CustomEvent | None:
  """Return the CustomEvent of one message; None if filtered out; raise InvalidMessage if bad.

  Sample (with mapping {"ts": "data.T", "price": "data.p", "amount": "data.q",
  "symbol": "data.s", "filter": {"type": "trade"}}):
  {"type": "trade", "seq": 7, "data": {"s": "BTCUSDT", "p": "68000.1", "q": "0.012",
   "T": 1761053405012}}
  """
  for path, expected in (mapping.filter or {}).items():
    if get_path(message, path) != expected:
      return None
  ts = now_ms()
  if mapping.ts:
    found = _epoch_ms(get_path(message, mapping.ts))
    if found is None:
      raise InvalidMessage(f"no usable time at {mapping.ts!r}")
    ts = found
  price = amount = None
  if mapping.price:
    price = _number(get_path(message, mapping.price))
    if price is None or price <= 0:
      raise InvalidMessage(f"no positive finite price at {mapping.price!r}")
  if mapping.amount:
    amount = _number(get_path(message, mapping.amount))
    if amount is None or amount < 0:
      raise InvalidMessage(f"no non-negative finite amount at {mapping.amount!r}")
  symbol = None
  if mapping.symbol:
    raw = get_path(message, mapping.symbol)
    if raw is _MISSING or raw is None:
      raise InvalidMessage(f"no symbol at {mapping.symbol!r}")
    symbol = str(raw)
  return CustomEvent(
    ts=ts,
    ts_ingest=now_ms(),
    source=source,
    payload=message,
    symbol=symbol,
    price=price,
    amount=amount,
  )


class CustomWsFeed(Connector):
  """CustomEvents from any ws:// or wss:// JSON feed.

  `async with CustomWsFeed(url, mapping=CustomMapping(price="data.p"), source="my-feed")
  as feed: async for ev in feed: ...`; or pass `mapper=lambda msg: CustomEvent(...)`.
  Or build from a spec: `CustomWsFeed.from_source(CustomSource(...))`.
  `stats`: messages, mapped, filtered, invalid, connects, disconnects, errors.
  """

  source = "custom"

  def __init__(
    self,
    url: str | CustomSource,
    mapping: CustomMapping | None = None,
    source: str | None = None,
    subscribe: dict[str, Any] | list[Any] | None = None,
    mapper: Mapper | None = None,
    ping_sec: float = 20.0,
    max_message_bytes: int = 1 << 20,
    backoff: Backoff | None = None,
    settings: Settings | None = None,
    heartbeat_sec: float = 1.0,
  ) -> None:
    super().__init__(heartbeat_sec=heartbeat_sec)
    self.settings = settings or get_settings()
    if isinstance(url, CustomSource):
      # A stream spec's source carries url, mapping, subscribe and its stable id.
      mapping = mapping or url.mapping
      subscribe = subscribe if subscribe is not None else url.subscribe
      source = source or url.source_id
      url = url.url
    self.url = url
    self.mapping = mapping or CustomMapping.model_validate({})
    self.source_id = (
      source or CustomSource.model_validate({"url": url, "mapping": self.mapping}).source_id
    )
    self.subscribe = subscribe
    self.mapper = mapper
    self.ping_sec = ping_sec
    self.max_message_bytes = max_message_bytes
    self.backoff = backoff or Backoff(base_sec=0.5, max_sec=30.0)
    self.stats.update(messages=0, mapped=0, filtered=0, invalid=0, connects=0, disconnects=0)

  @classmethod
  def from_source(
    cls, spec: CustomSource, settings: Settings | None = None, **kwargs: Any
  ) -> "CustomWsFeed":
    """Build a feed from a stream spec's custom source (url, mapping, subscribe)."""
    return cls(
      spec.url,
      mapping=spec.mapping,
      source=spec.source_id,
      subscribe=spec.subscribe,
      settings=settings,
      **kwargs,
    )

  def feeds(self) -> Iterable[tuple[str, str]]:
    return [("", self.source_id)]

  def workers(self) -> Iterable[Coroutine[Any, Any, None]]:
    return [self._run()]

  async def _run(self) -> None:
    failures = 0
    while True:
      try:
        async with connect(
          self.url,
          ping_interval=self.ping_sec,
          ping_timeout=self.ping_sec,
          max_size=self.max_message_bytes,
          open_timeout=10,
        ) as ws:
          self.stats["connects"] += 1
          if self.subscribe is not None:
            await ws.send(json.dumps(self.subscribe))
          async for raw in ws:
            failures = 0
            await self._on_message(raw)
        reason = "closed"
      except (OSError, TimeoutError, InvalidHandshake, InvalidURI, WebSocketException) as exc:
        # ConnectionClosed (incl. 1009 message too big), refused connections, bad handshakes.
        reason = repr(exc)
      self.stats["disconnects"] += 1
      failures += 1
      delay = self.backoff.delay(failures)
      log.warning("custom feed %s %s; reconnect in %.2fs", self.source_id, reason, delay)
      await asyncio.sleep(delay)

  async def _on_message(self, raw: str | bytes) -> None:
    self.stats["messages"] += 1
    try:
      message = json.loads(raw)
    except ValueError:
      self.stats["invalid"] += 1
      return
    items = message if isinstance(message, list) else [message]
    for item in items:
      if not isinstance(item, dict):
        self.stats["invalid"] += 1
        continue
      try:
        ev = self.mapper(item) if self.mapper else map_message(item, self.mapping, self.source_id)
      except MAPPER_ERRORS as exc:
        self.stats["invalid"] += 1
        log.debug("custom feed %s skipped a message: %s", self.source_id, exc)
        continue
      if ev is None:
        self.stats["filtered"] += 1
        continue
      self.stats["mapped"] += 1
      await self.emit(ev, ("", self.source_id))
