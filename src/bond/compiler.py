"""Turn a sentence or a JSON spec into a StreamSpec, and a StreamSpec into its stream id.

The sentence compiler is a small deterministic scanner over a fixed vocabulary (no
network, no model): it finds symbols, sources, exchanges and one window interval, and
ignores filler. It only complains about words when it cannot find what a stream needs,
or when a number or unit is malformed.
"""

import hashlib
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from bond.errors import SpecError
from bond.schemas import (
  ONCHAIN_TYPES,
  SOURCE_ALIASES,
  CcxtSource,
  CustomSource,
  OnchainSource,
  StreamSpec,
  TwitterSource,
  normalize_pair,
)

MAX_TEXT_CHARS = 1000
MIN_INTERVAL_SEC = 1
MAX_INTERVAL_SEC = 3600
DEFAULT_INTERVAL_SEC = 5
EXAMPLES = (
  "BTC price + tweets every 5s",
  "ETH trades + liquidations on binance every 10 seconds",
)
KNOWN_EXCHANGES = (
  "binance",
  "okx",
  "bybit",
  "coinbase",
  "kraken",
  "kucoin",
  "bitget",
  "gate",
  "mexc",
  "htx",
)

# ---------------------------------------------------------------------- vocabulary

_EXCHANGE_WORDS = {name: name for name in KNOWN_EXCHANGES} | {
  "okex": "okx",
  "gateio": "gate",
  "gate.io": "gate",
  "huobi": "htx",
  "coinbasepro": "coinbase",
}


def _words(table: dict[str, str]) -> dict[str, str]:
  """Invert {"BTC": "bitcoin btc"} into {"bitcoin": "BTC", "btc": "BTC"}."""
  return {word: key for key, words in table.items() for word in words.split()}


# Names and lowercase tickers; uppercase or $-prefixed unknown tickers are accepted too.
_ASSETS = _words(
  {
    "BTC": "bitcoin btc xbt",
    "ETH": "ethereum ether eth",
    "SOL": "solana sol",
    "DOGE": "dogecoin doge",
    "XRP": "ripple xrp",
    "LINK": "chainlink",
    "ADA": "cardano ada",
    "AVAX": "avalanche avax",
    "DOT": "polkadot",
    "LTC": "litecoin ltc",
    "TRX": "tron trx",
    "MATIC": "polygon matic",
    "SHIB": "shiba shib",
    "PEPE": "pepe",
    "BNB": "bnb",
    "TON": "toncoin",
    "SUI": "sui",
    "APT": "aptos",
    "ARB": "arbitrum arb",
    "OP": "optimism",
    "UNI": "uniswap",
    "ATOM": "cosmos",
    "XLM": "stellar xlm",
    "XMR": "monero xmr",
    "FIL": "filecoin",
    "HBAR": "hedera hbar",
    "INJ": "injective inj",
    "TIA": "celestia tia",
    "JUP": "jupiter jup",
    "BONK": "bonk",
    "WIF": "wif dogwifhat",
    "FLOKI": "floki",
    "AAVE": "aave",
    "KAS": "kaspa",
    "ALGO": "algorand",
    "XTZ": "tezos",
    "BCH": "bch",
    "FTM": "fantom",
    "WLD": "worldcoin",
    "ENA": "ethena",
    "HYPE": "hyperliquid",
  }
)
# Tickers that are also English words: symbols only in context (see _Scanner._ambiguous).
_AMBIGUOUS_ASSETS = {
  w: w.upper() for w in "near link dot ton op uni atom apt ape etc hype pol sei fil".split()
}
_MULTIWORD_ASSETS = {
  ("bitcoin", "cash"): "BCH",
  ("ethereum", "classic"): "ETC",
  ("shiba", "inu"): "SHIB",
  ("binance", "coin"): "BNB",
  ("internet", "computer"): "ICP",
}
_QUOTES = frozenset("usdt usdc usd busd fdusd eur".split())
_QUOTE_LINKS = frozenset("in against vs versus quoted denominated".split())
# Uppercase words that are not tickers even though they look like one.
_NOT_TICKERS = frozenset(
  "API JSON WS URL UTC ETF NFT NFTS CEX DEX OK PLS PLZ ASAP AI PNL ATH TA GM FYI USA".split()
)

_CCXT_WORDS = frozenset(
  """price prices pricing ticker tickers tick ticks trade trades trading volume volumes vol
  market markets ohlc ohlcv candle candles candlestick candlesticks kline klines bar bars
  quote quotes bid bids ask asks spread vwap orderbook ccxt ccxt.ticker ccxt.trades
  exchange exchanges cex""".split()
)
_LIQUIDATION_WORDS = frozenset("liquidation liquidations liq liqs liquidated rekt".split())
_TWITTER_WORDS = frozenset(
  """tweet tweets tweeted twitter x x.tweets x.com post posts mention mentions sentiment
  social chatter buzz""".split()
)
# Word -> the on-chain event type it asks for (None: the default types).
_ONCHAIN_WORDS: dict[str, str | None] = {
  **dict.fromkeys("on-chain onchain onchain.grpc chain blockchain geyser grpc".split()),
  **_words(
    {
      "tx": "transaction transactions tx txs txn txns",
      "transfer": "transfer transfers",
      "block": "block blocks slot slots",
      "account": "account accounts wallet wallets",
    }
  ),
}
_DEFAULT_ONCHAIN_TYPES = ["tx", "transfer"]
# Words that, after "solana"/"sol", make it the chain rather than a traded symbol.
_CHAIN_FOLLOWERS = set(_ONCHAIN_WORDS) | {"activity", "network"}
_SOURCE_WORDS = _CCXT_WORDS | _LIQUIDATION_WORDS | _TWITTER_WORDS | set(_ONCHAIN_WORDS)

_UNITS = {
  **dict.fromkeys("ms msec millisecond milliseconds".split(), Decimal("0.001")),
  **dict.fromkeys("s sec secs second seconds".split(), Decimal(1)),
  **dict.fromkeys("m min mins minute minutes".split(), Decimal(60)),
  **dict.fromkeys("h hr hrs hour hours".split(), Decimal(3600)),
  **dict.fromkeys("d day days".split(), Decimal(86400)),
}
_NUMBER_WORDS = (
  {"a": 1, "an": 1}
  | {
    word: n
    for n, word in enumerate("zero one two three four five six seven eight nine ten".split())
  }
  | {"fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60}
)
_EVERY = frozenset({"every", "each", "per"})
_INTERVAL_WORDS = _EVERY | {"interval", "intervals"}
_ADJECTIVE_UNITS = {"hourly": 3600}
# A duration right before these describes the data ("24h volume"), not the window.
_DESCRIPTIVE_FOLLOWERS = frozenset("volume change high low stats ago history".split())
_CONNECTORS = frozenset({",", "&", "+", ";", "|", "and", "or", "plus"})

_FILLER = frozenset(
  """give me us stream streams streaming with and or plus feed feeds data the of for please
  pls plz show i want wanna a an live real-time realtime real time update updates updated
  aggregated aggregate aggregates aggregation window windows windowed tumbling bucket buckets
  interval intervals every each per in on from at to into via using use by over across get
  send need would like my our all both also along together combined merged merge mixed
  crypto coin coins token tokens info information stats statistics latest current recent new
  hey hi can you could make create build start subscribe track tracking monitor monitoring
  watch watching follow about as well including include activity network just only some any
  its their that this what is are be it then than spot perp perps perpetual perpetuals
  futures rate snapshot snapshots summary emit emitted rolling level levels counts count
  events event pair pairs symbol symbols source sources custom once few several vs versus
  against quoted denominated usdt usd usdc busd fdusd eur do let lets thanks thank""".split()
)

_TOKEN_RE = re.compile(
  r"(?P<url>wss?://[^\s,]+)"
  r"|(?P<num>-?[0-9]+(?:\.[0-9]+)?)(?:-?(?P<unit>[A-Za-z]+))?"
  r"|(?P<prefix>[$#])?(?P<word>[A-Za-z][A-Za-z0-9]*(?:[-./][A-Za-z0-9]+)*)(?P<poss>['\u2019][sS]\b)?"
  r"|(?P<sep>[+,&;|])"
  r"|(?P<other>[$#]|[^\sA-Za-z0-9+,&;|$#]+)"
)
_TICKER_RE = re.compile(r"^[A-Z0-9]{1,15}$")


class CompileError(SpecError, ValueError):
  """A sentence that cannot be compiled; says which words were not understood."""

  code = "invalid_sentence"

  def __init__(self, message: str, unknown_words: list[str] | None = None) -> None:
    self.unknown_words: list[str] = list(unknown_words or [])
    super().__init__(message, unknown_words=self.unknown_words)


# ---------------------------------------------------------------------- scanner


@dataclass
class _Tok:
  kind: str  # url, num, word, sep, other
  text: str  # as written, without a $/# prefix
  prefixed: bool = False
  possessive: bool = False
  unit: str | None = None

  @property
  def low(self) -> str:
    return self.text.lower()


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
  malformed: list[tuple[str, str]] = field(default_factory=list)  # (word, why)


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


class _Scanner:
  """One left-to-right pass over the tokens, collecting what the sentence asks for."""

  def __init__(self, toks: list[_Tok], exchange_words: dict[str, str]) -> None:
    self.toks = toks
    self.exchange_words = exchange_words
    self.found = _Found()
    self.symbol_at: set[int] = set()  # token indexes read as symbols
    self.unquoted: list[int] = []  # indexes into found.bases still on the default quote

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
    # "dot, link & uni trades": follow the list forward to a symbol or a source word.
    j = i
    while self._low(j + 1) in _CONNECTORS:
      j += 2
      if self._is_symbol_word(j):
        return True
      if self._low(j) not in _AMBIGUOUS_ASSETS:
        return False
      if self._low(j + 1) in _SOURCE_WORDS:
        return True
    return False

  def _interval(self, seconds: Decimal, written: str, explicit: bool, after: int) -> None:
    if not explicit and self._low(after) in _DESCRIPTIVE_FOLLOWERS:
      return
    self.found.intervals.append(_Interval(seconds, written, explicit))

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
    explicit = self._low(i - 1) in _EVERY
    unit = tok.unit
    nxt = i + 1
    written = tok.text + (unit or "")
    if unit is None and self._low(i + 1) in _UNITS:
      unit = self.toks[i + 1].text
      nxt = i + 2
      written = f"{tok.text} {unit}"
    if unit is None:
      if self._low(i - 1) not in _INTERVAL_WORDS:
        self.found.malformed.append(
          (tok.text, f"the number {tok.text} has no unit (write 5s, 10 seconds or 1m)")
        )
        return nxt
      unit = "s"
    try:
      value = Decimal(tok.text)
    except InvalidOperation:
      self.found.malformed.append((tok.text, f"{tok.text!r} is not a number"))
      return nxt
    self._interval(value * _UNITS[unit.lower()], written, explicit, nxt)
    return nxt

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
    if pair == ("order", "book"):
      found.ccxt = True
      return i + 2

    if low in _NUMBER_WORDS and nxt_low in _UNITS and len(nxt_low) > 1:
      explicit = self._low(i - 1) in _EVERY
      self._interval(
        Decimal(_NUMBER_WORDS[low]) * _UNITS[nxt_low], f"{low} {nxt_low}", explicit, i + 2
      )
      return i + 2
    if low in _EVERY and nxt_low in _UNITS and len(nxt_low) > 1:
      self._interval(_UNITS[nxt_low], f"{low} {nxt_low}", True, i + 2)
      return i + 2
    if low in _ADJECTIVE_UNITS:
      self._interval(Decimal(_ADJECTIVE_UNITS[low]), low, False, i + 1)
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


# ---------------------------------------------------------------------- compile


def compile_nl(text: str, exchanges: list[str] | None = None) -> StreamSpec:
  """Compile an English sentence into a StreamSpec, or raise CompileError."""
  if not isinstance(text, str):
    raise CompileError(_message("the sentence must be a string", []))
  if not text.strip():
    raise CompileError(_message("the sentence is empty", []))
  if len(text) > MAX_TEXT_CHARS:
    raise CompileError(
      _message(f"the sentence is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}", [])
    )
  # `exchanges`: the ids this deployment serves; naming another one is an error, not silence.
  allowed = [e.strip().lower() for e in exchanges or [] if e.strip()]
  words = dict(_EXCHANGE_WORDS) | {name: name for name in allowed}
  found = _Scanner(_tokenize(text), words).run()

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

  if found.exchanges and not (found.ccxt or found.twitter or found.onchain or found.urls):
    found.ccxt = True  # "ETH on binance": an exchange alone means its prices
  bases_needed = found.ccxt or found.twitter
  symbols = _pairs(found)
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
  for url in dict.fromkeys(found.urls):
    try:
      sources.append(CustomSource.model_validate({"url": url}))
    except ValidationError:
      raise CompileError(_message(f"{url!r} is not a ws:// or wss:// URL", [url]), [url]) from None
  try:
    return StreamSpec(
      sources=sources,
      symbols=symbols,
      interval_sec=interval,
      exchanges=found.exchanges or None,
    )
  except ValidationError as exc:
    raise CompileError(_message(_validation_lines(exc)[0], []), []) from None


def _pairs(found: _Found) -> list[str]:
  pairs: list[str] = []
  for base, quote in zip(found.bases, found.quotes, strict=True):
    if base == (quote or "USDT"):
      continue  # "USDT/USDT" is no market
    try:
      pairs.append(normalize_pair(f"{base}/{quote or 'USDT'}"))
    except ValueError:
      continue
  pairs = list(dict.fromkeys(pairs))
  if len(pairs) > 20:
    raise CompileError(_message(f"{len(pairs)} symbols; a stream takes at most 20", []))
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


# ---------------------------------------------------------------------- ids


def canonical_json(spec: StreamSpec) -> str:
  """Return the spec as compact JSON with sorted keys and no null fields."""
  body = spec.model_dump(mode="json", exclude_none=True)
  return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def stream_id(spec: StreamSpec, owner: str = "local") -> str:
  """Return the 16-hex-char id of a spec owned by a project."""
  digest = hashlib.sha256(f"{owner}\n{canonical_json(spec)}".encode())
  return digest.hexdigest()[:16]


# ---------------------------------------------------------------------- JSON specs

_SOURCE_TAGS = {"ccxt", "twitter", "onchain", "custom"}
_ALLOWED_TYPES = ", ".join(sorted(SOURCE_ALIASES))
_HINTS = {
  "interval_sec": f"whole seconds from {MIN_INTERVAL_SEC} to {MAX_INTERVAL_SEC}",
  "symbols": 'a list of tickers or pairs, e.g. ["BTC", "ETH/USDT"]',
  "exchanges": 'a list of ccxt exchange ids, e.g. ["binance", "okx"]',
  "sources": 'a list of 1 to 8 sources, e.g. [{"type": "ccxt"}, {"type": "twitter"}]',
  "type": _ALLOWED_TYPES,
  "event_types": "a list of " + ", ".join(ONCHAIN_TYPES),
  "url": "a ws:// or wss:// URL",
  "liquidations": "true or false",
}


def parse_spec(data: dict[str, Any]) -> StreamSpec:
  """Validate a JSON spec into a StreamSpec, or raise SpecError naming each bad field."""
  if not isinstance(data, dict):
    raise SpecError("spec: must be a JSON object with sources, symbols and interval_sec")
  lines = _unknown_type_lines(data)
  try:
    spec = StreamSpec.model_validate(data)
  except ValidationError as exc:
    more = _validation_lines(exc)
    if lines:
      more = [m for m in more if not m.startswith("sources: unknown type")]
    lines += more
  else:
    if not lines:
      return spec
  raise SpecError("invalid stream spec:\n" + "\n".join(lines), errors=lines)


def _unknown_type_lines(data: dict[str, Any]) -> list[str]:
  # The model stops at the first unknown type; name every one, with its index.
  sources = data.get("sources")
  if not isinstance(sources, list):
    return []
  lines = []
  for k, src in enumerate(sources):
    name = src.get("type") if isinstance(src, dict) else src
    if isinstance(name, str) and name.strip().lower() not in SOURCE_ALIASES:
      lines.append(f"sources.{k}.type: unknown source type {name!r}; allowed: {_ALLOWED_TYPES}")
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
      msg = "missing source type" if got is None else f"unknown source type {got!r}"
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
