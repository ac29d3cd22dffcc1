"""Traded volume."""

from collections.abc import Mapping
from typing import Any

from bond.schemas import StreamSpec
from bond.windowing.aggregators.base import Aggregator, OutField, Scope, register


class Volume(Aggregator[float]):
  """volume_sum: the sum of the trades' amounts."""

  name = "volume"
  sources = frozenset({"ccxt"})
  scope = Scope.SYMBOL
  fields = (OutField("volume_sum", "base units"),)

  def init(self) -> float:
    return 0.0

  def accepts(self, raw: Mapping[str, Any]) -> bool:
    return raw.get("kind") == "trade" and raw.get("price") is not None

  def add(self, state: float, raw: Mapping[str, Any]) -> float:
    return state + float(raw.get("amount") or 0.0)

  def merge(self, into: float, other: float) -> float:
    return into + other

  def result(self, state: float | None, spec: StreamSpec) -> dict[str, Any]:
    return {"volume_sum": 0.0 if state is None else state}


register(Volume())
