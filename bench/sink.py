"""Benchmark the worker's output path alone: CPU per window from `sink.emit` to Kafka and Redis.

`python -m bench.sink [--quick] [--streams N] [--module PATH] [--label NAME]` writes
bench/results/sink[-NAME].json. The sink (agents/sink.py, or another implementation
given by path, e.g. an older revision for a before/after) runs in this process against
the bench's Kafka and Redis: N streams with their own topics each emit one window per
round, as stage 2 would; each round, the metrics are flushed as the worker does every
second. Reported: this process's CPU per window (emit, serialisation, Kafka send, Redis
write, metrics) and the time until every window is in its Redis ring.
"""

import argparse
import asyncio
import cProfile
import importlib.util
import os
import sys
import time
import uuid
from types import ModuleType
from typing import Any

# Topic names are fixed when bond.topics is first imported: this run's prefix comes first.
PREFIX = f"bench-{uuid.uuid4().hex[:8]}."
os.environ["BOND_TOPIC_PREFIX"] = PREFIX

from bench.stack import ensure_infra, write_result  # noqa: E402
from bond.config import get_settings  # noqa: E402
from bond.topics.admin import drop_topics  # noqa: E402

SYMBOL_WINDOW = {  # a 1-symbol window as stage 2 emits it (~0.4 KB)
  "stream_id": "", "seq": 0, "ts": "", "window_start": "", "interval_sec": 1, "symbol": "BTC/USDT",
  "price_open": 68000.1, "price_high": 68010.5, "price_low": 67990.2, "price_close": 68001.0,
  "price_avg": 68000.7, "vwap": 68000.9, "volume_sum": 12.5, "trades": 20, "tweets": 0,
  "liquidations": 0, "onchain": {}, "custom_count": 0,
  "raw_data": {"trades": 20, "sources": ["binance"], "sim": True},
}  # fmt: skip


def load_sink(path: str | None) -> ModuleType:
  """Import the sink module (the current one, or the file at `path`)."""
  import bond.agents.app  # noqa: F401  # the app first: its agents import the sink

  if path is None:
    import bond.agents.sink as current

    return current
  from prometheus_client import REGISTRY, Counter, Histogram

  import bond.agents.sink as current

  for value in vars(current).values():  # the other module registers the same metric names
    if isinstance(value, (Counter, Histogram)):
      REGISTRY.unregister(value)
  spec = importlib.util.spec_from_file_location("bench_sink_under_test", path)
  if spec is None or spec.loader is None:
    raise SystemExit(f"cannot import {path}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def drained(sink: Any) -> bool:
  """Return whether the sink has nothing left to write (this sink or the older one)."""
  if hasattr(sink, "outbox"):
    return not (sink.outbox.pending or sink.outbox.inflight or sink.redis_queue)
  return bool(sink.queue.empty() and not sink.redis_queue)


async def run(
  module: ModuleType, redis_url: str, streams: int, rounds: int, profile: str | None = None
) -> dict[str, Any]:
  import redis.asyncio as aioredis

  from bond.wire import metrics_key, stream_key

  sink = module.Sink()
  # This process is the worker that owns every stream (its percentiles are written too).
  import bond.agents.windows as core

  setattr(core, "_owned", lambda stream_id: True)  # noqa: B010  # the older sink asks here
  if hasattr(sink, "owned"):
    sink.owned = lambda: lambda sid: True
  tag = uuid.uuid4().hex[:8]
  sids = [f"{tag}{i:08x}" for i in range(streams)]
  for i in range(0, streams, 500):
    await sink.prepare(sids[i : i + 500])
  loops: list[asyncio.Task[Any]] = []
  if hasattr(sink, "kafka_loop"):
    loops.append(asyncio.create_task(sink.kafka_loop()))
  else:  # the older sink: one drain per batch

    async def drain() -> None:
      while True:
        await sink.drain()

    loops.append(asyncio.create_task(drain()))
  loops.append(asyncio.create_task(sink.redis_loop()))
  client = aioredis.from_url(redis_url)
  base_ms = (int(time.time() * 1000) // 1000) * 1000

  async def emit_and_wait(first: int, count: int) -> None:
    for r in range(first, first + count):
      seq = base_ms + r * 1000
      for sid in sids:
        sink.emit(sid, {**SYMBOL_WINDOW, "stream_id": sid, "seq": seq}, msgs_in=20, lag_ms=40)
      sink.latency((0, "ccxt|binance|BTC/USDT"), [3.0, 4.0, 5.0, 6.0])  # once per pane
      await sink.flush_metrics()
      await asyncio.sleep(0)
    # Wait on the sink's own state: polling Redis for 1,000 rings would cost more CPU here
    # than the sink itself.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not drained(sink):  # noqa: ASYNC110  # no event to wait on
      await asyncio.sleep(0.05)
    todo = list(sids)
    while time.monotonic() < deadline:
      pipe = client.pipeline(transaction=False)
      for sid in todo:
        pipe.xlen(stream_key(sid))
      lengths = await pipe.execute()
      todo = [sid for sid, n in zip(todo, lengths, strict=True) if n < first + count]
      if not todo:
        return
      await asyncio.sleep(0.25)
    raise RuntimeError("not every window reached Redis within 300 s")

  try:
    # Warm-up: connections, the new topics' leaders and metadata, their first batches.
    await emit_and_wait(0, 2)
    await asyncio.sleep(3)
    profiler = cProfile.Profile() if profile else None
    cpu0, wall0 = time.process_time(), time.monotonic()
    if profiler is not None:
      profiler.enable()
    await emit_and_wait(2, rounds)
    if profiler is not None and profile is not None:
      profiler.disable()
      profiler.dump_stats(profile)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
  finally:
    for task in loops:
      task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    for i in range(0, streams, 500):
      keys = [stream_key(s) for s in sids[i : i + 500]] + [
        metrics_key(s) for s in sids[i : i + 500]
      ]
      await client.delete(*keys)
    await client.aclose()
    if hasattr(sink, "stop"):
      await sink.stop()
  windows = streams * rounds
  return {"streams": streams, "rounds": rounds, "windows": windows, "cpu_sec": round(cpu, 2),
          "cpu_us_per_window": round(cpu / windows * 1e6, 1), "wall_sec": round(wall, 2),
          "windows_per_cpu_sec": round(windows / max(cpu, 1e-9))}  # fmt: skip


async def main(
  quick: bool, streams: int, module_path: str | None, label: str | None, profile: str | None
) -> int:
  rounds = 3 if quick else 10
  async with ensure_infra() as (bootstrap, redis_url):
    os.environ.update(KAFKA_BOOTSTRAP=bootstrap, REDIS_URL=redis_url, BOND_ENV="dev")
    # Starting the stack read the settings already: the worker's modules must see these.
    get_settings.cache_clear()
    try:
      row = await run(load_sink(module_path), redis_url, streams, rounds, profile)
    finally:
      await drop_topics(bootstrap, (PREFIX,))
  name = f"sink-{label}" if label else "sink"
  path = write_result(name, quick, {"output": row, "module": module_path or "agents/sink.py"})
  print(f"{row['windows']} windows of {streams} streams: {row['cpu_us_per_window']} us CPU per window "
        f"(emit to Kafka and Redis, metrics included), all in Redis after {row['wall_sec']} s; written {path}")  # fmt: skip
  return 0


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--streams", type=int, default=1000)
  parser.add_argument("--module", help="path of another sink implementation to measure")
  parser.add_argument("--label", help="write bench/results/sink-LABEL.json")
  parser.add_argument("--profile", help="write a cProfile of the measured rounds to this file")
  args = parser.parse_args()
  sys.exit(asyncio.run(main(args.quick, args.streams, args.module, args.label, args.profile)))
