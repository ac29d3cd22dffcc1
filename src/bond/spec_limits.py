"""The caps a stream spec must fit (BOND_MAX_* settings), applied while pydantic validates it.

A spec from a user is validated with `context=spec_context(settings)` (parse_spec and
compile_nl do it): the operator's caps and the custom-feed address rule apply. Without a
context (a stored stream read back, a spec built in code) the ceilings apply: the highest
values the settings accept, so a stream stored under today's caps always loads.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationInfo

from bond.netguard import AllowList

if TYPE_CHECKING:
  from bond.config import Settings

_SETTING_OF = {
  "max_symbols": "BOND_MAX_SYMBOLS",
  "max_sources": "BOND_MAX_SOURCES",
  "max_exchanges": "BOND_MAX_EXCHANGES",
  "max_subscribe_bytes": "BOND_MAX_SUBSCRIBE_BYTES",
  "max_subscribe_depth": "BOND_MAX_SUBSCRIBE_DEPTH",
}


@dataclass(frozen=True)
class SpecLimits:
  """The caps a spec must fit, from the BOND_MAX_* settings.

  A spec from a user is validated with `context=spec_context(settings)` (parse_spec and
  compile_nl do it): `intake` is set, the operator's caps, the custom-feed address rule and
  the ticker rule for X symbols apply. Without a context (a stored stream read back, a spec
  built in code) only the ceilings apply (the highest values the settings accept) and the
  rules of the time the stream was stored, so a stored stream always loads and can be
  deleted; the connectors check addresses and X symbols again when they run.
  """

  max_symbols: int = 200
  max_sources: int = 32
  max_exchanges: int = 50
  max_subscribe_bytes: int = 65_536
  max_subscribe_depth: int = 32
  custom_allow: AllowList = field(default_factory=AllowList)
  intake: bool = False

  @classmethod
  def from_settings(cls, settings: "Settings") -> "SpecLimits":
    """Return the caps the settings set, with the custom-feed allow-list."""
    return cls(
      max_symbols=settings.bond_max_symbols,
      max_sources=settings.bond_max_sources,
      max_exchanges=settings.bond_max_exchanges,
      max_subscribe_bytes=settings.bond_max_subscribe_bytes,
      max_subscribe_depth=settings.bond_max_subscribe_depth,
      custom_allow=AllowList.parse(settings.bond_custom_allow),
      intake=True,
    )

  def cap(self, items: Any, name: str, what: str) -> None:
    """Raise ValueError if `items` (a list or dict) is longer than the cap `name`."""
    limit = getattr(self, name)
    if isinstance(items, list | tuple | dict) and len(items) > limit:
      raise ValueError(f"{len(items)} {what}; the limit is {limit} ({_SETTING_OF[name]})")


CEILINGS = SpecLimits()


def spec_context(settings: "Settings") -> dict[str, Any]:
  """Return the validation context that applies the settings' caps to a user's spec."""
  return {"limits": SpecLimits.from_settings(settings)}


def limits_of(info: ValidationInfo) -> SpecLimits:
  context = info.context
  found = context.get("limits") if isinstance(context, dict) else None
  return found if isinstance(found, SpecLimits) else CEILINGS


def json_depth(value: Any, limit: int) -> int:
  """Return the nesting depth of a JSON value, counting no deeper than `limit` + 1."""
  deepest = 0
  stack: list[tuple[Any, int]] = [(value, 1)]
  while stack:
    node, depth = stack.pop()
    if not isinstance(node, dict | list):
      continue
    deepest = max(deepest, depth)
    if deepest > limit:
      return deepest
    children = node.values() if isinstance(node, dict) else node
    stack.extend((child, depth + 1) for child in children)
  return deepest
