"""Events of a custom WebSocket source."""

from collections.abc import Mapping
from typing import Any

from bond.schemas import StreamSpec
from bond.windowing.aggregators.base import Aggregator, OutField, Scope, register


class CustomCount(Aggregator[int]):
  """custom_count: the number of events."""

  name = "custom"
  sources = frozenset({"custom"})
  scope = Scope.STREAM
  fields = (OutField("custom_count", "number of events"),)

  def init(self) -> int:
    return 0

  def accepts(self, raw: Mapping[str, Any]) -> bool:
    return True

  def add(self, state: int, raw: Mapping[str, Any]) -> int:
    return state + 1

  def merge(self, into: int, other: int) -> int:
    return into + other

  def result(self, state: int | None, spec: StreamSpec) -> dict[str, Any]:
    return {"custom_count": state or 0}


register(CustomCount())
