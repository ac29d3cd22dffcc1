"""Turn a sentence or a JSON spec into a StreamSpec, and a StreamSpec into its stream id.

The sentence compiler is a small deterministic scanner over a fixed vocabulary (no
network, no model): it finds symbols, sources, exchanges and one window interval (also
in shorthand, words and fractions: "5 secs", "every half a minute", "twice a minute"),
and ignores filler. A bare list of symbols asks for their prices. It refuses, naming the
words: a content word asking for data Bond does not have ("orderbook", "funding"), past
data ("for the last hour": the API's `backfill`), a stream's lifetime ("for 10 minutes"),
a vague or malformed interval, and a sentence missing what a stream needs.

  lexicon.py   the vocabulary (assets, sources, exchanges, units, filler)
  lexer.py     sentence -> tokens; a token as an asset or a pair
  scanner.py   tokens -> what the sentence asks for
  sentence.py  compile_nl: what was found -> StreamSpec, or CompileError
  spec.py      parse_spec: a JSON spec -> StreamSpec, or SpecError naming each field
  ids.py       canonical JSON and stream ids
"""

from bond.compiler.ids import canonical_json, stream_id
from bond.compiler.lexicon import (
  _AMBIGUOUS_ASSETS,
  _ASSETS,
  _EXCHANGE_WORDS,
  _NUMBER_WORDS,
  _SOURCE_WORDS,
  _UNITS,
  DEFAULT_INTERVAL_SEC,
  EXAMPLES,
  KNOWN_EXCHANGES,
  MAX_INTERVAL_SEC,
  MAX_TEXT_CHARS,
  MIN_INTERVAL_SEC,
)
from bond.compiler.sentence import CompileError, compile_nl
from bond.compiler.spec import parse_spec

__all__ = [
  "DEFAULT_INTERVAL_SEC",
  "EXAMPLES",
  "KNOWN_EXCHANGES",
  "MAX_INTERVAL_SEC",
  "MAX_TEXT_CHARS",
  "MIN_INTERVAL_SEC",
  "_AMBIGUOUS_ASSETS",
  "_ASSETS",
  "_EXCHANGE_WORDS",
  "_NUMBER_WORDS",
  "_SOURCE_WORDS",
  "_UNITS",
  "CompileError",
  "canonical_json",
  "compile_nl",
  "parse_spec",
  "stream_id",
]
