"""Backfill on the window core: a stream created later with backfill gets, field for field,
the windows an earlier stream with the same spec sent live; recomputation is deterministic;
stage 2 holds a backfilling stream's live windows until released."""

import random
from dataclasses import replace
from typing import Any

from bond.windowing.backfill import BackfillRun, plan_backfill
from bond.windowing.clock import stream_first_end
from tests.unit.windowing.helpers import FakeClock, Pipeline, heartbeat, stream, trade

T0 = 1_700_000_000_000
SPEC = {"sources": ["ccxt"], "symbols": ["BTC/USDT"], "interval_sec": 1, "exchanges": ["ex", "ex2"]}
BOOKKEEPING = ("stream_id", "backfilled")


def raw_log(start_ms: int, end_ms: int, seed: int = 7) -> list[dict[str, Any]]:
  """Trades of two exchanges on one raw key (BTC/USDT), with heartbeats every 250 ms."""
  rng = random.Random(seed)
  out: list[dict[str, Any]] = []
  t = start_ms
  while t < end_ms:
    for ex in ("ex", "ex2"):
      for _ in range(rng.randint(0, 3)):
        ts = t + rng.randint(0, 249)
        out.append(trade(ts, round(rng.uniform(90, 110), 2), round(rng.uniform(0.01, 2), 3), ex))
      out.append(heartbeat(t + 249, ex))
    t += 250
  return sorted(out, key=lambda r: r["ts"])


def live_windows(records: list[dict[str, Any]], created_ms: int) -> list[dict[str, Any]]:
  clock = FakeClock(created_ms)
  p = Pipeline(clock, [stream("a", SPEC, created_ms)])
  for i in range(0, len(records), 3):
    p.raw("ccxt", "BTC/USDT", *records[i : i + 3])
    p.stage2.tick()
  return p.out.windows["a"]


def backfill(records: list[dict[str, Any]], created_ms: int, seconds: int, batch: int):
  d = replace(stream("b", SPEC, created_ms), backfill_sec=seconds)
  plan = plan_backfill(d, seconds, 1000, margin_ms=5000)
  run = BackfillRun(plan, 1000, 1000)
  todo = [r for r in records if r["ts"] >= plan.read_from_ms]
  out = []
  for i in range(0, len(todo), batch):
    run.add_batch("ccxt", [("BTC/USDT", r) for r in todo[i : i + batch]])
    out += [w for w, _n in run.take()]
    if run.done:
      break
  return plan, run, out


def strip(w: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in w.items() if k not in BOOKKEEPING}


def test_backfilled_windows_equal_the_live_ones_field_for_field():
  records = raw_log(T0, T0 + 70_000)
  live = live_windows(records, T0)
  assert len(live) > 50 and all(w["complete"] for w in live)
  created_b = T0 + 60_200
  plan, run, got = backfill(records, created_b, 50, batch=500)
  assert run.done and plan.total_windows == 50 and len(got) == 50
  assert plan.live_end_ms == stream_first_end(created_b, 1000, 1000)
  assert [w["seq"] for w in got] == list(range(plan.first_end_ms, plan.live_end_ms, 1000))
  assert all(w["backfilled"] is True and w["stream_id"] == "b" for w in got)
  by_seq = {w["seq"]: w for w in live}
  assert [strip(w) for w in got] == [strip(by_seq[w["seq"]]) for w in got]
  assert sum(w["trades"] for w in got) > 100


def test_recomputation_is_deterministic_whatever_the_batching():
  records = raw_log(T0, T0 + 40_000, seed=3)
  _, _, a = backfill(records, T0 + 30_000, 20, batch=1)
  _, _, b = backfill(records, T0 + 30_000, 20, batch=10_000)
  assert len(a) == 20 and a == b


def test_a_silent_feed_holds_backfilled_windows_until_the_clock_moves():
  records = [r for r in raw_log(T0, T0 + 20_000) if r["exchange"] == "ex"]  # ex2 never heard of
  plan, run, got = backfill(records, T0 + 15_000, 5, batch=100)
  assert got == [] and not run.done
  run.advance(plan.live_end_ms + 2000)  # caught up: decided as live ones would be
  got = [w for w, _n in run.take()]
  assert run.done and len(got) == 5
  assert all(not w["complete"] and w["missing"] == ["ccxt|ex2|BTC/USDT"] for w in got)


def test_stage2_holds_a_backfilling_stream_until_released():
  clock = FakeClock(T0)
  d = replace(stream("s", SPEC, T0), backfill_sec=60)
  p = Pipeline(clock, [d])
  assert p.stage2.held == {"s"}
  first = p.stage2.next_end_of("s")
  for r in raw_log(T0, first + 3000):
    p.raw("ccxt", "BTC/USDT", r)
  p.at(first + 5000)
  assert p.out.windows["s"] == []
  p.stage2.release("s")
  p.at(first + 5000)
  seqs = [w["seq"] for w in p.out.windows["s"]]
  assert seqs[0] == first and seqs == list(range(first, first + 1000 * len(seqs), 1000))
