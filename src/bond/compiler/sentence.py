"""Compile an English sentence into a StreamSpec (deterministic, offline)."""

from typing import Any

from pydantic import ValidationError

from bond.compiler.lexer import _tokenize
from bond.compiler.lexicon import (
  _DEFAULT_ONCHAIN_TYPES,
  _EXCHANGE_WORDS,
  AVAILABLE,
  DEFAULT_INTERVAL_SEC,
  EXAMPLES,
  MAX_INTERVAL_SEC,
  MIN_INTERVAL_SEC,
)
from bond.compiler.limits import stream_feeds_problem
from bond.compiler.scanner import _Found, _Scanner
from bond.compiler.spec import _validation_lines
from bond.config import Settings, get_settings
from bond.errors import SpecError
from bond.schemas import (
  ONCHAIN_TYPES,
  CcxtSource,
  CustomSource,
  OnchainSource,
  StreamSpec,
  TwitterSource,
  normalize_pair,
)
from bond.spec_limits import spec_context


class CompileError(SpecError, ValueError):
  """A sentence that cannot be compiled; says which words were not understood."""

  code = "invalid_sentence"

  def __init__(self, message: str, unknown_words: list[str] | None = None) -> None:
    self.unknown_words: list[str] = list(unknown_words or [])
    super().__init__(message, unknown_words=self.unknown_words)


def compile_nl(
  text: str, exchanges: list[str] | None = None, settings: Settings | None = None
) -> StreamSpec:
  """Compile an English sentence into a StreamSpec, or raise CompileError.

  `exchanges`: the ids this deployment serves (naming another one is an error); the
  settings' caps apply as for a JSON spec, and BOND_MAX_SENTENCE_CHARS bounds the text.
  """
  settings = settings or get_settings()
  if not isinstance(text, str):
    raise CompileError(_message("the sentence must be a string", []))
  limit = settings.bond_max_sentence_chars
  if len(text) > limit:
    raise CompileError(
      _message(
        f"the sentence is {len(text)} characters long; the limit is {limit} "
        "(BOND_MAX_SENTENCE_CHARS)",
        [],
      )
    )
  if not text.strip():
    raise CompileError(_message("the sentence is empty", []))
  # `exchanges`: the ids this deployment serves; naming another one is an error, not silence.
  allowed = [e.strip().lower() for e in exchanges or [] if e.strip()]
  words = dict(_EXCHANGE_WORDS) | {name: name for name in allowed}
  found = _Scanner(_tokenize(text), words).run()

  _refuse_what_is_not_served(found)
  if found.malformed:
    bad = [w for w, _ in found.malformed]
    raise CompileError(_message("; ".join(why for _, why in found.malformed), bad), bad)
  interval = _pick_interval(found)
  if allowed:
    off = [e for e in found.exchanges if e not in allowed]
    if off:
      raise CompileError(
        _message(
          f"exchange {', '.join(off)} is not available here; available: {', '.join(allowed)}",
          off,
        ),
        off,
      )

  if not (found.ccxt or found.twitter or found.onchain or found.urls) and (
    found.exchanges or (found.bases and not found.unknown)
  ):
    # "ETH on binance", "BTC ETH SOL", "BTC, ETH every 1m": symbols (or an exchange) with
    # nothing else but filler ask for prices. With a word not understood it stays an error.
    found.ccxt = True
  bases_needed = found.ccxt or found.twitter
  symbols = _pairs(found, settings.bond_max_symbols)
  if not symbols and found.onchain and not bases_needed:
    symbols = ["SOL/USDT"]  # on-chain data is Solana's; give the stream its asset
  has_source = found.ccxt or found.twitter or found.onchain or bool(found.urls)
  problems = []
  if not symbols and (bases_needed or not has_source):
    problems.append("no symbol found (e.g. BTC, eth/usdt, bitcoin, $SOL)")
  if not has_source:
    problems.append("no data source found (e.g. price, trades, liquidations, tweets, on-chain)")
  if problems:
    raise CompileError(_message("; ".join(problems), found.unknown), found.unknown)

  sources: list[Any] = []
  if found.ccxt:
    sources.append(CcxtSource(liquidations=found.liquidations))
  if found.twitter:
    sources.append(TwitterSource())
  if found.onchain:
    types = [t for t in ONCHAIN_TYPES if t in found.event_types] or _DEFAULT_ONCHAIN_TYPES
    sources.append(OnchainSource(event_types=types))  # type: ignore[arg-type]
  context = spec_context(settings)
  for url in dict.fromkeys(found.urls):
    try:
      sources.append(CustomSource.model_validate({"url": url}, context=context))
    except ValidationError as exc:
      why = _validation_lines(exc)[0].removeprefix("url: ")
      raise CompileError(_message(f"{url!r}: {why}", [url]), [url]) from None
  try:
    spec = StreamSpec.model_validate(
      {
        "sources": sources,
        "symbols": symbols,
        "interval_sec": interval,
        "exchanges": found.exchanges or None,
      },
      context=context,
    )
  except ValidationError as exc:
    raise CompileError(_message(_validation_lines(exc)[0], []), []) from None
  problem = stream_feeds_problem(spec, settings, allowed or None)
  if problem is not None:
    raise CompileError(_message(problem, []), [])
  return spec


def _refuse_what_is_not_served(found: _Found) -> None:
  """Refuse content words Bond cannot serve, and durations that are not a window."""
  problems: list[str] = []
  named: list[str] = []
  if found.unserved:
    asks = list(dict.fromkeys(what for _, what in found.unserved))
    words = list(dict.fromkeys(word for word, _ in found.unserved))
    loud = [w for w in words if w.isupper() and " " not in w]
    problems.append(
      f"{_quoted(words)} {'asks' if len(words) == 1 else 'ask'} for {' and '.join(asks)}, "
      f"which Bond does not have; available: {AVAILABLE}"
      + (f" (for a ticker, write ${loud[0]})" if loud else "")
    )
    named += words
  if found.past:
    problems.append(
      f"{_quoted(found.past)} asks for past data (a backfill), which a sentence compiled "
      'here does not carry: send it as "backfill" with POST /v1/streams (e.g. "backfill": '
      '"1h"), or read GET /v1/streams/{id}/windows'
    )
    named += found.past
  if found.lifetime:
    problems.append(
      f"{_quoted(found.lifetime)}: a stream runs from its creation until it is deleted and "
      'cannot be given a duration or a schedule; for past data use "backfill" with '
      "POST /v1/streams"
    )
    named += found.lifetime
  if problems:
    raise CompileError(_message("; ".join(problems), []), named)


def _quoted(words: list[str]) -> str:
  return ", ".join(repr(w) for w in dict.fromkeys(words))


def _pairs(found: _Found, limit: int) -> list[str]:
  pairs: list[str] = []
  for base, quote in zip(found.bases, found.quotes, strict=True):
    if base == (quote or "USDT"):
      continue  # "USDT/USDT" is no market
    try:
      pairs.append(normalize_pair(f"{base}/{quote or 'USDT'}"))
    except ValueError:
      continue
  pairs = list(dict.fromkeys(pairs))
  if len(pairs) > limit:
    raise CompileError(
      _message(f"{len(pairs)} symbols; the limit is {limit} (BOND_MAX_SYMBOLS)", [])
    )
  return pairs


def _pick_interval(found: _Found) -> int:
  chosen = [iv for iv in found.intervals if iv.explicit] or found.intervals
  if not chosen:
    return DEFAULT_INTERVAL_SEC
  for iv in chosen:
    if iv.seconds <= 0:
      why = f"the interval {iv.written!r} must be positive"
    elif iv.seconds != iv.seconds.to_integral_value():
      why = f"the interval {iv.written!r} is not whole seconds"
    elif iv.seconds > MAX_INTERVAL_SEC:
      why = f"the interval {iv.written!r} is longer than {MAX_INTERVAL_SEC} s (1 hour)"
    else:
      continue
    why += f"; intervals are whole seconds from {MIN_INTERVAL_SEC} to {MAX_INTERVAL_SEC}"
    raise CompileError(_message(why, [iv.written]), [iv.written])
  values = list(dict.fromkeys(int(iv.seconds) for iv in chosen))
  if len(values) > 1:
    written = [iv.written for iv in chosen]
    raise CompileError(
      _message(f"several intervals ({', '.join(written)}); give one", written), written
    )
  return values[0]


def _message(problem: str, unknown: list[str]) -> str:
  parts = [f"Could not understand the sentence: {problem}."]
  if unknown:
    shown = list(dict.fromkeys(unknown))[:10]
    parts.append("Words not understood: " + ", ".join(repr(w) for w in shown) + ".")
  parts.append(f'Try for example "{EXAMPLES[0]}" or "{EXAMPLES[1]}".')
  return " ".join(parts)
