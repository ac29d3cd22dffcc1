"""Windows over live traffic: crash recovery, two workers, lateness, late events, deletion."""

import asyncio
import json
import os
import random
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

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


async def kafka_seqs(dep: Deployment, sid: str) -> list[int]:
  topic = f"{dep.prefix}bond.stream.{sid}"
  consumer = AIOKafkaConsumer(bootstrap_servers=dep.bootstrap, auto_offset_reset="earliest")
  await consumer.start()
  seqs: list[int] = []
  try:
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    end = (await consumer.end_offsets([tp]))[tp]
    while await consumer.position(tp) < end:
      batch = await consumer.getmany(tp, timeout_ms=1000)
      seqs += [json.loads(m.value)["seq"] for m in batch.get(tp, []) if m.offset < end]
  finally:
    await consumer.stop()
  return seqs


async def send_late_trade(dep: Deployment, sid: str, tr: dict) -> int:
  """Send a trade for a window already out, then progress; return the stream's `late` count."""
  await dep.send("bond.raw.ccxt", tr["symbol"], **tr)
  await dep.send("bond.raw.ccxt", tr["symbol"], heartbeat=True, source="ccxt", exchange=tr["exchange"],
                 symbol=tr["symbol"], ts=int(time.time() * 1000))  # fmt: skip
  await dep.flush()
  for _ in range(50):
    if int(await dep.redis.hget(f"bond:metrics:{sid}", "late") or 0) >= 1:
      break
    await asyncio.sleep(0.2)
  await asyncio.sleep(0.5)  # and nothing more comes
  return int(await dep.redis.hget(f"bond:metrics:{sid}", "late") or 0)


def assert_consecutive(events: list[dict], interval_ms: int) -> None:
  seqs = [e["seq"] for e in events]
  assert len(seqs) == len(set(seqs)), "a window appears twice"
  assert seqs == list(range(seqs[0], seqs[0] + interval_ms * len(seqs), interval_ms)), (
    "a window is missing"
  )


async def test_kill_9_and_restart_loses_and_duplicates_nothing(deployment, worker_factory):
  ex = "crashex"
  sid = await deployment.create({"sources": ["ccxt"], "symbols": ["ETH/USDT"], "interval_sec": 1, "exchanges": [ex]},
                                created_ms=int(time.time() * 1000))  # fmt: skip
  worker = worker_factory().start()
  feed = LiveFeed(deployment, ex, "ETH/USDT")
  feed.start()
  await asyncio.sleep(4)
  kill_ms = int(time.time() * 1000)
  worker.kill()
  await asyncio.sleep(2)
  restart_ms = int(time.time() * 1000)
  worker.start()
  ready_ms = int(time.time() * 1000)
  await asyncio.sleep(5)
  await feed.stop()
  stop_ms = int(time.time() * 1000)
  await asyncio.sleep(2.5)
  events = [json.loads(f["e"]) for _, f in await deployment.redis.xrange(f"bond:stream:{sid}")]
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
  # Kafka may carry a window twice after the crash (at-least-once); Redis and clients never do.
  dupes = Counter(await kafka_seqs(deployment, sid))
  print("kafka duplicate windows after kill -9:", sum(c - 1 for c in dupes.values()))


async def test_two_workers_give_the_same_output_as_one(deployment, worker_factory):
  symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]
  now = int(time.time() * 1000)
  ex = "twoex"
  sids = [await deployment.create({"sources": ["ccxt"], "symbols": [s], "interval_sec": 1, "exchanges": [ex]},
                                  created_ms=now) for s in symbols]  # fmt: skip
  workers = [worker_factory().start() for _ in range(int(os.environ.get("BOND_TEST_WORKERS", "2")))]
  await asyncio.sleep(1)
  for w in workers:  # the second worker's arrival rebalances the first: wait for both
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
  await asyncio.sleep(4)  # the feed says nothing: windows still come, on the wall clock
  events = [json.loads(f["e"]) for _, f in await deployment.redis.xrange(f"bond:stream:{sid}")]
  assert len(events) >= 1
  assert_consecutive(events, 1000)
  assert all(e["trades"] == 0 and e["price_avg"] is None for e in events)
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
  worker_factory().start()
  w0 = -(-now // 1000) * 1000 + 2000
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
  events = await deployment.windows(sid, 2)
  w = {e["seq"]: e for e in events}[w0 + 1000]
  assert w["symbol"] == "BTC/USDT" and w["price_avg"] == 50000.0 and w["tweets"] == 0
  assert w["by_symbol"]["ETH/USDT"]["price_avg"] == 3000.0
  assert w["by_symbol"]["ETH/USDT"]["tweets"] == 1
  assert w["by_symbol"]["BTC/USDT"]["volume_sum"] == 0.5
  # Deleting the stream stops its windows.
  await deployment.writer.delete(sid)
  await asyncio.sleep(1.5)
  count = await deployment.redis.xlen(f"bond:stream:{sid}")
  await asyncio.sleep(2.5)
  assert await deployment.redis.xlen(f"bond:stream:{sid}") == count
