"""Stage 1 and stage 2 together, on an injected clock: windows, lateness, late counting, restarts."""

from bond.windowing import KeyState, Stage1
from tests.unit.windowing.helpers import (
  FakeClock,
  Pipeline,
  heartbeat,
  make_stage2,
  stream,
  trade,
)

T0 = 1_700_000_000_000  # a whole second
BTC = {"sources": ["ccxt"], "symbols": ["BTC/USDT"], "interval_sec": 2, "exchanges": ["ex"]}
FEED = "ccxt|ex|BTC/USDT"


def test_stage1_closes_panes_on_progress_and_skips_replayed_records():
  clock = FakeClock(T0)
  s1 = Stage1(1000, clock)
  st = KeyState()
  s1.apply(st, "ccxt", "BTC/USDT", 1, trade(T0 + 10, 1.0, 1.0))
  s1.apply(st, "ccxt", "BTC/USDT", 2, trade(T0 + 1500, 2.0, 1.0))
  assert [(o.start_ms, o.pane.events) for o in s1.close(st)] == [(T0 - 1000, 0), (T0, 1)]
  s1.apply(st, "ccxt", "BTC/USDT", 3, heartbeat(T0 + 2000))
  assert [(o.start_ms, o.pane.events) for o in s1.close(st)] == [(T0 + 1000, 1)]
  s1.apply(st, "ccxt", "BTC/USDT", 3, trade(T0 + 2100, 2.0, 1.0))  # replayed after a restart
  assert s1.stats["replayed"] == 1
  s1.apply(st, "ccxt", "BTC/USDT", 4, trade(T0 + 999, 2.0, 1.0))  # its pane is closed
  assert s1.stats["late"] == 1
  back = KeyState.from_wire(st.to_wire())
  assert back.offset == 4 and back.feeds[FEED].closed_until_ms == T0 + 2000


def test_window_goes_out_complete_once_every_feed_passed_its_end():
  clock = FakeClock(T0)
  d = stream("s1", BTC, created_ms=T0)
  p = Pipeline(clock, [d])
  first = p.stage2._streams["s1"].next_end_ms
  p.raw("ccxt", "BTC/USDT", trade(first - 2000, 10.0, 1.0), trade(first - 1, 12.0, 3.0))
  assert p.out.windows["s1"] == []
  p.raw("ccxt", "BTC/USDT", heartbeat(first))
  (w,) = p.out.windows["s1"]
  assert (w["seq"], w["trades"], w["volume_sum"], w["complete"]) == (first, 2, 4.0, True)
  assert w["vwap"] == (10 + 36) / 4 and "missing" not in w


def test_dead_feed_window_goes_out_at_the_lateness_flagged_incomplete():
  clock = FakeClock(T0)
  twin = {**BTC, "exchanges": ["ex", "dead"]}
  d = stream("s1", twin, created_ms=T0)
  p = Pipeline(clock, [d])
  end = p.stage2._streams["s1"].next_end_ms
  # "ex" is heard of before the window starts (else its window says it lacks "ex" too).
  p.raw("ccxt", "BTC/USDT", heartbeat(end - 3000), trade(end - 500, 10.0, 1.0), heartbeat(end))
  assert p.out.windows["s1"] == []
  p.at(end + 999)
  assert p.out.windows["s1"] == []
  p.raw("ccxt", "BTC/USDT", heartbeat(end + 1000))
  p.at(end + 1000)
  (w,) = p.out.windows["s1"]
  assert w["trades"] == 1 and w["complete"] is False
  assert w["missing"] == ["ccxt|dead|BTC/USDT"]


def test_backfill_from_before_the_stream_is_not_late_but_a_pane_after_its_window_is():
  clock = FakeClock(T0)
  d = stream("s1", {**BTC, "interval_sec": 1}, created_ms=T0)
  p = Pipeline(clock, [d])
  first = p.stage2._streams["s1"].next_end_ms
  # The feed starts and backfills a minute from before the stream existed.
  p.raw("ccxt", "BTC/USDT", *[trade(T0 - 60_000 + i * 100, 1.0, 1.0) for i in range(600)])
  p.live("BTC/USDT", first + 3000)
  assert p.out.counts["s1"]["late"] == 0
  assert [w["seq"] for w in p.out.windows["s1"]] == [
    first,
    first + 1000,
    first + 2000,
    first + 3000,
  ]
  assert p.stage2.stats["backfill_ignored"] >= 500
  # A stream whose feed is silent: its window goes out at the lateness; a trade for it
  # arriving after that is late.
  d2 = stream("s2", {**BTC, "interval_sec": 1, "exchanges": ["ex2"]}, created_ms=clock.now_ms)
  p.stage2.set_streams({"s1": d, "s2": d2})
  s2_first = p.stage2._streams["s2"].next_end_ms
  p.live("BTC/USDT", s2_first + 1000)
  assert [w["complete"] for w in p.out.windows["s2"]] == [False]
  p.raw(
    "ccxt",
    "BTC/USDT",
    trade(s2_first - 500, 1.0, 1.0, ex="ex2"),
    heartbeat(s2_first + 1000, ex="ex2"),
  )
  assert p.out.counts["s2"]["late"] == 1


def test_a_window_starting_before_its_feeds_first_pane_says_so():
  # A stream's windows from before a feed's first pane reached stage 2 (a backfill reaching
  # back before the feed existed; a feed that started late): the feed tells nothing of that
  # time, so those windows are not complete, whatever its progress. A quant would otherwise
  # read a window with no trade and `complete: true` as a quiet market.
  clock = FakeClock(T0)
  twin = {**BTC, "interval_sec": 1, "exchanges": ["ex", "late"]}
  d = stream("s1", twin, created_ms=T0 - 10_000)
  p = Pipeline(clock, [d], lateness_ms=10**8)  # no deadline: only progress sends windows
  first = p.stage2._streams["s1"].next_end_ms
  p.raw("ccxt", "BTC/USDT", heartbeat(first - 5000, ex="ex"))
  p.raw("ccxt", "BTC/USDT", *[trade(first + i * 100, 1.0, 1.0, ex="ex") for i in range(40)])
  assert p.out.windows["s1"] == []  # "late" has not said anything yet: waiting for it
  # "late" starts 2.5 s after the first window. Stage 1 opens the feed's panes one back, at
  # first + 1 s; that empty pane says nothing of the feed either: its data begins at first + 2 s.
  p.raw(
    "ccxt", "BTC/USDT", trade(first + 2500, 2.0, 1.0, ex="late"), heartbeat(first + 4000, ex="late")
  )
  p.raw("ccxt", "BTC/USDT", heartbeat(first + 4000, ex="ex"))
  windows = p.out.windows["s1"]
  assert [w["seq"] for w in windows] == [first + i * 1000 for i in range(5)]
  flags = [(w["complete"], w.get("missing")) for w in windows]
  assert flags == [
    (False, ["ccxt|late|BTC/USDT"]),
    (False, ["ccxt|late|BTC/USDT"]),
    (False, ["ccxt|late|BTC/USDT"]),  # the window of the pane opened back
    (True, None),
    (True, None),
  ]
  assert [w["trades"] for w in windows] == [0, 10, 10, 11, 10]
  # The track's first pane survives a restart (its changelog value).
  track = p.stage2._tracks[(0, "ccxt|late|BTC/USDT")]
  assert type(track).from_wire(track.to_wire()).first_ms == first + 2000


def test_feed_dying_mid_pane_its_partial_goes_in_and_only_the_rest_counts_late():
  clock = FakeClock(T0)
  d = stream("s1", BTC, created_ms=T0)
  other = stream("s2", {**BTC, "symbols": ["ETH/USDT"]}, created_ms=T0)
  p = Pipeline(clock, [d, other])
  end = p.stage2._streams["s1"].next_end_ms
  p.raw("ccxt", "BTC/USDT", heartbeat(end - 1000))
  p.raw("ccxt", "BTC/USDT", *[trade(end - 900 + i, 10.0 + i, 1.0) for i in range(3)])
  clock.now_ms = end - 700
  assert p.stage1.quiet() == []
  clock.now_ms = end - 500
  assert p.stage1.quiet() == [("ccxt", "BTC/USDT", FEED)]
  p.partials("BTC/USDT", FEED)
  # Another feed keeps the worker's input flowing.
  for t in range(end - 1000, end + 1001, 500):
    p.raw("ccxt", "ETH/USDT", heartbeat(t, sym="ETH/USDT"))
  p.at(end + 1000)
  w = next(w for w in p.out.windows["s1"] if w["seq"] == end)
  assert (w["trades"], w["price_open"], w["price_close"], w["complete"]) == (3, 10.0, 12.0, False)
  # The feed comes back with a fourth trade for that pane: only that one is late.
  p.raw("ccxt", "BTC/USDT", trade(end - 850, 13.0, 1.0), heartbeat(end + 2000))
  assert p.out.counts["s1"]["late"] == 1


def test_streams_sharing_a_feed_get_the_same_window_and_partials_go_to_each_once():
  # Streams of one feed and size share the merge of its closed panes; a quiet feed's
  # partial pane is added to each stream's own copy, never to the shared merge.
  clock = FakeClock(T0)
  twins = [stream(sid, BTC, created_ms=T0) for sid in ("s1", "s1b")]
  eth = stream("s2", {**BTC, "symbols": ["ETH/USDT"]}, created_ms=T0)
  p = Pipeline(clock, [*twins, eth])
  end = p.stage2._streams["s1"].next_end_ms
  p.raw("ccxt", "BTC/USDT", trade(end - 1900, 9.0, 1.0), trade(end - 1800, 9.5, 1.0))
  p.raw("ccxt", "BTC/USDT", heartbeat(end - 1000))  # the window's first pane closes: 2 trades
  p.raw("ccxt", "BTC/USDT", *[trade(end - 900 + i, 10.0 + i, 1.0) for i in range(3)])
  clock.now_ms = end - 500
  p.partials("BTC/USDT", FEED)  # then the feed goes quiet: 3 trades in its open pane
  for t in range(end - 1000, end + 1001, 500):
    p.raw("ccxt", "ETH/USDT", heartbeat(t, sym="ETH/USDT"))
  p.at(end + 1000)
  got = {sid: next(w for w in p.out.windows[sid] if w["seq"] == end) for sid in ("s1", "s1b")}
  for w in got.values():
    assert (w["trades"], w["price_open"], w["price_close"], w["complete"]) == (5, 9.0, 12.0, False)
  p.raw("ccxt", "BTC/USDT", trade(end + 100, 20.0, 1.0), heartbeat(end + 2000))
  for sid in ("s1", "s1b"):
    (after,) = [w for w in p.out.windows[sid] if w["seq"] == end + 2000]
    assert (after["trades"], after["price_open"], after["complete"]) == (1, 20.0, True)


def test_restart_restores_state_from_the_store_and_skips_replayed_records():
  clock = FakeClock(T0)
  d = stream("s1", BTC, created_ms=T0)
  p = Pipeline(clock, [d])
  end = p.stage2._streams["s1"].next_end_ms
  p.raw("ccxt", "BTC/USDT", trade(end - 1500, 10.0, 1.0), heartbeat(end - 1000))
  applied = p.last_records
  assert [r.start_ms for _p, _o, r in applied] == [end - 3000, end - 2000]
  # A new worker takes the partition over from the changelog.
  st2, out, _ = make_stage2(clock, store=p.store)
  st2.policy.settled(clock())
  st2.set_streams({"s1": d})  # the registry is loaded before partitions are assigned
  st2.assign([0, 1, 2, 3], list(p.store.items()))
  p.stage2, p.out = st2, out
  # Kafka redelivers the records after the last committed offset: they are not counted twice.
  st2.on_records(applied)
  assert st2.stats["replayed"] == 2
  p.raw("ccxt", "BTC/USDT", trade(end - 500, 20.0, 1.0), heartbeat(end))
  (w,) = out.windows["s1"]
  assert (w["seq"], w["trades"], w["price_open"], w["price_close"]) == (end, 2, 10.0, 20.0)


def test_deleted_stream_is_forgotten_and_its_state_removed():
  clock = FakeClock(T0)
  d = stream("s1", BTC, created_ms=T0)
  p = Pipeline(clock, [d])
  p.raw("ccxt", "BTC/USDT", trade(T0, 1.0, 1.0), heartbeat(T0 + 3000))
  assert any(k.startswith(b"s:") for k in p.store)
  p.stage2.set_streams({})
  assert p.out.forgotten == ["s1"] and p.store == {}


def test_a_timer_tick_touches_only_the_streams_that_are_due():
  clock = FakeClock(T0)
  defs = [stream(f"s{i}", {**BTC, "interval_sec": 2 + i % 5}, created_ms=T0) for i in range(1000)]
  p = Pipeline(clock, defs)
  assert p.stage2.tick() == 0
  soonest = p.stage2.next_wake_ms()
  assert soonest is not None
  p.at(soonest - 1)
  assert sum(len(v) for v in p.out.windows.values()) == 0
  clock.now_ms = soonest
  woke = p.stage2.tick()
  assert 0 < woke < 1000 and sum(len(v) for v in p.out.windows.values()) == woke


def test_panes_re_sent_by_a_restarted_stage_1_are_not_counted_twice():
  clock = FakeClock(T0)
  d = stream("s1", BTC, created_ms=T0)
  p = Pipeline(clock, [d])
  end = p.stage2._streams["s1"].next_end_ms
  p.raw("ccxt", "BTC/USDT", trade(end - 1500, 10.0, 1.0), heartbeat(end - 1000))
  sent = p.last_records
  # Stage 1 lost its last state write and read the raw records again: the same panes come
  # as new bond.panes records (new offsets).
  again = [(part, p.offset + i + 1, rec) for i, (part, _off, rec) in enumerate(sent)]
  p.offset += len(again)
  p.stage2.on_records(again)
  assert p.stage2.stats["resent"] == len(sent)
  p.raw("ccxt", "BTC/USDT", heartbeat(end))
  (w,) = p.out.windows["s1"]
  assert (w["trades"], w["volume_sum"]) == (1, 1.0)


def test_a_flush_written_in_slices_is_the_state_of_one_moment_positions_last():
  clock = FakeClock(T0)
  d = stream("s1", BTC, created_ms=T0)
  p = Pipeline(clock, [d])
  st2, store = p.stage2, p.store
  st2.auto_flush = False  # as the worker runs it: the caller writes the flush in slices
  read_to = {"offset": 0}
  st2.last_writes = lambda: [(b"\0pos", {"v": 1, "pos": read_to["offset"]})]
  end = st2._streams["s1"].next_end_ms
  p.raw("ccxt", "BTC/USDT", trade(end - 1500, 10.0, 1.0), heartbeat(end))
  assert p.out.windows["s1"]  # a window went out; its state is not written yet
  read_to["offset"] = 7
  before = dict(store)
  clock.now_ms += 1000
  assert st2.maybe_flush(clock())
  assert store == before  # taken, not written
  keys = [k for k, _v in st2._writes]
  assert keys[-1] == b"\0pos" and any(k.startswith(b"s:") for k in keys)
  left = st2.write(1)
  assert left == len(keys) - 1 and store != before
  # More happens before the rest is written: the slices still hold the flushed moment,
  # and no new flush is taken until they are all out.
  read_to["offset"] = 9
  p.raw("ccxt", "BTC/USDT", trade(end + 500, 20.0, 1.0), heartbeat(end + 2000))
  clock.now_ms += 1000
  assert not st2.maybe_flush(clock())
  assert st2.write(None) == 0
  assert store[b"\0pos"] == {"v": 1, "pos": 7}
  (skey,) = [k for k in store if k.startswith(b"s:")]
  assert store[skey][1] == end + 2000  # the stream's next window after the first one
  assert st2.maybe_flush(clock()) and st2.write(None) == 0
  assert store[b"\0pos"] == {"v": 1, "pos": 9} and store[skey][1] == end + 4000


def test_a_flush_not_all_written_is_dropped_when_partitions_move():
  clock = FakeClock(T0)
  d = stream("s1", BTC, created_ms=T0)
  p = Pipeline(clock, [d])
  st2, store = p.stage2, p.store
  st2.auto_flush = False
  end = st2._streams["s1"].next_end_ms
  p.raw("ccxt", "BTC/USDT", trade(end - 1500, 10.0, 1.0), heartbeat(end))
  clock.now_ms += 1000
  assert st2.maybe_flush(clock())
  written = dict(store)
  st2.assign([1], list(store.items()))  # partition 0 went to another worker
  assert st2.write(None) == 0 and store == written


def test_windows_of_a_feeds_silence_say_it_is_missing_not_that_the_market_was_quiet():
  # The platform (or the feed's connection) was down for 30 s: nothing, not even a heartbeat,
  # came from the feed. Its panes of that time are unknown, and the windows holding them say
  # so; before, they went out empty and `complete: true`, a quiet market to a quant.
  clock = FakeClock(T0)
  d = stream("s1", BTC, created_ms=T0 - 10_000)
  p = Pipeline(clock, [d], lateness_ms=10**8)  # no deadline: only progress sends windows
  first = p.stage2._streams["s1"].next_end_ms
  live = [heartbeat(first - 2000 + i * 250) for i in range(17)]  # up to first + 2 s
  p.raw("ccxt", "BTC/USDT", *live[:8], trade(first + 10, 1.0, 1.0), *live[8:])
  p.raw("ccxt", "BTC/USDT", *[trade(first + 32_000 + i * 100, 2.0, 1.0) for i in range(40)])
  p.raw("ccxt", "BTC/USDT", heartbeat(first + 36_500))
  windows = p.out.windows["s1"]
  assert [w["seq"] for w in windows] == [first + i * 2000 for i in range(19)]
  flags = [(w["complete"], w.get("missing")) for w in windows]
  assert flags[0] == (True, None)  # the last window before the silence, with its trade
  assert windows[0]["trades"] == 0 and windows[1]["trades"] == 1
  assert flags[1] == (True, None)
  # From the pane the silence began in to the one the feed spoke again in: missing.
  assert flags[2:17] == [(False, [FEED])] * 15
  assert flags[17:] == [(True, None)] * 2
  assert [w["trades"] for w in windows[17:]] == [20, 20]
  # A feed that is merely quiet (heartbeats, no trade) has complete, empty windows.
  clock = FakeClock(T0)
  p = Pipeline(clock, [stream("s2", BTC, created_ms=T0 - 10_000)], lateness_ms=10**8)
  first = p.stage2._streams["s2"].next_end_ms
  p.raw("ccxt", "BTC/USDT", *[heartbeat(first - 2000 + i * 250) for i in range(150)])
  quiet = p.out.windows["s2"]
  assert len(quiet) >= 15 and all(w["complete"] and w["trades"] == 0 for w in quiet)
