"""Backfill durations: `"backfill": "1h"` in a request, or "... for the last hour" in a sentence.

A backfill is not part of a stream's spec (nor of its id): the same stream asked with or
without history is the same stream. These helpers only read how much history is asked for;
the API bounds it (BOND_MAX_BACKFILL_SEC, raw retention) and the worker computes it.
"""

import re

from bond.errors import SpecError

MAX_DURATION_CHARS = 40
PHRASE_TAIL_CHARS = 120  # longer than any phrase: "for the last ... of history"

_UNIT_SEC = {
  "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
  "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
  "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
  "d": 86_400, "day": 86_400, "days": 86_400,
}  # fmt: skip

_WORDS = {
  "a": 1.0, "an": 1.0, "one": 1.0, "two": 2.0, "three": 3.0, "four": 4.0, "five": 5.0,
  "six": 6.0, "seven": 7.0, "eight": 8.0, "nine": 9.0, "ten": 10.0, "twelve": 12.0,
  "fifteen": 15.0, "twenty": 20.0, "thirty": 30.0, "forty": 40.0, "forty-five": 45.0,
  "sixty": 60.0, "ninety": 90.0, "half": 0.5, "half a": 0.5, "half an": 0.5, "couple": 2.0,
  "a couple of": 2.0, "couple of": 2.0, "few": 3.0, "a few": 3.0,
}  # fmt: skip

_UNIT_RE = "|".join(sorted(_UNIT_SEC, key=len, reverse=True))
_NUM_RE = r"\d+(?:\.\d+)?|" + "|".join(re.escape(w) for w in sorted(_WORDS, key=len, reverse=True))
# One or more "<number><unit>" parts ("1h30m", "2 hours 15 minutes"), or a bare unit ("hour").
_PART = rf"(?:(?:{_NUM_RE})\s*(?:{_UNIT_RE})(?![a-z]))"
_DURATION_RE = re.compile(rf"^\s*(?:{_PART}(?:\s*(?:and\s+)?{_PART})*|(?:{_UNIT_RE}))\s*$", re.I)
_PART_RE = re.compile(rf"(?P<num>{_NUM_RE})\s*(?P<unit>{_UNIT_RE})(?![a-z])", re.I)

# "... for the last hour", "over the past 30 minutes", "with the last 2 hours",
# "including the previous 90 seconds", "backfill 1h" at the end of a sentence.
_PHRASE_RE = re.compile(
  r"(?:[\s,;]+|^)(?:(?:for|over|with|from|covering|including|incl\.?)\s+(?:the\s+)?"
  r"(?:last|past|previous|preceding)\s+|(?:and\s+|with\s+)?backfill(?:ed|ing)?\s+(?:of\s+)?)"
  r"(?P<dur>[\w.\- ]{1,40}?)(?:\s+of\s+(?:history|data|windows))?\s*[.!]*\s*$",
  re.I,
)


def parse_duration(text: str | int) -> int:
  """Return the seconds of a duration such as "90s", "30m", "1h", "1h30m", "2 hours", "hour".

  An int is taken as seconds. Raises SpecError naming what is wrong.
  """
  if isinstance(text, bool) or not isinstance(text, (str, int)):
    raise SpecError('backfill: give a duration such as "90s", "30m", "1h" or seconds as a number')
  if isinstance(text, int):
    seconds = text
  else:
    shown = text if len(text) <= MAX_DURATION_CHARS else text[:MAX_DURATION_CHARS] + "..."
    clean = text.strip().lower()
    if len(clean) > MAX_DURATION_CHARS or not _DURATION_RE.match(clean):
      raise SpecError(
        f'backfill: {shown!r} is not a duration; write one such as "90s", "30m", "1h" or "1h30m"'
      )
    if clean in _UNIT_SEC:  # "hour": one of it
      seconds = _UNIT_SEC[clean]
    else:
      total = 0.0
      for m in _PART_RE.finditer(clean):
        num = m.group("num").lower()
        value = _WORDS[num] if num in _WORDS else float(num)
        total += value * _UNIT_SEC[m.group("unit").lower()]
      seconds = round(total)
  if seconds <= 0:
    raise SpecError("backfill: the duration must be at least one second")
  return seconds


def split_backfill(sentence: str) -> tuple[str, int | None]:
  """Return the sentence without a trailing backfill phrase, and that phrase's seconds.

  "BTC price every 1s for the last hour" -> ("BTC price every 1s", 3600). A sentence
  without such a phrase comes back unchanged with None. A phrase whose duration cannot be
  read ("for the last blue moon") is left in the sentence, for the compiler to refuse.
  """
  # The phrase ends the sentence and is short: look at the tail only (bounded work).
  cut = max(0, len(sentence) - PHRASE_TAIL_CHARS)
  m = _PHRASE_RE.search(sentence[cut:])
  if m is None:
    return sentence, None
  try:
    seconds = parse_duration(m.group("dur"))
  except SpecError:
    return sentence, None
  return sentence[: cut + m.start()].rstrip(" ,;"), seconds
