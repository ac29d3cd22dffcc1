"""A window that can never be sent is dropped and counted, and holds up no other stream."""

import asyncio
import json
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bond.sim.exchange import START_PRICES
from tests.integration.test_windows_live import LiveFeed

pytestmark = pytest.mark.integration

LATENESS_MS = 1000
MAX_WINDOW_BYTES = 2048  # a 1-symbol window is ~0.4 KB, a 20-symbol one ~3.8 KB


async def window_records(bootstrap: str, topic: str) -> list[tuple[int, int]]:
  """Return (seq, record time) of every window in a stream topic so far."""
  consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
  await consumer.start()
  out: list[tuple[int, int]] = []
  try:
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    end = (await consumer.end_offsets([tp]))[tp]
    while await consumer.position(tp) < end:
      batch = await consumer.getmany(tp, timeout_ms=1000)
      out += [
        (json.loads(m.value)["seq"], m.timestamp) for m in batch.get(tp, []) if m.offset < end
      ]
  finally:
    await consumer.stop()
  return out


async def test_an_oversized_window_is_dropped_counted_once_logged_and_others_stay_on_time(
  deployment, worker_factory
):
  ex = "poisonex"
  now = int(time.time() * 1000)
  small = await deployment.create({"sources": ["ccxt"], "symbols": ["BTC/USDT"], "interval_sec": 1,
                                   "exchanges": [ex]}, created_ms=now)  # fmt: skip
  wide = [f"{base}/USDT" for base in list(START_PRICES)[:20]]
  big = await deployment.create({"sources": ["ccxt"], "symbols": wide, "interval_sec": 1,
                                 "exchanges": [ex]}, created_ms=now)  # fmt: skip
  worker = worker_factory(
    BOND_MAX_WINDOW_BYTES=str(MAX_WINDOW_BYTES), BOND_LATENESS_MS=str(LATENESS_MS)
  ).start()
  # Only BTC/USDT trades: the wide stream's other feeds are dead, so its windows go out at
  # the lateness deadline, each one over the cap.
  feeds = [LiveFeed(deployment, ex, "BTC/USDT", rate=50)]
  for feed in feeds:
    feed.start()
  try:
    # The wide stream's windows are over the cap: each is dropped and counted.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
      if int(await deployment.redis.hget(f"bond:metrics:{big}", "dropped") or 0) >= 5:
        break
      await asyncio.sleep(0.2)
    dropped_at = int(time.time() * 1000)
    assert int(await deployment.redis.hget(f"bond:metrics:{big}", "dropped") or 0) >= 5
    # Meanwhile the small stream's windows keep coming, on time, from the same worker.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
      records = [r for r in await window_records(deployment.bootstrap, f"{deployment.prefix}bond.stream.{small}")
                 if r[0] > dropped_at]  # fmt: skip
      if len(records) >= 5:
        break
      await asyncio.sleep(0.5)
  finally:
    for feed in feeds:
      await feed.stop()
  seqs = [seq for seq, _ in records]
  assert len(records) >= 5 and seqs == list(range(seqs[0], seqs[0] + 1000 * len(seqs), 1000))
  lags = [ts - seq for seq, ts in records]
  assert max(lags) < 2 * LATENESS_MS, f"windows of the other stream were held up: lags {lags} ms"
  events = [json.loads(f["e"]) for _, f in await deployment.redis.xrange(f"bond:stream:{small}")]
  measured = [e for e in events if e["seq"] > dropped_at]
  assert len(measured) >= 5 and all(e["trades"] > 0 for e in measured)
  # Nothing of the wide stream went out anywhere, and one log line says why.
  assert await deployment.redis.xlen(f"bond:stream:{big}") == 0
  assert await window_records(deployment.bootstrap, f"{deployment.prefix}bond.stream.{big}") == []
  metrics = await deployment.redis.hgetall(f"bond:metrics:{big}")
  assert int(metrics.get("windows_out", 0)) == 0
  worker.stop()
  logged = worker.log_path.read_text()
  assert logged.count(f"stream {big}: dropping") == 1
  assert "BOND_MAX_WINDOW_BYTES" in logged
