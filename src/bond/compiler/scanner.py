"""One left-to-right pass over a sentence's tokens, collecting what it asks for."""

import contextlib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from bond.compiler.lexer import _asset_of, _pair_of, _Tok
from bond.compiler.lexicon import (
  _ADJECTIVE_UNITS,
  _AMBIGUOUS_ASSETS,
  _ASSETS,
  _CANDLE_WORDS,
  _CCXT_WORDS,
  _CHAIN_FOLLOWERS,
  _CLOCK_RE,
  _CONNECTORS,
  _DESCRIPTIVE_FOLLOWERS,
  _EVERY,
  _EXCHANGE_OR_ASSET,
  _FILLER,
  _FRACTION_WORDS,
  _HISTORY_WORDS,
  _INTERVAL_WORDS,
  _LIFETIME_WORDS,
  _LIQUIDATION_WORDS,
  _MULTIWORD_ASSETS,
  _NOT_TICKERS,
  _NUMBER_WORDS,
  _ONCHAIN_WORDS,
  _PAST_WORDS,
  _QUOTE_LINKS,
  _QUOTES,
  _SCHEDULE_WORDS,
  _SOURCE_WORDS,
  _STRAY_UNITS,
  _TENS,
  _TIMES,
  _TWITTER_WORDS,
  _UNITS,
  _UNSERVED,
  _UNSERVED_PAIRS,
  _VAGUE_COUNTS,
  _WINDOW_NOUNS,
)

# Words that may stand between "last"/"past" and its duration ("the last few hours").
_VAGUE = frozenset("few couple of several many the".split())
# "ask" is a verb after or before these ("can I ask for"), otherwise the ask side of a book.
_ASK_VERB_NEXT = frozenset("for you me to about if whether".split())
_AFTER_DURATION_PAST = frozenset("ago back".split())
_PER = frozenset("a an per every each".split())


def _value(text: str) -> Decimal:
  """Return a number as written: 5, 1.5, 1/2 (raises InvalidOperation, ZeroDivisionError)."""
  top, _, bottom = text.partition("/")
  return Decimal(top) / Decimal(bottom) if bottom else Decimal(top)


@dataclass
class _Interval:
  seconds: Decimal
  written: str
  explicit: bool


@dataclass
class _Found:
  bases: list[str] = field(default_factory=list)
  quotes: list[str | None] = field(default_factory=list)
  ccxt: bool = False
  liquidations: bool = False
  twitter: bool = False
  onchain: bool = False
  event_types: set[str] = field(default_factory=set)
  chain_named: bool = False
  exchanges: list[str] = field(default_factory=list)
  urls: list[str] = field(default_factory=list)
  intervals: list[_Interval] = field(default_factory=list)
  unknown: list[str] = field(default_factory=list)
  unserved: list[tuple[str, str]] = field(default_factory=list)  # (word, what it asks for)
  past: list[str] = field(default_factory=list)  # "last hour": a backfill request
  lifetime: list[str] = field(default_factory=list)  # "for 10 minutes": a stream's lifetime
  malformed: list[tuple[str, str]] = field(default_factory=list)  # (word, why)


class _Scanner:
  """One left-to-right pass over the tokens, collecting what the sentence asks for."""

  def __init__(self, toks: list[_Tok], exchange_words: dict[str, str]) -> None:
    self.toks = toks
    self.exchange_words = exchange_words
    self.found = _Found()
    self.symbol_at: set[int] = set()  # token indexes read as symbols
    self.unquoted: list[int] = []  # indexes into found.bases still on the default quote
    self._ahead: dict[int, bool] = {}  # token index -> does the list after it reach a symbol

  def run(self) -> _Found:
    i = 0
    while i < len(self.toks):
      i = self._step(i)
    return self.found

  # -------------------------------------------------------------- helpers

  def _tok(self, i: int) -> _Tok | None:
    return self.toks[i] if 0 <= i < len(self.toks) else None

  def _low(self, i: int) -> str:
    tok = self._tok(i)
    return tok.low if tok is not None and tok.kind in ("word", "sep") else ""

  def _add_symbol(self, i: int, base: str, quote: str | None = None) -> None:
    self.found.bases.append(base)
    self.found.quotes.append(quote)
    if quote is None:
      self.unquoted.append(len(self.found.bases) - 1)
    self.symbol_at.add(i)

  def _is_symbol_word(self, i: int) -> bool:
    tok = self._tok(i)
    if tok is None or tok.kind != "word":
      return False
    return (
      tok.low in _ASSETS
      or _pair_of(tok) is not None
      or (
        tok.text.isupper()
        and tok.low not in _SOURCE_WORDS
        and _asset_of(tok.text, allow_unknown=True) is not None
      )
    )

  def _ambiguous(self, i: int, tok: _Tok) -> bool:
    """Return whether an English-looking ticker (near, link, dot) is meant as a symbol."""
    if tok.prefixed or tok.possessive or (tok.text.isupper() and len(tok.text) > 1):
      return True
    if self._low(i + 1) in _SOURCE_WORDS:
      return True
    if self._low(i - 1) in _CONNECTORS and (i - 2) in self.symbol_at:
      return True
    return self._list_ahead(i)

  def _list_ahead(self, i: int) -> bool:
    """Return whether the list after token i ("dot, link & uni trades") reaches a symbol.

    The answer at i is the answer at the next item of the list, so each answer is kept:
    a sentence of 300 "dot," costs one walk, not 300 (it was quadratic).
    """
    walked: list[int] = []
    j = i
    while True:
      if j in self._ahead:
        result = self._ahead[j]
        break
      walked.append(j)
      if self._low(j + 1) not in _CONNECTORS:
        result = False
        break
      j += 2
      if self._is_symbol_word(j):
        result = True
        break
      if self._low(j) not in _AMBIGUOUS_ASSETS:
        result = False
        break
      if self._low(j + 1) in _SOURCE_WORDS:
        result = True
        break
    for k in walked:
      self._ahead[k] = result
    return result

  def _interval(self, seconds: Decimal, written: str, explicit: bool, after: int) -> int:
    """Record a duration read before token `after`; return where to go on."""
    follower = self._low(after)
    if follower in _AFTER_DURATION_PAST:
      self.found.past.append(f"{written} {follower}")  # "2 hours ago"
      return after + 1
    if follower in _WINDOW_NOUNS:
      explicit = True  # "5 second windows"
    elif not explicit and follower in _DESCRIPTIVE_FOLLOWERS:
      return after
    self.found.intervals.append(_Interval(seconds, written, explicit))
    return after

  def _per(self, i: int, times: Decimal) -> int | None:
    """Read "twice a minute", "3 times per hour" at token i as an interval; return the
    index after it, or None."""
    j = i + (2 if self._low(i + 1) == "times" else 1)
    if times <= 0 or self._low(j) not in _PER:
      return None
    duration = self._duration(j + 1, bare=True)
    if duration is None:
      return None
    seconds, written, nxt = duration
    phrase = " ".join(t.text for t in self.toks[i : j + 1]) + " " + written
    return self._interval(seconds / times, phrase, True, nxt)

  def _keyed_unit(self, i: int) -> str | None:
    """Return the unit of a number written as a key's value: "interval_sec=5" (sec),
    "interval: 5", "window=30" (s), or None."""
    k = i - 1
    unit = "s"
    if self._low(k) in _UNITS:
      unit = self._low(k)
      k -= 1
    return unit if self._low(k) in _INTERVAL_WORDS | _WINDOW_NOUNS else None

  def _spoken(self, i: int) -> tuple[Decimal, int] | None:
    """Read a quantity in words at token i: five, twenty five, two and a half, a quarter,
    three quarters, half. Return (value, index after it) or None."""
    low = self._low(i)
    if low in _FRACTION_WORDS:
      return _FRACTION_WORDS[low], i + 1  # "half a minute", "quarter hour"
    if low == "couple" or (low in ("a", "an") and self._low(i + 1) == "couple"):
      return Decimal(2), i + (1 if low == "couple" else 2)  # "a couple of minutes"
    if low not in _NUMBER_WORDS:
      return None
    value = Decimal(_NUMBER_WORDS[low])
    j = i + 1
    ones = self._low(j)
    if low in _TENS and ones in _NUMBER_WORDS and 0 < _NUMBER_WORDS[ones] < 10:
      value += _NUMBER_WORDS[ones]  # "twenty five", "twenty-five"
      j += 1
    if self._low(j) == "and" and self._low(j + 1) in ("a", "an"):
      frac = _FRACTION_WORDS.get(self._low(j + 2))
      if frac is not None:
        return value + frac, j + 3  # "two and a half"
    frac = _FRACTION_WORDS.get(self._low(j))
    if frac is not None:
      return value * frac, j + 1  # "a half", "three quarters"
    return value, j

  def _duration(self, i: int, *, bare: bool) -> tuple[Decimal, str, int] | None:
    """Read a duration starting at token i ("5s", "10 seconds", "half a minute", "twenty
    five secs", and with `bare` a lone unit: "minute"). Return (seconds, as written, the
    index after it) or None."""
    tok = self._tok(i)
    if tok is None:
      return None
    j = i
    if tok.kind == "num":
      unit = tok.unit
      j = i + 1
      if unit is None:
        if self._low(j) not in _UNITS:
          return None
        unit = self.toks[j].text
        j += 1
      try:
        value = _value(tok.text)
      except (InvalidOperation, ZeroDivisionError):
        return None
      seconds = value * _UNITS[unit.lower()]
    else:
      spoken = self._spoken(i)
      if spoken is not None:
        value, j = spoken
        if self._low(j) == "of":
          j += 1  # "a quarter of an hour"
        if self._low(j) in ("a", "an") and self._low(j + 1) in _UNITS:
          j += 1  # "half a minute"
      elif not bare:
        return None
      else:
        value = Decimal(1)
      unit = self._low(j)
      if unit not in _UNITS or len(unit) < 2:
        return None
      seconds = value * _UNITS[unit]
      j += 1
    if self._low(j) == "and" and self._low(j + 1) in ("a", "an") and self._low(j + 2) == "half":
      seconds += _UNITS[unit.lower()] / 2  # "a minute and a half"
      j += 3
    written = " ".join(t.text + (t.unit or "") for t in self.toks[i:j])
    return seconds, written, j

  # -------------------------------------------------------------- one token

  def _step(self, i: int) -> int:
    tok = self.toks[i]
    if tok.kind == "url":
      self.found.urls.append(tok.text)
      return i + 1
    if tok.kind == "num":
      return self._number(i, tok)
    if tok.kind == "sep":
      return i + 1
    if tok.kind == "other":
      self.found.unknown.append(tok.text)
      return i + 1
    return self._word(i, tok)

  def _number(self, i: int, tok: _Tok) -> int:
    if tok.text == "24/7" and tok.unit is None:
      return i + 1  # "24/7": a stream is always on
    explicit = self._low(i - 1) in _EVERY
    if tok.unit is None and self._low(i + 1) == "times":
      with contextlib.suppress(InvalidOperation, ZeroDivisionError):
        per = self._per(i, _value(tok.text))
        if per is not None:
          return per
    duration = self._duration(i, bare=False)
    if duration is not None:
      seconds, written, nxt = duration
      return self._interval(seconds, written, explicit, nxt)
    unit = tok.unit
    nxt = i + 1
    written = tok.text + (unit or "")
    if unit is None and self._low(i + 1) in _UNITS:
      unit = self.toks[i + 1].text  # only reached when the number is bad: "5/0 min"
      nxt = i + 2
    if unit is None:
      unit = self._keyed_unit(i)
      if unit is None:
        self.found.malformed.append(
          (tok.text, f"the number {tok.text} has no unit (write 5s, 10 seconds or 1m)")
        )
        return nxt
    try:
      value = _value(tok.text)
    except (InvalidOperation, ZeroDivisionError):
      self.found.malformed.append((tok.text, f"{tok.text!r} is not a number"))
      return nxt
    return self._interval(value * _UNITS[unit.lower()], written, explicit, nxt)

  def _word(self, i: int, tok: _Tok) -> int:
    low = tok.low
    nxt_low = self._low(i + 1)
    found = self.found

    pair = (low, nxt_low)
    if pair in _MULTIWORD_ASSETS:
      self._add_symbol(i, _MULTIWORD_ASSETS[pair])
      return i + 2
    if pair == ("on", "chain"):
      found.onchain = True
      return i + 2
    if not tok.prefixed:
      if pair in _UNSERVED_PAIRS:
        found.unserved.append((f"{tok.text} {self.toks[i + 1].text}", _UNSERVED_PAIRS[pair]))
        return i + 2
      if low in _UNSERVED:
        found.unserved.append((tok.text, _UNSERVED[low]))
        return i + 1
      if low == "ask" and nxt_low not in _ASK_VERB_NEXT:
        found.unserved.append((tok.text, "bid/ask quotes"))
        return i + 1

    if low in _SCHEDULE_WORDS or _CLOCK_RE.match(low):
      found.lifetime.append(tok.text)
      return i + 1
    if low in _HISTORY_WORDS:
      found.past.append(tok.text)
      return i + 1
    times: Decimal | None = Decimal(_TIMES[low]) if low in _TIMES else None
    if times is None and self._low(i + 1) == "times":
      spoken = self._spoken(i)
      times = spoken[0] if spoken is not None and spoken[1] == i + 1 else None
    if times is not None:
      per = self._per(i, times)
      if per is not None:
        return per
    if low in _EVERY and self._low(i + 1) in _VAGUE_COUNTS:
      j = i + 2
      if self._low(j) == "of":
        j += 1
      if self._low(j) in _UNITS:
        phrase = " ".join(t.text for t in self.toks[i : j + 1])
        found.malformed.append((phrase, f"{phrase!r} gives no number (write every 5 seconds)"))
        return j + 1

    if low in _PAST_WORDS or low in _LIFETIME_WORDS or low == "for":
      j = i + 1
      while self._low(j) in _VAGUE and j < i + 4:
        j += 1
      # "for" takes a duration only right after it ("for 10 minutes", not "for the data").
      duration = self._duration(j, bare=low != "for") if low != "for" or j == i + 1 else None
      follower = self._low(duration[2]) if duration is not None else ""
      if low == "for" and follower in _CANDLE_WORDS:
        duration = None  # "for 5 min candles": the candles' size
      if duration is not None and follower not in _WINDOW_NOUNS:
        phrase = " ".join(t.text for t in self.toks[i:j]) + " " + duration[1]
        (found.past if low in _PAST_WORDS else found.lifetime).append(phrase)
        return duration[2]

    if low in _NUMBER_WORDS or low in _FRACTION_WORDS:
      duration = self._duration(i, bare=False)
      if duration is not None:
        seconds, written, nxt = duration
        return self._interval(seconds, written, self._low(i - 1) in _EVERY, nxt)
    if low in _EVERY:
      if nxt_low == "other":
        duration = self._duration(i + 2, bare=True)
        if duration is not None:
          seconds, written, nxt = duration
          return self._interval(2 * seconds, f"{low} other {written}", True, nxt)
      duration = self._duration(i + 1, bare=True)
      if duration is not None:
        seconds, written, nxt = duration
        return self._interval(seconds, written, True, nxt)
    if low in _ADJECTIVE_UNITS:
      self._interval(Decimal(_ADJECTIVE_UNITS[low]), low, False, i + 1)
      return i + 1

    if low in _EXCHANGE_OR_ASSET and self._low(i - 1) in ("on", "from", "via", "at"):
      low = _EXCHANGE_OR_ASSET[low]
      if low not in self.exchange_words:
        found.exchanges += (
          [low] if low not in found.exchanges else []
        )  # not run here: refused with the exchanges that are
        return i + 1
    if low in self.exchange_words and not tok.prefixed:
      name = self.exchange_words[low]
      if name not in found.exchanges:
        found.exchanges.append(name)
      return i + 1
    if low in _LIQUIDATION_WORDS:
      found.ccxt = found.liquidations = True
      return i + 1
    if low in _CCXT_WORDS and not tok.prefixed:
      found.ccxt = True
      return i + 1
    if low in _TWITTER_WORDS:
      found.twitter = True
      return i + 1
    if low in _ONCHAIN_WORDS and not (tok.prefixed and tok.text.isupper()):
      found.onchain = True
      kind = _ONCHAIN_WORDS[low]
      if kind is not None:
        found.event_types.add(kind)
      return i + 1

    if low in _QUOTES and not tok.prefixed:
      return self._quote(i, low)

    if _ASSETS.get(low) == "SOL" and nxt_low in _CHAIN_FOLLOWERS and not tok.possessive:
      # "solana activity", "SOL on-chain transfers": the chain, not a traded symbol.
      found.chain_named = found.onchain = True
      return i + 1
    if low in _ASSETS:
      if self._low(i - 1) in ("in", "against") and self.unquoted and not tok.possessive:
        return self._quote(i, _ASSETS[low].lower())  # "ETH price in BTC"
      self._add_symbol(i, _ASSETS[low])
      return i + 1
    if low in _AMBIGUOUS_ASSETS:
      if self._ambiguous(i, tok):
        self._add_symbol(i, _AMBIGUOUS_ASSETS[low])
      else:
        found.unknown.append(tok.text)  # reported only if the sentence fails
      return i + 1
    pair_parts = _pair_of(tok)
    if pair_parts is not None:
      self._add_symbol(i, *pair_parts)
      return i + 1
    keyed = self._low(i - 1) in _INTERVAL_WORDS or self._low(i + 1) in _INTERVAL_WORDS
    nxt_tok = self._tok(i + 1)
    if low in _STRAY_UNITS and not keyed and (nxt_tok is None or nxt_tok.kind != "num"):
      # "interval_sec=5" and "sec interval" are keys, not a unit left without its number
      found.malformed.append(
        (tok.text, f"{tok.text!r} comes without a number (write every 5 seconds or 1m)")
      )
      return i + 1
    if low in _FILLER or low in _UNITS:
      return i + 1
    loud = tok.prefixed or (tok.text.isupper() and len(tok.text) > 1)
    if loud and tok.text.upper() not in _NOT_TICKERS:
      base = _asset_of(tok.text, allow_unknown=True)
      if base is not None:
        self._add_symbol(i, base)
        return i + 1
    found.unknown.append(("$" if tok.prefixed else "") + tok.text)
    return i + 1

  def _quote(self, i: int, low: str) -> int:
    # "BTC and ETH in USDC": re-quote the symbols still on the default quote.
    prev = i - 1
    if self._low(prev) in _QUOTE_LINKS:
      prev -= 1
    if (prev in self.symbol_at or self._low(i - 1) in _QUOTE_LINKS) and self.unquoted:
      for k in self.unquoted:
        self.found.quotes[k] = low.upper()
      self.unquoted.clear()
    return i + 1
