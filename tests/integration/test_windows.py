"""Exact window values through real Kafka, a real Faust worker and real Redis."""

import re
import time

import httpx
import pytest

from tests.integration.pipeline import trade

pytestmark = pytest.mark.integration


async def test_exact_values_boundaries_and_joined_sources(deployment, worker_factory):
  now = int(time.time() * 1000)
  interval = 2000
  ex = "testex"
  spec = {
    "sources": [
      {"type": "ccxt"},
      {"type": "twitter"},
      {"type": "onchain", "event_types": ["tx", "transfer"]},
    ],
    "symbols": ["BTC/USDT"],
    "interval_sec": 2,
    "exchanges": [ex],
  }
  sid = await deployment.create(spec, created_ms=now)
  worker = worker_factory().start()
  w0 = -(-now // interval) * interval + interval * 3  # a window comfortably in the future
  # Window [w0, w0+2000): three trades, a boundary trade at exactly w0 (belongs here), a tweet,
  # two on-chain events; the trade at w0+2000 belongs to the next window.
  t = [
    trade(ex, "BTC/USDT", w0, 100.0, 1.0, 1),
    trade(ex, "BTC/USDT", w0 + 500, 110.0, 3.0, 2),
    trade(ex, "BTC/USDT", w0 + 1999, 90.0, 2.0, 3),
    trade(ex, "BTC/USDT", w0 + 2000, 120.0, 1.0, 4),
  ]
  for tr in t:
    await deployment.send("bond.raw.ccxt", "BTC/USDT", **tr)
  await deployment.send(
    "bond.raw.x", "BTC", id="1", text="$BTC up", author="a", symbols=["BTC"], ts=w0 + 10
  )
  await deployment.send("bond.raw.onchain", "sol", chain="sol", type="tx", slot=1, ts=w0 + 20)
  await deployment.send(
    "bond.raw.onchain", "sol", chain="sol", type="transfer", slot=1, ts=w0 + 30, amount=5.0
  )
  # Progress of every feed past w0 + 4000 closes both windows.
  end = w0 + 2 * interval
  await deployment.send(
    "bond.raw.ccxt",
    "BTC/USDT",
    heartbeat=True,
    source="ccxt",
    exchange=ex,
    symbol="BTC/USDT",
    ts=end,
  )
  await deployment.send(
    "bond.raw.x", "BTC", heartbeat=True, source="twitter", exchange="x", symbol="BTC", ts=end
  )
  await deployment.send(
    "bond.raw.onchain",
    "sol",
    heartbeat=True,
    source="onchain",
    exchange="sol",
    symbol="sol",
    ts=end,
  )
  await deployment.flush()

  first_end = (
    -(-(now + 1000) // interval) * interval + interval
  )  # first boundary a pane after creation
  expected = (end - first_end) // interval + 1
  events = await deployment.windows(sid, expected)
  by_seq = {e["seq"]: e for e in events}
  seqs = [e["seq"] for e in events]
  assert seqs == list(range(first_end, first_end + interval * len(seqs), interval)), (
    "windows must be consecutive"
  )

  w = by_seq[w0 + interval]
  assert w["ts"].endswith("Z") and w["interval_sec"] == 2
  assert w["trades"] == 3
  assert w["price_avg"] == pytest.approx(100.0)
  assert (w["price_open"], w["price_high"], w["price_low"], w["price_close"]) == (
    100.0,
    110.0,
    90.0,
    90.0,
  )
  assert w["volume_sum"] == pytest.approx(6.0)
  assert w["vwap"] == pytest.approx((100 * 1 + 110 * 3 + 90 * 2) / 6)
  assert w["tweets"] == 1
  assert w["onchain"] == {"tx": 1, "transfer": 1}
  assert w["raw_data"]["sources"] == sorted([ex, "sol", "x"])

  nxt = by_seq[w0 + 2 * interval]
  assert nxt["trades"] == 1 and nxt["price_close"] == 120.0 and nxt["tweets"] == 0

  empty = by_seq[w0]
  assert (
    empty["price_avg"] is None
    and empty["trades"] == 0
    and empty["onchain"] == {"tx": 0, "transfer": 0}
  )

  # The worker's Prometheus metrics count this stream's windows and its emit lag.
  async with httpx.AsyncClient() as client:
    text = (await client.get(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5)).text
  counts = re.findall(rf'bond_worker_windows_total{{stream_id="{sid}"}} ([0-9.]+)', text)
  assert counts and float(counts[0]) >= len(events)  # more may have closed since
  assert f'bond_worker_emit_lag_seconds_count{{stream_id="{sid}"}}' in text
