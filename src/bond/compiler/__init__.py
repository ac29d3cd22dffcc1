"""Turn a sentence or a JSON spec into a StreamSpec, and a StreamSpec into its stream id.

The sentence compiler is a small deterministic scanner over a fixed vocabulary (no
network, no model): it finds symbols, sources, exchanges and one window interval, and
ignores filler. It only complains about words when it cannot find what a stream needs,
or when a number or unit is malformed.

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
