"""The aggregator contract and the registry of statistics a window carries.

Each statistic is one small class: `init` an empty state, `accepts` / `add` a raw event,
`merge` two states (never mutating the second: panes are shared by every stream of a
feed), `result` the output fields. `encode` / `decode` give its compact JSON form for the
pane records and changelogs. Registering one is a single call, usually at the bottom of
the file that defines it (see ARCHITECTURE.md "Adding a statistic").
"""

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

from bond.schemas import StreamSpec

S = TypeVar("S")
A = TypeVar("A", bound="Aggregator[Any]")


class Scope(StrEnum):
  """Where a statistic's fields go in a window."""

  SYMBOL = "symbol"  # per symbol: the top-level fields (first symbol) and `by_symbol`
  STREAM = "stream"  # once per window, over every feed of the stream


@dataclass(frozen=True, slots=True)
class OutField:
  """One output field of a statistic and its unit."""

  name: str
  unit: str


class Aggregator(ABC, Generic[S]):
  """One statistic over raw events: its state, how events and states combine, its fields."""

  name: ClassVar[str]  # the key of its state in a serialised pane; unique
  sources: ClassVar[frozenset[str]]  # feed sources whose events it takes (ccxt, twitter, ...)
  scope: ClassVar[Scope]
  fields: ClassVar[tuple[OutField, ...]]

  @abstractmethod
  def init(self) -> S:
    """Return an empty state."""

  def accepts(self, raw: Mapping[str, Any]) -> bool:
    """Return whether this raw event counts for the statistic."""
    return True

  @abstractmethod
  def add(self, state: S, raw: Mapping[str, Any]) -> S:
    """Return the state with one accepted raw event added (may mutate `state`)."""

  @abstractmethod
  def merge(self, into: S, other: S) -> S:
    """Return `into` combined with `other` (may mutate `into`, never `other`)."""

  @abstractmethod
  def result(self, state: S | None, spec: StreamSpec) -> dict[str, Any]:
    """Return the output fields for a merged state (None: nothing was aggregated)."""

  def encode(self, state: S) -> Any:
    """Return the state as plain JSON data."""
    return state

  def decode(self, data: Any) -> S:
    """Return the state from `encode`'s JSON data."""
    return data  # type: ignore[no-any-return]


class Registry:
  """The statistics windows carry, in output-field order."""

  def __init__(self) -> None:
    self._aggs: dict[str, Aggregator[Any]] = {}
    self._by_source: dict[str, tuple[Aggregator[Any], ...]] = {}

  def register(self, agg: A) -> A:
    """Add a statistic; its fields go after those registered before it."""
    if agg.name in self._aggs:
      raise ValueError(f"a statistic named {agg.name!r} is already registered")
    taken = {f.name for a in self._aggs.values() for f in a.fields}
    clash = taken & {f.name for f in agg.fields}
    if clash:
      raise ValueError(f"statistic {agg.name!r}: output fields {sorted(clash)} already exist")
    self._aggs[agg.name] = agg
    self._by_source.clear()
    return agg

  def unregister(self, name: str) -> None:
    """Remove a statistic (tests)."""
    self._aggs.pop(name, None)
    self._by_source.clear()

  def get(self, name: str) -> Aggregator[Any] | None:
    """Return the statistic of this name, if registered."""
    return self._aggs.get(name)

  def for_source(self, source: str) -> tuple[Aggregator[Any], ...]:
    """Return the statistics that take events of a feed source."""
    found = self._by_source.get(source)
    if found is None:
      found = self._by_source[source] = tuple(a for a in self._aggs.values() if source in a.sources)
    return found

  def scoped(self, scope: Scope) -> list[Aggregator[Any]]:
    """Return the statistics of one scope, in registration order."""
    return [a for a in self._aggs.values() if a.scope is scope]

  def __iter__(self) -> Iterator[Aggregator[Any]]:
    return iter(list(self._aggs.values()))


REGISTRY = Registry()


def register(agg: A) -> A:
  """Register a statistic with the default registry (call it at the bottom of its file)."""
  return REGISTRY.register(agg)
