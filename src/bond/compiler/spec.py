"""Validate a JSON stream spec, with one readable line per bad field."""

import json
from typing import Any

from pydantic import ValidationError

from bond.compiler.lexicon import MAX_INTERVAL_SEC, MIN_INTERVAL_SEC
from bond.compiler.limits import stream_feeds_problem
from bond.config import Settings, get_settings
from bond.errors import SpecError
from bond.schemas import ONCHAIN_TYPES, SOURCE_ALIASES, StreamSpec
from bond.spec_limits import spec_context

_SOURCE_TAGS = {"ccxt", "twitter", "onchain", "custom"}
_ALLOWED_TYPES = ", ".join(sorted(SOURCE_ALIASES))
_HINTS = {
  "interval_sec": f"whole seconds from {MIN_INTERVAL_SEC} to {MAX_INTERVAL_SEC}",
  "symbols": 'a list of tickers or pairs, e.g. ["BTC", "ETH/USDT"]',
  "exchanges": 'a list of ccxt exchange ids, e.g. ["binance", "okx"]',
  "sources": 'a list of sources, e.g. [{"type": "ccxt"}, {"type": "twitter"}]',
  "type": _ALLOWED_TYPES,
  "event_types": "a list of " + ", ".join(ONCHAIN_TYPES),
  "url": "a ws:// or wss:// URL",
  "liquidations": "true or false",
}


def parse_spec(
  data: dict[str, Any],
  settings: Settings | None = None,
  default_exchanges: list[str] | None = None,
) -> StreamSpec:
  """Validate a user's JSON spec into a StreamSpec, or raise SpecError naming each bad field.

  The settings' caps apply (BOND_MAX_*, BOND_CUSTOM_ALLOW); `default_exchanges` (else
  BOND_EXCHANGES) are what a ccxt source without exchanges covers, for the feed count.
  """
  if not isinstance(data, dict):
    raise SpecError("spec: must be a JSON object with sources, symbols and interval_sec")
  settings = settings or get_settings()
  lines = _unknown_type_lines(data, settings.bond_max_sources)
  try:
    spec = StreamSpec.model_validate(data, context=spec_context(settings))
  except ValidationError as exc:
    more = _validation_lines(exc)
    if lines:
      more = [m for m in more if not m.startswith("sources: unknown type")]
    lines += more
  else:
    if not lines:
      problem = stream_feeds_problem(spec, settings, default_exchanges)
      if problem is None:
        return spec
      lines.append(problem)
  raise SpecError("invalid stream spec:\n" + "\n".join(lines), errors=lines)


def _unknown_type_lines(data: dict[str, Any], max_sources: int) -> list[str]:
  # The model stops at the first unknown type; name every one, with its index (unless the
  # list is over its cap: then that is the one thing to say).
  sources = data.get("sources")
  if not isinstance(sources, list) or len(sources) > max_sources:
    return []
  lines = []
  for k, src in enumerate(sources):
    name = src.get("type") if isinstance(src, dict) else src
    if isinstance(name, str) and name.strip().lower() not in SOURCE_ALIASES:
      lines.append(
        f"sources.{k}.type: unknown source type {name[:40]!r}; allowed: {_ALLOWED_TYPES}"
      )
  return lines


def _validation_lines(exc: ValidationError) -> list[str]:
  lines = []
  for err in exc.errors():
    loc = [str(p) for p in err["loc"]]
    if len(loc) >= 3 and loc[0] == "sources" and loc[2] in _SOURCE_TAGS:
      del loc[2]  # the discriminator's tag, already given by sources.N.type
    msg = str(err["msg"]).removeprefix("Value error, ")
    kind = err["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
      loc.append("type")
      got = err.get("ctx", {}).get("tag")
      msg = "missing source type" if got is None else f"unknown source type {str(got)[:40]!r}"
      kind = "value_error"  # the message already shows the input
    path = ".".join(loc)
    if not path:
      lines.append(msg)
      continue
    if msg.startswith(f"{path}:") or msg.startswith(f"{path} "):
      lines.append(msg)
      continue
    hint = _HINTS.get(loc[-1]) or (_HINTS.get(loc[-2]) if len(loc) > 1 else None)
    if kind == "value_error" and loc[-1] != "type":
      hint = None  # our validators' messages already say what is allowed
    if kind == "extra_forbidden":
      msg = "unknown field"
      hint = None
    elif kind == "missing":
      msg = "required"
    elif "input" in err and kind not in ("value_error",):
      msg = f"{msg} (got {_short(err['input'])})"
    lines.append(f"{path}: {msg}" + (f"; allowed: {hint}" if hint else ""))
  return lines


def _short(value: object) -> str:
  text = json.dumps(value, default=str)
  return text if len(text) <= 40 else text[:37] + "..."
