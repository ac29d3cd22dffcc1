"""Volume-weighted average price of the trades."""

from collections.abc import Mapping
from typing import Any

from bond.schemas import StreamSpec
from bond.windowing.aggregators.base import Aggregator, OutField, Scope, register


class Vwap(Aggregator[list[float]]):
  """vwap: sum(price * amount) / sum(amount); None without volume. State [price*amount, amount]."""

  name = "vwap"
  sources = frozenset({"ccxt"})
  scope = Scope.SYMBOL
  fields = (OutField("vwap", "quote currency per base unit"),)

  def init(self) -> list[float]:
    return [0.0, 0.0]

  def accepts(self, raw: Mapping[str, Any]) -> bool:
    return raw.get("kind") == "trade" and raw.get("price") is not None

  def add(self, state: list[float], raw: Mapping[str, Any]) -> list[float]:
    amount = float(raw.get("amount") or 0.0)
    state[0] += float(raw["price"]) * amount
    state[1] += amount
    return state

  def merge(self, into: list[float], other: list[float]) -> list[float]:
    into[0] += other[0]
    into[1] += other[1]
    return into

  def result(self, state: list[float] | None, spec: StreamSpec) -> dict[str, Any]:
    if state is None or state[1] <= 0:
      return {"vwap": None}
    return {"vwap": state[0] / state[1]}

  def decode(self, data: Any) -> list[float]:
    return [float(data[0]), float(data[1])]


register(Vwap())
