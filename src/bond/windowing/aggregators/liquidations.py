"""Liquidation events of the pair."""

from collections.abc import Mapping
from typing import Any

from bond.schemas import StreamSpec
from bond.windowing.aggregators.base import Aggregator, OutField, Scope, register


class Liquidations(Aggregator[int]):
  """liquidations: the number of liquidations."""

  name = "liq"
  sources = frozenset({"ccxt"})
  scope = Scope.SYMBOL
  fields = (OutField("liquidations", "number of liquidations"),)

  def init(self) -> int:
    return 0

  def accepts(self, raw: Mapping[str, Any]) -> bool:
    return raw.get("kind") == "liquidation"

  def add(self, state: int, raw: Mapping[str, Any]) -> int:
    return state + 1

  def merge(self, into: int, other: int) -> int:
    return into + other

  def result(self, state: int | None, spec: StreamSpec) -> dict[str, Any]:
    return {"liquidations": state or 0}


register(Liquidations())
