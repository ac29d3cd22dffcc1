"""A toy statistic, all in this one file: the largest single trade of the window."""

from collections.abc import Mapping
from typing import Any

from bond.schemas import StreamSpec
from bond.windowing import Aggregator, OutField, Scope, register


class LargestTrade(Aggregator[float]):
  """largest_trade: the largest amount of a single trade (None without trades)."""

  name = "largest_trade"
  sources = frozenset({"ccxt"})
  scope = Scope.SYMBOL
  fields = (OutField("largest_trade", "base units"),)

  def init(self) -> float:
    return 0.0

  def accepts(self, raw: Mapping[str, Any]) -> bool:
    return raw.get("kind") == "trade" and raw.get("amount") is not None

  def add(self, state: float, raw: Mapping[str, Any]) -> float:
    return max(state, float(raw["amount"]))

  def merge(self, into: float, other: float) -> float:
    return max(into, other)

  def result(self, state: float | None, spec: StreamSpec) -> dict[str, Any]:
    return {"largest_trade": state}


register(LargestTrade())
