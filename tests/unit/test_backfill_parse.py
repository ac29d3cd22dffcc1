"""Backfill durations and the "... for the last hour" phrase of a sentence."""

import pytest

from bond.compiler.backfill import parse_duration, split_backfill
from bond.errors import SpecError


@pytest.mark.parametrize(
  ("text", "seconds"),
  [("90s", 90), ("30m", 1800), ("1h", 3600), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400),
   ("2 hours", 7200), ("hour", 3600), ("an hour", 3600), ("half an hour", 1800),
   ("45 min", 2700), ("two hours", 7200), ("1 day", 86_400), (600, 600), (" 5M ", 300)],
)  # fmt: skip
def test_parse_duration(text, seconds):
  assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "h1", "soon", "0s", -5, 0, True, 1.5, "9" * 50, None])
def test_parse_duration_refuses_what_is_not_one(text):
  with pytest.raises(SpecError, match="backfill"):
    parse_duration(text)


@pytest.mark.parametrize(
  ("sentence", "rest", "seconds"),
  [
    ("BTC price every 1s for the last hour", "BTC price every 1s", 3600),
    ("ETH vwap every 5s for the past 30 minutes.", "ETH vwap every 5s", 1800),
    ("BTC trades every 10s, with the last 2 hours", "BTC trades every 10s", 7200),
    ("SOL price over the previous 90 seconds", "SOL price", 90),
    ("BTC price every 1s backfill 1h", "BTC price every 1s", 3600),
    ("BTC price every 1s for the last half an hour", "BTC price every 1s", 1800),
    ("BTC price every 1s", "BTC price every 1s", None),
    (
      "BTC price every 1s for the last blue moon",
      "BTC price every 1s for the last blue moon",
      None,
    ),
    ("BTC price for the last hour every 1s", "BTC price for the last hour every 1s", None),
  ],
)
def test_split_backfill(sentence, rest, seconds):
  assert split_backfill(sentence) == (rest, seconds)


def test_split_backfill_reads_only_the_tail_of_a_long_sentence():
  spaces = " " * 60_000
  assert split_backfill(spaces + "x") == (spaces + "x", None)  # fast, no catastrophic search
  long = "BTC price every 1s" + " and" * 500 + " for the last hour"
  assert split_backfill(long) == (long[: -len(" for the last hour")], 3600)
