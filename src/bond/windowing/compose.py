"""A stream's window from its feeds' panes: the AggregatedEvent every client receives."""

from collections.abc import Mapping, Sequence
from typing import Any

from bond.schemas import StreamSpec, base_asset
from bond.windowing.aggregators import REGISTRY, Registry, Scope
from bond.windowing.feeds import Feed
from bond.windowing.pane import Pane
from bond.wire import iso_ms


def _symbol_fields(pane: Pane | None, spec: StreamSpec, registry: Registry) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for agg in registry.scoped(Scope.SYMBOL):
    out.update(agg.result(None if pane is None else pane.stats.get(agg.name), spec))
  return out


def _merge_all(panes: list[Pane], registry: Registry) -> Pane | None:
  """Return the panes merged (one is returned as is: panes given are only read)."""
  if len(panes) <= 1:
    return panes[0] if panes else None
  merged = Pane()
  for pane in panes:
    merged.merge(pane, registry)
  return merged


def _feeds_of_symbol(pair: str, feed: Feed) -> bool:
  if feed.source == "ccxt":
    return feed.symbol == pair
  return feed.source == "twitter" and feed.symbol == base_asset(pair)


def compose_window(
  stream_id: str,
  spec: StreamSpec,
  feeds: Sequence[Feed],
  end_ms: int,
  panes: Mapping[str, Pane],
  missing: Sequence[str] = (),
  registry: Registry = REGISTRY,
) -> dict[str, Any]:
  """Return the AggregatedEvent (as a dict) of the window ending at end_ms.

  `panes` maps feed id to that feed's pane merged over the whole window; `missing` names
  the feeds that had not passed the window's end when it went out (then `complete` is
  false and `missing` lists them).
  """
  size_ms = spec.interval_sec * 1000
  symbols = spec.symbols
  per_symbol: dict[str, dict[str, Any]] = {}
  for pair in symbols:
    of_pair = [p for f in feeds if (p := panes.get(f.id)) and _feeds_of_symbol(pair, f)]
    per_symbol[pair] = _symbol_fields(_merge_all(of_pair, registry), spec, registry)
  present = [(f, p) for f in feeds if (p := panes.get(f.id))]
  whole = _merge_all([p for _f, p in present], registry) or Pane()
  sources = {f.label for f, p in present if p.contributed()}
  top = per_symbol[symbols[0]] if symbols else _symbol_fields(None, spec, registry)
  event: dict[str, Any] = {
    "stream_id": stream_id,
    "seq": end_ms,
    "ts": iso_ms(end_ms),
    "window_start": iso_ms(end_ms - size_ms),
    "interval_sec": spec.interval_sec,
    "symbol": symbols[0] if symbols else None,
    **top,
  }
  for agg in registry.scoped(Scope.STREAM):
    event.update(agg.result(whole.stats.get(agg.name), spec))
  event["raw_data"] = {"trades": top.get("trades", 0), "sources": sorted(sources), "sim": whole.sim}
  event["by_symbol"] = per_symbol if len(symbols) > 1 else None
  event["complete"] = not missing
  if missing:
    event["missing"] = sorted(missing)
  return event
