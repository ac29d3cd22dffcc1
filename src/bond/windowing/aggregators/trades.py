"""Trades counted."""

from collections.abc import Mapping
from typing import Any

from bond.schemas import StreamSpec
from bond.windowing.aggregators.base import Aggregator, OutField, Scope, register


class TradeCount(Aggregator[int]):
  """trades: the number of trades."""

  name = "trades"
  sources = frozenset({"ccxt"})
  scope = Scope.SYMBOL
  fields = (OutField("trades", "number of trades"),)

  def init(self) -> int:
    return 0

  def accepts(self, raw: Mapping[str, Any]) -> bool:
    return raw.get("kind") == "trade" and raw.get("price") is not None

  def add(self, state: int, raw: Mapping[str, Any]) -> int:
    return state + 1

  def merge(self, into: int, other: int) -> int:
    return into + other

  def result(self, state: int | None, spec: StreamSpec) -> dict[str, Any]:
    return {"trades": state or 0}


register(TradeCount())
