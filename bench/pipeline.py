"""Benchmark the windowing pipeline: raw events/s per worker at 1 and 1,000 streams, and emit lag.

`python -m bench.pipeline [--quick]` writes bench/results/pipeline.json. Everything runs on
127.0.0.1 against a real Kafka, Redis and Faust worker; every loop is bounded.
"""

import argparse
import asyncio
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.stack import ensure_infra, free_port, write_result
from bond.compiler import stream_id as make_stream_id
from bond.registry import RegistryWriter, new_record
from bond.schemas import StreamSpec
from bond.topics import CATALOG, stream_topic
from bond.topics.admin import TopicAdmin, drop_topics
from bond.wire import metrics_key, stream_key

ROOT = Path(__file__).resolve().parent.parent
SYMBOLS = [
  "BTC/USDT",
  "ETH/USDT",
  "SOL/USDT",
  "XRP/USDT",
  "DOGE/USDT",
  "ADA/USDT",
  "LINK/USDT",
  "AVAX/USDT",
]
EXCHANGE = "benchex"
# Emit lag is reported for the steady state: windows ending in the first 10 s of the streams
# (new streams, a worker that just started) are reported apart, as warm-up.
WARMUP_MS = 10_000


class Run:
  """One private deployment (topic prefix + Faust app id) with its own worker."""

  def __init__(self, bootstrap: str, redis_url: str, lateness_ms: int = 1000) -> None:
    tag = uuid.uuid4().hex[:8]
    self.prefix = f"bench-{tag}."
    self.bootstrap, self.redis_url = bootstrap, redis_url
    self.env = {
      **os.environ,
      "KAFKA_BOOTSTRAP": bootstrap,
      "REDIS_URL": redis_url,
      "BOND_TOPIC_PREFIX": self.prefix,
      "BOND_APP_ID": f"bond-bench-{tag}",
      "BOND_FEEDS": "off",
      "BOND_ENV": "dev",
      "BOND_LATENESS_MS": str(lateness_ms),
    }
    self.group = self.env["BOND_APP_ID"]
    self.worker: subprocess.Popen[bytes] | None = None
    self.port = 0
    self.log = ROOT / ".bond" / "bench" / f"worker-{tag}.log"

  async def topics(self) -> None:
    async with TopicAdmin(self.bootstrap) as admin:
      await admin.ensure([dataclasses.replace(t, name=self.prefix + t.name) for t in CATALOG])

  async def streams(self, count: int, created_ms: int) -> list[str]:
    writer = RegistryWriter(self.bootstrap, topic=self.prefix + "bond.control.streams")
    await writer.start()
    sids = []
    try:
      for i in range(count):
        spec = StreamSpec.model_validate(
          {
            "sources": ["ccxt"],
            "symbols": [SYMBOLS[i % len(SYMBOLS)]],
            "interval_sec": 1 + i % 5,
            "exchanges": [EXCHANGE],
          }
        )
        sid = make_stream_id(spec, f"{self.prefix}{i}")
        await writer.put(new_record(sid, f"{self.prefix}{i}", spec, now_ms=created_ms))
        sids.append(sid)
    finally:
      await writer.stop()
    # As the REST API does when it creates a stream: its output topic exists before its
    # first window, so the sink does not wait for topic creation.
    async with TopicAdmin(self.bootstrap) as admin:
      for i in range(0, len(sids), 100):
        specs = [stream_topic(sid) for sid in sids[i : i + 100]]
        await admin.ensure([dataclasses.replace(t, name=self.prefix + t.name) for t in specs])
    return sids

  def start_worker(self) -> None:
    self.log.parent.mkdir(parents=True, exist_ok=True)
    port = self.port = free_port()
    faust = str(Path(sys.executable).parent / "faust")
    self.worker = subprocess.Popen(
      [faust, "-A", "bond.agents.app", "worker", "-l", "warn", "--web-port", str(port)],
      env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
      try:
        if httpx.get(f"http://127.0.0.1:{port}/bond/ready", timeout=1).status_code == 200:
          return
      except httpx.HTTPError:
        pass
      if self.worker.poll() is not None:
        raise RuntimeError(f"worker exited; see {self.log}")
      time.sleep(0.2)
    raise RuntimeError(f"worker not ready; see {self.log}")

  def stop_worker(self) -> None:
    if self.worker and self.worker.poll() is None:
      os.killpg(self.worker.pid, signal.SIGTERM)
      try:
        self.worker.wait(30)
      except subprocess.TimeoutExpired:
        os.killpg(self.worker.pid, signal.SIGKILL)

  async def cleanup(self) -> None:
    """Stop the worker and delete this deployment's topics (its own and Faust's)."""
    self.stop_worker()
    await drop_topics(self.bootstrap, (self.prefix, self.group + "-"))

  def stats(self) -> dict[str, int]:
    """Return stage 1's counters (events aggregated, first and last batch times)."""
    return httpx.get(f"http://127.0.0.1:{self.port}/bond/stats", timeout=5).json()["stage1"]


def _trade(symbol: str, ts: int, tid: int, rng: random.Random) -> bytes:
  return json.dumps(
    {"exchange": EXCHANGE, "symbol": symbol, "kind": "trade", "ts": ts, "ts_ingest": ts,
     "price": round(100 + rng.random(), 4), "amount": round(rng.random(), 4), "side": "buy", "trade_id": str(tid)},
    separators=(",", ":"),
  ).encode()  # fmt: skip


async def throughput(bootstrap: str, redis_url: str, streams: int, events: int) -> dict[str, Any]:
  """Pre-produce a backlog of trades, start a worker, and time how fast it drains it."""
  run = Run(bootstrap, redis_url)
  await run.topics()
  now = int(time.time() * 1000)
  await run.streams(streams, created_ms=now)
  topic = run.prefix + "bond.raw.ccxt"
  producer = AIOKafkaProducer(
    bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
  )
  await producer.start()
  rng = random.Random(1)
  span_ms = 60_000  # event time covered by the backlog: windows close as it is consumed
  try:
    for i in range(events):
      sym = SYMBOLS[i % len(SYMBOLS)]
      await producer.send(
        topic, _trade(sym, now + 2000 + i * span_ms // events, i, rng), key=sym.encode()
      )
    await producer.flush()
  finally:
    await producer.stop()
  run.start_worker()
  try:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
      stats = run.stats()
      if stats["events"] >= events:
        break
      await asyncio.sleep(0.25)
    # Stage 1's own clock: from its first batch to the end of the batch that finished the backlog.
    elapsed = max(1, stats["last_batch_ms"] - stats["first_batch_ms"]) / 1000
    rate = events / elapsed
    # Ingestion cost: stage 1's own time per raw event (aggregation, pane records, state).
    ingest_us = stats["busy_us"] / events
  finally:
    await run.cleanup()
  return {
    "streams": streams,
    "events": events,
    "seconds": round(elapsed, 2),
    "stage1_us_per_event": round(ingest_us, 2),
    "events_per_sec": round(rate),
  }


async def emit_lag(
  bootstrap: str, redis_url: str, rate: int, seconds: int, streams: int
) -> dict[str, Any]:
  """Feed `rate` live trades/s (ts = now) with heartbeats and read the streams' emit lag."""
  run = Run(bootstrap, redis_url)
  await run.topics()
  run.start_worker()
  # Streams created while the worker runs: their first window starts at the next boundary.
  sids = await run.streams(streams, created_ms=int(time.time() * 1000))
  await asyncio.sleep(1.5)
  topic = run.prefix + "bond.raw.ccxt"
  producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks=1)
  await producer.start()
  rng = random.Random(2)
  sent = 0
  try:
    t0 = time.monotonic()
    tick = 0.01
    # Trades for `seconds`; heartbeats go on 1.5 s more, so the last windows close on
    # progress as in live use, and the metrics (flushed each second) include them.
    while time.monotonic() - t0 < seconds + 1.5:
      now = int(time.time() * 1000)
      due = int((min(time.monotonic() - t0, seconds)) * rate) - sent
      for _ in range(max(0, due)):
        sym = SYMBOLS[sent % len(SYMBOLS)]
        await producer.send(topic, _trade(sym, now, sent, rng), key=sym.encode())
        sent += 1
      for sym in SYMBOLS:
        hb = {
          "heartbeat": True,
          "source": "ccxt",
          "exchange": EXCHANGE,
          "symbol": sym,
          "ts": now,
          "ts_ingest": now,
        }
        await producer.send(topic, json.dumps(hb).encode(), key=sym.encode())
      await asyncio.sleep(tick)
    await producer.flush()
    # The sink measures every window's lag (emitted - window end) and keeps p50/p95/p99.
    client = aioredis.from_url(redis_url, decode_responses=True)
    p50s: list[float] = []
    p99s: list[float] = []
    windows = 0
    for sid in sids:
      metrics = await client.hgetall(metrics_key(sid))
      if metrics.get("emit_lag_p99_ms"):
        p50s.append(float(metrics["emit_lag_p50_ms"]))
        p99s.append(float(metrics["emit_lag_p99_ms"]))
        windows += int(metrics.get("windows_out", 0))
      await client.delete(stream_key(sid), metrics_key(sid))
    await client.aclose()
    pooled = await _window_lags(bootstrap, [f"{run.prefix}bond.stream.{sid}" for sid in sids])
  finally:
    await producer.stop()
    await run.cleanup()
  return {"rate": rate, "seconds": seconds, "sent": sent, "streams": streams, "windows": windows,
          "p50_ms_worst_stream": max(p50s) if p50s else None,
          "p99_ms_worst_stream": max(p99s) if p99s else None, **pooled}  # fmt: skip


async def _window_lags(bootstrap: str, topics: list[str]) -> dict[str, Any]:
  """Return every window's lag as a client sees it: its stream-topic record time minus its end.

  The sink's own figure (per stream, over its few windows) is the time the window was
  decided; this one adds the sink's hop to Kafka and pools all windows of all streams.
  """
  consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
  await consumer.start()
  seqs: list[tuple[int, int]] = []
  try:
    tps = [TopicPartition(t, 0) for t in topics]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    ends = await consumer.end_offsets(tps)
    pending = {tp for tp in tps if ends[tp] > 0}
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
      batch = await consumer.getmany(*pending, timeout_ms=500)
      for tp, msgs in batch.items():
        for m in msgs:
          if m.offset < ends[tp]:
            seq = json.loads(m.value)["seq"]
            seqs.append((m.timestamp - seq, seq))
        if await consumer.position(tp) >= ends[tp]:
          pending.discard(tp)
  finally:
    await consumer.stop()
  first = min((seq for _, seq in seqs), default=0)
  steady = sorted(lag for lag, seq in seqs if seq >= first + WARMUP_MS)
  warmup = [lag for lag, seq in seqs if seq < first + WARMUP_MS]

  def q(values: list[int], x: float) -> int | None:
    return (
      values[min(len(values) - 1, max(0, int(x * len(values) + 0.999999) - 1))] if values else None
    )

  return {"windows_pooled": len(steady), "p50_ms_all_windows": q(steady, 0.5), "p99_ms_all_windows": q(steady, 0.99),
          "max_ms_all_windows": steady[-1] if steady else None,
          "warmup_windows": len(warmup), "warmup_max_ms": max(warmup, default=None),
          # the slowest windows: (ms after the first window's end, lag ms)
          "slowest": [(seq - first, lag) for lag, seq in sorted(seqs)[-8:]]}  # fmt: skip


async def main(quick: bool) -> int:
  """Run the pipeline benchmarks and write bench/results/pipeline.json."""
  events = 100_000 if quick else 400_000
  with ensure_infra() as (bootstrap, redis_url):
    one = await throughput(bootstrap, redis_url, 1, events)
    print(f"1 stream:      {one['events_per_sec']:>8} raw events/s per worker ({one['seconds']} s)")
    many = await throughput(bootstrap, redis_url, 100 if quick else 1000, events)
    print(
      f"{many['streams']} streams: {many['events_per_sec']:>8} raw events/s per worker ({many['seconds']} s)"
    )
    lag = await emit_lag(bootstrap, redis_url, rate=5000, seconds=10 if quick else 60, streams=16)
  cost_ratio = many["stage1_us_per_event"] / max(1e-9, one["stage1_us_per_event"])
  drain_ratio = one["events_per_sec"] / max(1, many["events_per_sec"])
  result: dict[str, Any] = {
    "one_stream": one,
    "many_streams": many,
    "ingest_cost_ratio_many_vs_one": round(cost_ratio, 3),
    "whole_worker_drain_ratio_one_vs_many": round(drain_ratio, 3),
    "emit_lag": lag,
    "targets": {"events_per_sec": 30_000, "cost_ratio_max": 1.3, "emit_lag_p99_ms_max": 100},
  }
  result["pass"] = {
    "events_per_sec": one["events_per_sec"] >= 30_000,
    "cost_ratio": cost_ratio <= 1.3,
    "emit_lag_p99": (lag.get("p99_ms_all_windows") or 1e9) < 100,
  }
  path = write_result("pipeline", quick, result)
  print(
    f"ingestion cost {one['stage1_us_per_event']} vs {many['stage1_us_per_event']} us/event "
    f"(ratio {cost_ratio:.2f}); whole-worker drain ratio {drain_ratio:.2f}"
  )
  print(
    f"emit lag at 5,000 ev/s, {lag['windows_pooled']} windows of {lag['streams']} streams: "
    f"p50 {lag['p50_ms_all_windows']} ms, p99 {lag['p99_ms_all_windows']} ms, "
    f"max {lag['max_ms_all_windows']} ms (to the stream topic, after a {WARMUP_MS // 1000} s warm-up "
    f"whose worst was {lag['warmup_max_ms']} ms)"
  )
  print(f"written {path}")
  return 0


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--quick", action="store_true")
  sys.exit(asyncio.run(main(parser.parse_args().quick)))
