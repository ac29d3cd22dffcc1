"""On-chain events counted by type."""

from collections.abc import Mapping
from typing import Any

from bond.schemas import OnchainSource, StreamSpec
from bond.windowing.aggregators.base import Aggregator, OutField, Scope, register


class OnchainCounts(Aggregator[dict[str, int]]):
  """onchain: {event type: count} for every type the stream asks for (0 when none came)."""

  name = "onchain"
  sources = frozenset({"onchain"})
  scope = Scope.STREAM
  fields = (OutField("onchain", "number of events per event type"),)

  def init(self) -> dict[str, int]:
    return {}

  def add(self, state: dict[str, int], raw: Mapping[str, Any]) -> dict[str, int]:
    kind = raw["type"]
    state[kind] = state.get(kind, 0) + 1
    return state

  def merge(self, into: dict[str, int], other: dict[str, int]) -> dict[str, int]:
    for kind, count in other.items():
      into[kind] = into.get(kind, 0) + count
    return into

  def result(self, state: dict[str, int] | None, spec: StreamSpec) -> dict[str, Any]:
    wanted: list[str] = []
    for src in spec.sources:
      if isinstance(src, OnchainSource):
        wanted += src.event_types
    counts = state or {}
    return {"onchain": {kind: counts.get(kind, 0) for kind in dict.fromkeys(wanted)}}

  def decode(self, data: Any) -> dict[str, int]:
    return dict(data)


register(OnchainCounts())
