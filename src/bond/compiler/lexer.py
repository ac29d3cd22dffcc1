"""Split a sentence into tokens, and read a token as an asset or a pair."""

import re
from dataclasses import dataclass, field

from bond.compiler.lexicon import (
  _AMBIGUOUS_ASSETS,
  _ASSETS,
  _EXCHANGE_WORDS,
  _FILLER,
  _QUOTES,
  _SOURCE_WORDS,
  _TICKER_RE,
  _TOKEN_RE,
  _UNITS,
  _UNSERVED,
)


@dataclass
class _Tok:
  kind: str  # url, num, word, sep, other
  text: str  # as written, without a $/# prefix
  prefixed: bool = False
  possessive: bool = False
  unit: str | None = None
  low: str = field(init=False, repr=False)  # text.lower(), read many times per token

  def __post_init__(self) -> None:
    self.low = self.text.lower()


def _tokenize(text: str) -> list[_Tok]:
  toks: list[_Tok] = []
  for m in _TOKEN_RE.finditer(text):
    if m["url"]:
      toks.append(_Tok("url", m["url"]))
    elif m["num"] is not None:
      unit = m["unit"]
      if unit is not None and unit.lower() not in _UNITS:
        # "1INCH" or "2x": a word that starts with digits, not a duration.
        toks.append(_Tok("word", m.group(0).replace("-", "")))
      else:
        toks.append(_Tok("num", m["num"], unit=unit))
    elif m["word"]:
      toks.append(_Tok("word", m["word"], prefixed=bool(m["prefix"]), possessive=bool(m["poss"])))
    elif m["sep"]:
      toks.append(_Tok("sep", m["sep"]))
    elif any(ch.isalnum() for ch in m["other"]):
      toks.append(_Tok("other", m["other"]))
  return _split_compounds(toks)


_NUM_PART_RE = re.compile(r"^(?P<num>[0-9]+)(?P<unit>[A-Za-z]+)?$")


def _split_compounds(toks: list[_Tok]) -> list[_Tok]:
  # "btc-price" or "price/volume" read as two words; "on-chain", "eth/usdt" stay whole.
  out: list[_Tok] = []
  for tok in toks:
    if tok.kind != "word" or not re.search(r"[-./]", tok.text) or _is_vocab(tok.low):
      out.append(tok)
      continue
    if _pair_of(tok) is not None:
      out.append(tok)
      continue
    parts = [p for p in re.split(r"[-./]", tok.text) if p]
    for k, part in enumerate(parts):
      last = k == len(parts) - 1
      num = _NUM_PART_RE.match(part)
      if num is not None and (num["unit"] is None or num["unit"].lower() in _UNITS):
        out.append(_Tok("num", num["num"], unit=num["unit"]))  # "trades/10s"
        continue
      out.append(
        _Tok(
          "word",
          part,
          prefixed=tok.prefixed and k == 0,
          possessive=tok.possessive and last,
        )
      )
  return out


def _is_vocab(low: str) -> bool:
  return (
    low in _SOURCE_WORDS
    or low in _EXCHANGE_WORDS
    or low in _FILLER
    or low in _ASSETS
    or low in _UNITS
    or low in _UNSERVED
  )


def _asset_of(word: str, *, allow_unknown: bool) -> str | None:
  """Return the base asset a single word names, or None."""
  low = word.lower()
  if low in _ASSETS:
    return _ASSETS[low]
  if low in _AMBIGUOUS_ASSETS:
    return _AMBIGUOUS_ASSETS[low]
  if allow_unknown and _TICKER_RE.match(word.upper()) and any(c.isalpha() for c in word):
    return word.upper()
  return None


def _pair_of(tok: _Tok) -> tuple[str, str] | None:
  """Return (base, quote) when a word is a pair like eth/usdt, BTC-USDT or btcusdt."""
  low = tok.low
  if "/" in low or "-" in low:
    parts = re.split(r"[/-]", tok.text)
    if len(parts) != 2 or not all(parts):
      return None
    base_word, quote_word = parts
    loud = tok.prefixed or base_word.isupper()
    base = _asset_of(base_word, allow_unknown=loud)
    if "-" in low and quote_word.lower() not in _QUOTES:
      return None
    if quote_word.lower() in _QUOTES:
      quote: str | None = quote_word.upper()
    else:
      quote = _asset_of(quote_word, allow_unknown=loud or quote_word.isupper())
    if base is None or quote is None:
      return None
    return base, quote
  loud = tok.prefixed or tok.text.isupper()
  for q in sorted(_QUOTES, key=len, reverse=True):
    if low.endswith(q) and len(low) > len(q):
      head = tok.text[: -len(q)]
      if loud or head.lower() in _ASSETS or head.lower() in _AMBIGUOUS_ASSETS:
        base = _asset_of(head, allow_unknown=loud)
        if base is not None:
          return base, q.upper()
  return None
