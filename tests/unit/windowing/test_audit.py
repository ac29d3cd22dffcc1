"""The window audit (the chaos verdict's recount): a window short of on-time trades fails unless it says so."""

from bond.windowing.audit import RawIndex, classify, classify_empty

END = 10_000


def window(trades: int, volume: float, complete: bool = True) -> dict:
  return {"seq": END, "interval_sec": 2, "symbol": "BTC/USDT", "trades": trades,
          "volume_sum": volume, "complete": complete}  # fmt: skip


RAW = {("ex", "BTC/USDT"): [
  (8_500, 1.0, "1", 8_600),  # on time
  (9_000, 2.0, "2", 9_100),  # on time
  (9_500, 4.0, "3", 30_000),  # backfilled long after the deadline
  (10_000, 8.0, "4", 10_100),  # the next window's
]}  # fmt: skip


def test_recount_takes_the_window_span_and_tells_on_time_from_backfilled():
  got = RawIndex(RAW).recount(window(0, 0.0), ["ex"], lateness_ms=1000)
  assert (got.n, got.vol, got.n_on_time, got.vol_on_time) == (3, 7.0, 2, 3.0)


def test_windows_are_classified_by_what_they_lack_and_whether_they_say_so():
  index = RawIndex(RAW)

  def kind(event: dict) -> str | None:
    return classify(event, index.recount(event, ["ex"], lateness_ms=1000))

  assert kind(window(3, 7.0)) is None
  assert kind(window(2, 3.0)) == "raw_late"
  assert kind(window(1, 1.0)) == "raw_mismatch"
  assert kind(window(1, 1.0, complete=False)) == "raw_flagged"
  assert kind(window(0, 0.0)) == "raw_mismatch"


def test_an_empty_window_is_right_only_where_the_raw_topic_has_no_trade_either():
  index = RawIndex(RAW)
  traded = index.recount(window(0, 0.0), ["ex"], lateness_ms=1000)
  idle = RawIndex({("ex", "BTC/USDT"): [(10_000, 8.0, "4", 10_100)]}).recount(
    window(0, 0.0), ["ex"], lateness_ms=1000
  )
  assert classify_empty(window(3, 7.0), traded) is None
  assert classify_empty(window(0, 0.0), traded) == "empty"
  assert classify_empty(window(0, 0.0, complete=False), traded) == "empty_flagged"
  # The exchange stamped no trade in the window (the sim's loop was held past it).
  assert classify_empty(window(0, 0.0), idle) == "empty_sim_idle"
  # The raw topic could not be read: nothing excuses an empty window claiming complete.
  assert classify_empty(window(0, 0.0), None) == "empty"
