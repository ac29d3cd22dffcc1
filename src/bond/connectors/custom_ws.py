"""Any JSON WebSocket feed, mapped declaratively (dotted paths) or by an SDK user's function.

A custom feed is a stranger's server, so it is fenced in (issue 13):
- it reaches only public addresses, or what BOND_CUSTOM_ALLOW lists: every connect resolves
  the host, checks every address (bond.netguard) and connects to the checked address with
  the URL's Host and TLS name; redirects are refused;
- a message over BOND_CUSTOM_MAX_MESSAGE_BYTES closes the connection (1009, then reconnect
  with backoff), one nested deeper than 32 levels is invalid (counted and skipped); messages (each item of a JSON array counts) beyond
  BOND_CUSTOM_MAX_MSGS_PER_SEC are dropped unread and counted in `stats["dropped"]`;
- an event time further than BOND_CUSTOM_TS_SKEW_MS from the receive time is replaced by the
  receive time and counted in `stats["clamped"]`: a feed with a wrong clock (or seconds
  taken for milliseconds) cannot stamp events into the far future or past of its windows.
"""

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException
from websockets.uri import parse_uri

from bond.config import Settings, get_settings
from bond.connectors.backoff import Backoff
from bond.connectors.base import Connector, now_ms
from bond.connectors.ccxt_common import finite_number
from bond.netguard import AllowList, BlockedAddress, open_checked
from bond.schemas import CustomEvent, CustomMapping, CustomSource
from bond.spec_limits import json_depth

log = logging.getLogger(__name__)

Mapper = Callable[[dict[str, Any]], CustomEvent | None]
_MISSING = object()
# What a user's mapper may raise on an odd message; it is counted and skipped.
MAPPER_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)
# Deeper messages are invalid: the payload travels as JSON, and pydantic refuses to
# serialise beyond ~255 levels (a poison record for the raw topic).
MAX_MESSAGE_DEPTH = 32


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


class RateCap:
  """A token bucket: `take()` is True for at most `rate_per_sec` calls a second on average."""

  def __init__(self, rate_per_sec: float, burst: float | None = None) -> None:
    self.rate_per_sec = rate_per_sec
    self.burst = burst if burst is not None else max(1.0, rate_per_sec)
    self._tokens = self.burst
    self._last = time.monotonic()

  def take(self) -> bool:
    """Spend one token if there is one; return whether there was."""
    now = time.monotonic()
    self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_sec)
    self._last = now
    if self._tokens >= 1.0:
      self._tokens -= 1.0
      return True
    return False


class CustomWsFeed(Connector):
  """CustomEvents from any ws:// or wss:// JSON feed.

  `async with CustomWsFeed(url, mapping=CustomMapping(price="data.p"), source="my-feed")
  as feed: async for ev in feed: ...`; or pass `mapper=lambda msg: CustomEvent(...)`.
  Or build from a spec: `CustomWsFeed.from_source(CustomSource(...))`.
  `stats`: messages, mapped, filtered, invalid, connects, disconnects, errors, refused
  (connects refused by the address rule or a redirect), dropped (over the message rate),
  clamped (event times replaced by the receive time).
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
    max_message_bytes: int | None = None,
    backoff: Backoff | None = None,
    settings: Settings | None = None,
    heartbeat_sec: float = 1.0,
    max_msgs_per_sec: float | None = None,
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
    self.max_message_bytes = max_message_bytes or self.settings.bond_custom_max_message_bytes
    self.rate_cap = RateCap(max_msgs_per_sec or self.settings.bond_custom_max_msgs_per_sec)
    self.ts_skew_ms = self.settings.bond_custom_ts_skew_ms
    self.allow = AllowList.parse(self.settings.bond_custom_allow)
    self.backoff = backoff or Backoff(base_sec=0.5, max_sec=30.0)
    self.stats.update(
      messages=0,
      mapped=0,
      filtered=0,
      invalid=0,
      connects=0,
      disconnects=0,
      refused=0,
      dropped=0,
      clamped=0,
    )
    self._over_rate_logged = False
    self._session_read = False

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
        await self._session()
        reason = "closed"
      except BlockedAddress as exc:
        self.stats["refused"] += 1
        reason = f"refused: {exc.message}"
      except (OSError, TimeoutError, InvalidHandshake, InvalidURI, WebSocketException) as exc:
        # ConnectionClosed (incl. 1009 message too big), refused connections, bad handshakes.
        reason = repr(exc)
      if self._session_read:
        failures = 0  # the last connection delivered messages: start the backoff over
      self.stats["disconnects"] += 1
      failures += 1
      delay = self.backoff.delay(failures)
      log.warning("custom feed %s %s; reconnect in %.2fs", self.source_id, reason, delay)
      await asyncio.sleep(delay)

  async def _session(self) -> None:
    """Connect once (to a checked address), subscribe, and read until the feed closes."""
    self._session_read = False
    uri = parse_uri(self.url)
    # Resolved and checked now, on every connect: a DNS answer cannot move the feed inside.
    sock = await open_checked(uri.host, uri.port, self.allow, timeout_sec=10.0)
    try:
      opened = connect(
        self.url,
        sock=sock,  # the checked address; Host and TLS server name stay the URL's
        proxy=None,
        ping_interval=self.ping_sec,
        ping_timeout=self.ping_sec,
        max_size=self.max_message_bytes,
        open_timeout=10,
      )
      async with opened as ws:
        self.stats["connects"] += 1
        self._over_rate_logged = False
        if self.subscribe is not None:
          await ws.send(json.dumps(self.subscribe))
        async for raw in ws:
          self._session_read = True
          await self._on_message(raw)
    except ValueError as exc:
      # websockets will not follow a redirect on a socket it was given: refuse it plainly.
      if not isinstance(exc.__cause__, InvalidHandshake):
        raise
      raise BlockedAddress(
        f"{self.url} answered a redirect; custom feeds do not follow them"
      ) from exc
    finally:
      sock.close()

  def _within_rate(self) -> bool:
    if self.rate_cap.take():
      return True
    self.stats["dropped"] += 1
    if not self._over_rate_logged:
      self._over_rate_logged = True
      log.warning(
        "custom feed %s sends more than %.0f messages/s (BOND_CUSTOM_MAX_MSGS_PER_SEC); "
        "dropping the excess",
        self.source_id,
        self.rate_cap.rate_per_sec,
      )
    return False

  async def _on_message(self, raw: str | bytes) -> None:
    self.stats["messages"] += 1
    if not self._within_rate():
      return  # dropped before parsing: a flood costs no JSON decoding
    try:
      message = json.loads(raw)
    except (ValueError, RecursionError):
      self.stats["invalid"] += 1
      return
    if json_depth(message, MAX_MESSAGE_DEPTH) > MAX_MESSAGE_DEPTH:
      self.stats["invalid"] += 1
      return
    items = message if isinstance(message, list) else [message]
    for k, item in enumerate(items):
      if k > 0 and not self._within_rate():
        continue
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
      now = now_ms()
      if abs(ev.ts - now) > self.ts_skew_ms:
        ev.ts = now  # a wrong clock must not stamp events far outside the open windows
        self.stats["clamped"] += 1
      self.stats["mapped"] += 1
      await self.emit(ev, ("", self.source_id))
