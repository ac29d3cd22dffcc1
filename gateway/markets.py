"""The symbols each exchange lists, cached for the REST API, and the symbol check of a spec."""

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

from bond.compiler.suggest import suggest_pair
from bond.config import Settings
from bond.errors import BondError, SpecError, UpstreamError
from bond.schemas import CcxtSource, StreamSpec

log = logging.getLogger(__name__)

MarketLoader = Callable[[str, Settings], Awaitable[set[str]]]
T = TypeVar("T")


class Offload(Protocol):
  """Runs a CPU-bound function off the event loop (the API's bounded worker threads)."""

  def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]: ...


MARKETS_TTL_SEC = 300.0
MARKETS_RETRY_SEC = 30.0
MARKETS_TIMEOUT_SEC = 5.0  # the exchange's answer
MARKETS_CEILING_SEC = 30.0  # the whole load, with the first (CPU-heavy) import of ccxt


async def load_markets(exchange_id: str, settings: Settings) -> set[str]:
  """Return the spot symbols an exchange lists (the sim exchange's in sim mode)."""
  # The first import of ccxt takes seconds of CPU: not on the event loop.
  ccxt = await asyncio.to_thread(importlib.import_module, "ccxt")
  from bond.connectors.markets import list_markets

  try:
    # Only the exchange's answer is timed: the import above takes longer on a busy machine.
    async with asyncio.timeout(MARKETS_TIMEOUT_SEC):
      return await list_markets(exchange_id, settings)
  except (ccxt.BaseError, BondError) as exc:
    raise UpstreamError(f"cannot list {exchange_id} markets: {exc}") from exc


class MarketCache:
  """The symbols each exchange lists, loaded on demand and cached; None while unavailable."""

  def __init__(
    self,
    loader: MarketLoader,
    settings: Settings,
    ttl_sec: float = MARKETS_TTL_SEC,
    retry_sec: float = MARKETS_RETRY_SEC,
    timeout_sec: float = MARKETS_CEILING_SEC,
  ) -> None:
    self._loader = loader
    self._settings = settings
    self._ttl_sec = ttl_sec
    self._retry_sec = retry_sec
    self._timeout_sec = timeout_sec
    self._entries: dict[str, tuple[float, frozenset[str] | None]] = {}
    self._locks: dict[str, asyncio.Lock] = {}

  def _cached(self, exchange_id: str) -> tuple[bool, frozenset[str] | None]:
    hit = self._entries.get(exchange_id)
    if hit is not None and hit[0] > time.monotonic():
      return True, hit[1]
    return False, None

  async def get(self, exchange_id: str) -> frozenset[str] | None:
    """Return the exchange's symbols, or None when they cannot be loaded right now."""
    found, markets = self._cached(exchange_id)
    if found:
      return markets
    async with self._locks.setdefault(exchange_id, asyncio.Lock()):
      found, markets = self._cached(exchange_id)
      if found:
        return markets
      try:
        async with asyncio.timeout(self._timeout_sec):
          markets = frozenset(await self._loader(exchange_id, self._settings))
      except (UpstreamError, OSError, TimeoutError) as exc:
        # Symbols go unchecked rather than failing the request; the feed reports bad ones later.
        log.warning(
          "cannot load %s markets (%s); accepting its symbols unchecked", exchange_id, exc
        )
        self._entries[exchange_id] = (time.monotonic() + self._retry_sec, None)
        return None
      self._entries[exchange_id] = (time.monotonic() + self._ttl_sec, markets)
      return markets


async def _inline(fn: Callable[[], T]) -> T:
  return fn()


async def check_symbols(
  spec: StreamSpec, settings: Settings, markets: MarketCache, offload: Offload = _inline
) -> None:
  """Refuse a spec naming symbols its exchanges do not list, with a close match as a hint."""
  wanted: dict[str, list[str]] = {}
  for src in spec.sources:
    if isinstance(src, CcxtSource):
      for ex in spec.exchanges_for(src, settings.exchanges):
        wanted.setdefault(ex, [])
        wanted[ex] += [p for p in spec.pairs_for(src) if p not in wanted[ex]]
  listed = await asyncio.gather(*(markets.get(ex) for ex in wanted))
  missing: dict[str, list[str]] = {}
  unlisted: dict[str, frozenset[str]] = {}
  for (ex, pairs), known in zip(wanted.items(), listed, strict=True):
    if known is None:
      continue
    for pair in pairs:
      if pair not in known:
        missing.setdefault(pair, []).append(ex)
        unlisted.setdefault(pair, known)
  if not missing:
    return
  hints = await offload(lambda: _hints(unlisted))
  parts = []
  for pair, exchanges in missing.items():
    hint = f" (did you mean {hints[pair]}?)" if pair in hints else ""
    parts.append(f"symbol {pair} is not listed on {', '.join(exchanges)}{hint}")
  raise SpecError("; ".join(parts), symbols=list(missing))


def _hints(unlisted: Mapping[str, frozenset[str]]) -> dict[str, str]:
  # The first lookup on a market list builds its index (tens of ms): off the event loop.
  found: dict[str, str] = {}
  for pair, known in unlisted.items():
    close = suggest_pair(pair, known)
    if close:
      found[pair] = close
  return found
