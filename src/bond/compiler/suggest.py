"""Did you mean ...? A pair an exchange does not list, matched against a precomputed index.

`difflib.get_close_matches(pair, markets)` compares the pair with every market: with an
exchange's ~2,500 markets that is 20-40 ms per unknown pair on the API's event loop, and a
20-symbol stream over 3 exchanges may ask 60 times. The index here is built once per market
list (and cached while the list lives) and answers in microseconds, whatever the list size:

- every base asset is filed under itself and under each spelling with one letter deleted
  (a symmetric-delete index), so the bases one edit away from the asked one (a wrong,
  missing or extra letter, two letters swapped) are found with a few dictionary lookups;
- a suggestion is the listed pair whose base is the asked one or one edit from it,
  preferring the same base, then a quote one edit from the asked one, then USDT.
"""

from functools import lru_cache

PREFERRED_QUOTE = "USDT"


def _deletes(word: str) -> set[str]:
  return {word} | {word[:k] + word[k + 1 :] for k in range(len(word))}


def one_edit(a: str, b: str) -> bool:
  """Return whether two words are equal or one edit apart (a letter changed, added,
  removed, or two neighbours swapped)."""
  if a == b:
    return True
  if abs(len(a) - len(b)) > 1:
    return False
  if len(a) == len(b):
    diff = [k for k in range(len(a)) if a[k] != b[k]]
    if len(diff) == 1:
      return True
    return (
      len(diff) == 2
      and diff[1] == diff[0] + 1
      and (a[diff[0]], a[diff[1]]) == (b[diff[1]], b[diff[0]])
    )
  short, long_ = (a, b) if len(a) < len(b) else (b, a)
  return any(long_[:k] + long_[k + 1 :] == short for k in range(len(long_)))


class SymbolIndex:
  """The markets of one exchange, indexed for "did you mean" lookups."""

  def __init__(self, markets: frozenset[str]) -> None:
    self.markets = markets
    self._by_base: dict[str, list[str]] = {}
    self._by_spelling: dict[str, set[str]] = {}
    for pair in sorted(markets):
      self._by_base.setdefault(pair.split("/")[0], []).append(pair)
    for base in self._by_base:
      for spelling in _deletes(base):
        self._by_spelling.setdefault(spelling, set()).add(base)

  def closest(self, pair: str) -> str | None:
    """Return the listed pair closest to `pair`, or None if none is one edit away."""
    if pair in self.markets:
      return pair
    base, _, quote = pair.partition("/")
    near: set[str] = set()
    for spelling in _deletes(base):
      near |= self._by_spelling.get(spelling, set())
    candidates = [p for b in near if one_edit(b, base) for p in self._by_base[b]]
    if not candidates:
      return None

    def rank(candidate: str) -> tuple[bool, bool, bool, str]:
      c_base, _, c_quote = candidate.partition("/")
      return (c_base != base, not one_edit(c_quote, quote), c_quote != PREFERRED_QUOTE, candidate)

    return min(candidates, key=rank)


@lru_cache(maxsize=32)
def symbol_index(markets: frozenset[str]) -> SymbolIndex:
  """Return the index of a market list (built once per list; frozensets cache their hash)."""
  return SymbolIndex(markets)


def suggest_pair(pair: str, markets: frozenset[str]) -> str | None:
  """Return a listed pair close to `pair` ("did you mean"), or None; microseconds per call."""
  return symbol_index(markets).closest(pair)
