"""Tweets about the symbol's base asset."""

from collections.abc import Mapping
from typing import Any

from bond.schemas import StreamSpec
from bond.windowing.aggregators.base import Aggregator, OutField, Scope, register


class Tweets(Aggregator[int]):
  """tweets: the number of tweets."""

  name = "tweets"
  sources = frozenset({"twitter"})
  scope = Scope.SYMBOL
  fields = (OutField("tweets", "number of tweets"),)

  def init(self) -> int:
    return 0

  def accepts(self, raw: Mapping[str, Any]) -> bool:
    return True

  def add(self, state: int, raw: Mapping[str, Any]) -> int:
    return state + 1

  def merge(self, into: int, other: int) -> int:
    return into + other

  def result(self, state: int | None, spec: StreamSpec) -> dict[str, Any]:
    return {"tweets": state or 0}


register(Tweets())
