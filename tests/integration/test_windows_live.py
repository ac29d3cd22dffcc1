"""Windows over live traffic: crash recovery, two workers, lateness, late events, deletion."""

import asyncio
import json
import os
import random
import time
from collections import Counter

import pytest

from tests.integration.pipeline import Deployment, trade

pytestmark = pytest.mark.integration


class LiveFeed:
  """Sends trades with ts = now at a steady rate, plus heartbeats; remembers what it sent."""

  def __init__(self, dep: Deployment, ex: str, symbol: str, rate: float = 200.0) -> None:
    self.dep, self.ex, self.symbol, self.rate = dep, ex, symbol, rate
    self.sent: list[dict] = []
    self._task: asyncio.Task | None = None
    self.rng = random.Random(7)

  async def _run(self) -> None:
    tid = 0
    while True:
      now = int(time.time() * 1000)
      for _ in range(max(1, int(self.rate / 50))):
        tid += 1
        tr = trade(
          self.ex,
          self.symbol,
          now,
          round(100 + self.rng.random(), 4),
          round(self.rng.random(), 4),
          tid,
        )
        self.sent.append(tr)
        await self.dep.send("bond.raw.ccxt", self.symbol, **tr)
      await self.dep.send("bond.raw.ccxt", self.symbol, heartbeat=True, source="ccxt", exchange=self.ex,
                          symbol=self.symbol, ts=now)  # fmt: skip
      await asyncio.sleep(0.02)

  def start(self) -> None:
    self._task = asyncio.create_task(self._run())

  async def stop(self) -> None:
    if self._task:
      self._task.cancel()
      await asyncio.gather(self._task, return_exceptions=True)
    await self.dep.flush()

  def expected(self, end_ms: int, interval_ms: int) -> tuple[int, float]:
    trades = [t for t in self.sent if end_ms - interval_ms <= t["ts"] < end_ms]
    return len(trades), sum(t["amount"] for t in trades)


async def wait_for(cond, timeout_sec: float = 30.0, what: str = "condition") -> None:
  """Wait until the (async) condition holds, polling every 50 ms."""
  deadline = time.monotonic() + timeout_sec
  while time.monotonic() < deadline:
    if await cond():
      return
    await asyncio.sleep(0.05)
  raise AssertionError(f"timed out waiting for {what}")


async def ring(dep: Deployment, sid: str) -> list[dict]:
  """Return the stream's windows in its Redis ring."""
  return [json.loads(f["e"]) for _, f in await dep.redis.xrange(f"bond:stream:{sid}")]


async def windows_past(dep: Deployment, sid: str, ms: int, timeout_sec: float = 30.0) -> list[dict]:
  """Wait until a window ending after `ms` is in the ring; return the ring."""

  async def past() -> bool:
    events = await ring(dep, sid)
    return bool(events) and events[-1]["seq"] > ms

  await wait_for(past, timeout_sec, f"a window of {sid} ending after {ms}")
  return await ring(dep, sid)


async def sent_more(feed: "LiveFeed", n: int) -> None:
  """Wait until the live feed has sent n more trades (time passing for the data, not the test)."""
  target = len(feed.sent) + n

  async def enough() -> bool:
    return len(feed.sent) >= target

  await wait_for(enough, 60, f"{n} more trades")


def worker_stats(worker) -> dict:
  import httpx

  return httpx.get(f"http://127.0.0.1:{worker.web_port}/bond/stats", timeout=5).json()


async def late_count(dep: Deployment, sid: str) -> int:
  return int(await dep.redis.hget(f"bond:metrics:{sid}", "late") or 0)


async def send_late_trade(dep: Deployment, sid: str, tr: dict) -> int:
  """Send a trade for a window already out, then progress; return the stream's `late` count
  once it is counted and one more metrics flush went by (nothing is counted twice)."""
  await dep.send("bond.raw.ccxt", tr["symbol"], **tr)
  await dep.send("bond.raw.ccxt", tr["symbol"], heartbeat=True, source="ccxt", exchange=tr["exchange"],
                 symbol=tr["symbol"], ts=int(time.time() * 1000))  # fmt: skip
  await dep.flush()

  async def counted() -> bool:
    return await late_count(dep, sid) >= 1

  await wait_for(counted, 10, "the late trade counted")
  seen_ms = int(time.time() * 1000)

  async def flushed_again() -> bool:
    # The feed keeps progressing, so windows go out and the sink flushes their metrics (it
    # writes a stream's hash only when the stream has something new).
    await dep.send("bond.raw.ccxt", tr["symbol"], heartbeat=True, source="ccxt", exchange=tr["exchange"],
                   symbol=tr["symbol"], ts=int(time.time() * 1000))  # fmt: skip
    await dep.flush()
    updated = await dep.redis.hget(f"bond:metrics:{sid}", "updated_ms")
    return updated is not None and int(updated) > seen_ms + 1000

  await wait_for(flushed_again, 10, "another metrics flush")
  return await late_count(dep, sid)


def assert_consecutive(events: list[dict], interval_ms: int) -> None:
  seqs = [e["seq"] for e in events]
  assert len(seqs) == len(set(seqs)), "a window appears twice"
  assert seqs == list(range(seqs[0], seqs[0] + interval_ms * len(seqs), interval_ms)), (
    "a window is missing"
  )


async def _has_trades(dep: Deployment, sid: str, n: int) -> bool:
  return sum(1 for e in await ring(dep, sid) if e["trades"]) >= n


async def test_kill_9_and_restart_loses_and_duplicates_nothing(deployment, worker_factory):
  ex = "crashex"
  sid = await deployment.create({"sources": ["ccxt"], "symbols": ["ETH/USDT"], "interval_sec": 1, "exchanges": [ex]},
                                created_ms=int(time.time() * 1000))  # fmt: skip
  worker = worker_factory().start()
  feed = LiveFeed(deployment, ex, "ETH/USDT")
  feed.start()
  # Windows with trades flow before the crash.
  await wait_for(lambda: _has_trades(deployment, sid, 3), 30, "three windows with trades")
  kill_ms = int(time.time() * 1000)
  worker.kill()
  await sent_more(feed, 400)  # the feed goes on (~2 s of trades) while the worker is down
  restart_ms = int(time.time() * 1000)
  worker.start()
  ready_ms = int(time.time() * 1000)
  await windows_past(deployment, sid, ready_ms + 3000)
  await feed.stop()
  stop_ms = int(time.time() * 1000)
  # The feed's last windows (it stopped: later ones wait for it, as for a stalled input).
  events = await windows_past(deployment, sid, stop_ms - 1500)
  assert len(events) >= 9
  assert_consecutive(events, 1000)
  # Every window completed before the feed stopped has exactly the trades sent into it.
  checked = 0
  print(f"kill -9 at {kill_ms}, restarted {restart_ms}, ready {ready_ms}")
  for ev in events:
    if ev["seq"] <= stop_ms - 1000 and ev["seq"] - 1000 >= feed.sent[0]["ts"]:
      n, vol = feed.expected(ev["seq"], 1000)
      assert (ev["trades"], ev["volume_sum"]) == (n, pytest.approx(vol)), f"window {ev['seq']}"
      checked += 1
  assert checked >= 8
  # Windows composed again after the crash are not written twice: the restarted worker read
  # the stream topic's last window before sending.
  dupes = Counter(w["seq"] for w in await deployment.stream_windows(sid))
  assert not [seq for seq, c in dupes.items() if c > 1], "windows in the stream's topic twice"


async def test_two_workers_give_the_same_output_as_one(deployment, worker_factory):
  symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]
  now = int(time.time() * 1000)
  ex = "twoex"
  sids = [await deployment.create({"sources": ["ccxt"], "symbols": [s], "interval_sec": 1, "exchanges": [ex]},
                                  created_ms=now) for s in symbols]  # fmt: skip
  workers = [worker_factory().start() for _ in range(int(os.environ.get("BOND_TEST_WORKERS", "2")))]

  async def split() -> bool:  # the second worker's arrival rebalances the first: wait for both
    try:
      owned = [set(worker_stats(w)["stage2_partitions"]) for w in workers]
    except (OSError, ValueError, KeyError):
      return False
    return sum(len(o) for o in owned) == 4 and set().union(*owned) == {0, 1, 2, 3} and all(owned)

  await wait_for(split, 60, "the bond.panes partitions split between the workers")
  for w in workers:
    w.wait_ready()
  w0 = -(-int(time.time() * 1000) // 1000) * 1000 + 3000
  for i, sym in enumerate(symbols):
    for k in range(5):
      await deployment.send(
        "bond.raw.ccxt", sym, **trade(ex, sym, w0 + k * 100, 10.0 + i + k, 1.0, k)
      )
    await deployment.send(
      "bond.raw.ccxt", sym, heartbeat=True, source="ccxt", exchange=ex, symbol=sym, ts=w0 + 2000
    )
  await deployment.flush()
  for i, sid in enumerate(sids):
    events = await deployment.windows(
      sid, (w0 + 2000 - (-(-(now + 1000) // 1000) * 1000 + 1000)) // 1000 + 1
    )
    assert_consecutive(events, 1000)
    w = {e["seq"]: e for e in events}[w0 + 1000]
    assert w["trades"] == 5 and w["price_avg"] == pytest.approx(10.0 + i + 2)


async def test_dead_feed_window_arrives_after_lateness_and_late_events_are_counted(
  deployment, worker_factory
):
  ex = "lateex"
  now = int(time.time() * 1000)
  sid = await deployment.create({"sources": ["ccxt"], "symbols": ["DOGE/USDT"], "interval_sec": 1, "exchanges": [ex]},
                                created_ms=now)  # fmt: skip
  worker_factory(BOND_LATENESS_MS="500").start()
  # The feed says nothing: windows still come, on the wall clock, flagged incomplete.
  events = await deployment.windows(sid, 3)
  assert_consecutive(events, 1000)
  assert all(e["trades"] == 0 and e["price_avg"] is None for e in events)
  assert all(e["complete"] is False and e["missing"] == [f"ccxt|{ex}|DOGE/USDT"] for e in events)
  # A trade for a window that is already out is counted as late, not merged.
  old = events[0]["seq"] - 500
  late = await send_late_trade(deployment, sid, trade(ex, "DOGE/USDT", old, 0.1, 1.0, 1))
  assert late == 1
  again = [json.loads(f["e"]) for _, f in await deployment.redis.xrange(f"bond:stream:{sid}")]
  assert all(e["trades"] == 0 for e in again)


async def test_trades_before_a_feed_dies_mid_pane_are_in_their_window(deployment, worker_factory):
  """A feed that stops in the middle of a pane (its exchange connection died): the trades it
  delivered are in the window that goes out at the lateness, and what it backfills later
  is counted late, not lost silently and not counted twice."""
  ex, sym = "dyingex", "LINK/USDT"
  now = int(time.time() * 1000)
  sid = await deployment.create({"sources": ["ccxt"], "symbols": [sym], "interval_sec": 2, "exchanges": [ex]},
                                created_ms=now)  # fmt: skip
  # Another stream's feed stays alive throughout, as on any real worker.
  await deployment.create({"sources": ["ccxt"], "symbols": ["ADA/USDT"], "interval_sec": 1, "exchanges": ["aliveex"]},
                          created_ms=now)  # fmt: skip
  alive = LiveFeed(deployment, "aliveex", "ADA/USDT", rate=50)
  alive.start()
  try:
    worker_factory(BOND_LATENESS_MS="500").start()
    # A window past the worker's start-up grace (15 s), so it goes out under the lateness rule.
    w_end = ((int(time.time() * 1000) + 17_000) // 2000) * 2000
    while int(time.time() * 1000) < w_end - 1500:
      await deployment.send("bond.raw.ccxt", sym, heartbeat=True, source="ccxt", exchange=ex, symbol=sym,
                            ts=int(time.time() * 1000))  # fmt: skip
      await asyncio.sleep(0.05)
    # Three trades 400-300 ms into the last pane of the window, then silence: that pane never
    # closes on progress.
    base = w_end - 1000 + 100
    for i in range(3):
      await deployment.send("bond.raw.ccxt", sym, **trade(ex, sym, base + i, 10.0 + i, 1.0, i + 1))
    await deployment.flush()
    events = await deployment.windows(sid, 1, timeout_sec=20)
    while events[-1]["seq"] < w_end:
      await asyncio.sleep(0.2)
      events = await deployment.windows(sid, len(events) + 1, timeout_sec=10)
    window = next(e for e in events if e["seq"] == w_end)
    assert window["trades"] == 3 and window["volume_sum"] == 3.0, window
    assert window["price_open"] == 10.0 and window["price_close"] == 12.0
    # The feed comes back: a backfilled trade for that pane, then progress. The pane closes
    # with four trades; the window is out, so the one it did not hold is late.
    late = await send_late_trade(deployment, sid, trade(ex, sym, base + 50, 13.0, 1.0, 4))
  finally:
    await alive.stop()
  assert late == 1
  again = [json.loads(f["e"]) for _, f in await deployment.redis.xrange(f"bond:stream:{sid}")]
  assert [e for e in again if e["seq"] == w_end] == [window]


async def test_several_symbols_fill_by_symbol_and_deleted_stream_stops(deployment, worker_factory):
  ex = "multiex"
  now = int(time.time() * 1000)
  spec = {
    "sources": ["ccxt", "twitter"],
    "symbols": ["BTC/USDT", "ETH/USDT"],
    "interval_sec": 1,
    "exchanges": [ex],
  }
  sid = await deployment.create(spec, created_ms=now)
  worker = worker_factory().start()
  # A window comfortably after the worker is ready (it may take a while on a loaded machine).
  w0 = -(-int(time.time() * 1000) // 1000) * 1000 + 2000
  # Every feed is heard of from the window's start (the BTC tweets feed says nothing else):
  # a window from before a feed's data begins would say it lacks that feed.
  for base in ("BTC", "ETH"):
    await deployment.send(
      "bond.raw.x", base, heartbeat=True, source="twitter", exchange="x", symbol=base, ts=w0
    )
  await deployment.send(
    "bond.raw.ccxt", "BTC/USDT", **trade(ex, "BTC/USDT", w0 + 1, 50000.0, 0.5, 1)
  )
  await deployment.send(
    "bond.raw.ccxt", "ETH/USDT", **trade(ex, "ETH/USDT", w0 + 2, 3000.0, 2.0, 1)
  )
  await deployment.send(
    "bond.raw.x", "ETH", id="9", text="$ETH", author="b", symbols=["ETH"], ts=w0 + 3
  )
  for sym, key, src in (("BTC/USDT", "BTC/USDT", "ccxt"), ("ETH/USDT", "ETH/USDT", "ccxt")):
    await deployment.send(
      "bond.raw.ccxt", key, heartbeat=True, source=src, exchange=ex, symbol=sym, ts=w0 + 1000
    )
  for base in ("BTC", "ETH"):
    await deployment.send(
      "bond.raw.x", base, heartbeat=True, source="twitter", exchange="x", symbol=base, ts=w0 + 1000
    )
  await deployment.flush()
  events = await windows_past(deployment, sid, w0 + 999)
  w = {e["seq"]: e for e in events}[w0 + 1000]
  assert w["complete"] is True
  assert w["symbol"] == "BTC/USDT" and w["price_avg"] == 50000.0 and w["tweets"] == 0
  assert w["by_symbol"]["ETH/USDT"]["price_avg"] == 3000.0
  assert w["by_symbol"]["ETH/USDT"]["tweets"] == 1
  assert w["by_symbol"]["BTC/USDT"]["volume_sum"] == 0.5
  # Deleting the stream stops its windows: once the worker has dropped it, none comes.
  await deployment.writer.delete(sid)

  async def dropped() -> bool:
    return "stage2_streams" in (st := worker_stats(worker)) and st["stage2_streams"] == 0

  await wait_for(dropped, 20, "the worker dropping the deleted stream")
  count = await deployment.redis.xlen(f"bond:stream:{sid}")
  await asyncio.sleep(2.5)  # a negative check: 2 windows' worth of time with nothing new
  assert await deployment.redis.xlen(f"bond:stream:{sid}") == count


async def test_a_new_stream_counts_no_backfill_late_and_its_windows_are_complete(
  deployment, worker_factory
):
  """A feed that starts with the stream backfills trades from before it existed: those are
  not the stream's, so `late` stays 0 (a user reads `late` as lost data)."""
  ex, sym = "freshex", "AVAX/USDT"
  worker_factory().start()
  created = int(time.time() * 1000)
  sid = await deployment.create({"sources": ["ccxt"], "symbols": [sym], "interval_sec": 1, "exchanges": [ex]},
                                created_ms=created)  # fmt: skip
  # The new feed's start-up backfill: 30 s of trades from before the stream, then live data.
  for i in range(300):
    await deployment.send(
      "bond.raw.ccxt", sym, **trade(ex, sym, created - 30_000 + i * 100, 5.0, 1.0, i)
    )
  feed = LiveFeed(deployment, ex, sym, rate=100)
  feed.start()
  try:
    events = await deployment.windows(sid, 8, timeout_sec=40)
  finally:
    await feed.stop()
  assert all(e["complete"] for e in events), [e["seq"] for e in events if not e["complete"]]
  assert sum(e["trades"] for e in events) > 0

  async def flushed() -> bool:
    updated = await deployment.redis.hget(f"bond:metrics:{sid}", "updated_ms")
    return updated is not None and int(updated) > events[-1]["seq"]

  await wait_for(flushed, 10, "the stream's metrics")
  assert await late_count(deployment, sid) == 0
  # Its ingest-to-pane latency comes from its feed's samples (kept once per feed, not per stream).
  metrics = await deployment.redis.hgetall(f"bond:metrics:{sid}")
  assert int(metrics["latency_samples"]) > 0 and float(metrics["latency_p50_ms"]) >= 0, metrics
