"""Benchmark what a burst of windows costs on its way into Kafka: one topic per stream (what
the sink does) against one shared topic.

`python -m bench.produce [--quick] [--windows N] [--label NAME]` writes
bench/results/produce[-NAME].json. Windows are epoch-aligned, so at a second that many
intervals divide, hundreds of streams close a window at once (bench.streams reports the
measured windows' lag by that burst size). This bench sends such a burst of N windows
(~0.4 KB each, the sink's producer settings: acks=all, linger 2 ms) through one aiokafka
producer on the bench's Kafka, alternating two layouts round by round:

- `per_stream`: each window to its own single-partition topic, as `bond.stream.<id>`;
- `shared`: every window to one topic of `SHARED_PARTITIONS` partitions, keyed by stream;
- `shared_batched`: the same, built into one record batch per partition by the caller
  (`create_batch` / `send_batch`) instead of one `send` per window.

Reported per layout: the time from the burst's first send to its last acknowledgement
(p50/p90/max over the rounds) and this process's CPU per window. The broker's share is
the acknowledgement time less the producer's CPU.
"""

import argparse
import asyncio
import dataclasses
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from bench.gateway.common import percentile
from bench.stack import ensure_infra, write_result
from bond.topics import stream_topic
from bond.topics.admin import TopicAdmin, drop_topics

SHARED_PARTITIONS = 4
TOPIC_BATCH = 100
PAUSE_SEC = 0.3  # between bursts: each starts with nothing in flight
WARMUP_ROUNDS = 3
# A one-symbol window as stage 2 emits it (~0.4 KB).
BODY = (
  b'{"stream_id":"0123456789abcdef","seq":1764633600000,"ts":"2026-12-02T00:00:00Z",'
  b'"window_start":"2026-12-01T23:59:59Z","interval_sec":1,"symbol":"BTC/USDT",'
  b'"price_open":68000.1,"price_high":68010.5,"price_low":67990.2,"price_close":68001.0,'
  b'"price_avg":68000.7,"vwap":68000.9,"volume_sum":12.5,"trades":20,"tweets":0,'
  b'"liquidations":0,"onchain":{},"custom_count":0,"complete":true,'
  b'"raw_data":{"trades":20,"sources":["binance"],"sim":true}}'
)


async def burst(producer: AIOKafkaProducer, targets: list[tuple[str, bytes]]) -> None:
  """Send one window to each (topic, key) and wait for every acknowledgement."""
  futures = [await producer.send(topic, BODY, key=key) for topic, key in targets]
  await asyncio.gather(*futures)


async def burst_batched(producer: AIOKafkaProducer, topic: str, keys: list[bytes]) -> None:
  """Send one window per key to `topic`, one record batch per partition, and wait for them."""
  partitions = sorted(await producer.partitions_for(topic))
  by_partition: dict[int, list[bytes]] = {}
  for key in keys:
    partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
    by_partition.setdefault(partition, []).append(key)
  futures = []
  for partition, part_keys in by_partition.items():
    batch = producer.create_batch()
    for key in part_keys:
      if batch.append(key=key, value=BODY, timestamp=None) is None:  # full: send, start another
        batch.close()
        futures.append(await producer.send_batch(batch, topic, partition=partition))
        batch = producer.create_batch()
        batch.append(key=key, value=BODY, timestamp=None)
    batch.close()
    futures.append(await producer.send_batch(batch, topic, partition=partition))
  await asyncio.gather(*futures)


async def run(bootstrap: str, windows: int, rounds: int) -> dict[str, Any]:
  prefix = f"bench-produce-{uuid.uuid4().hex[:8]}."
  keys = [f"{i:016x}".encode() for i in range(windows)]
  per_stream = [prefix + stream_topic(key.decode()).name for key in keys]
  shared = prefix + "bond.live"
  template = stream_topic("0")
  try:
    async with TopicAdmin(bootstrap) as admin:
      for k in range(0, windows, TOPIC_BATCH):
        names = per_stream[k : k + TOPIC_BATCH]
        await admin.ensure([dataclasses.replace(template, name=name) for name in names])
      await admin.ensure([dataclasses.replace(template, name=shared, partitions=SHARED_PARTITIONS)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
      for topic in [*per_stream, shared]:
        await producer.partitions_for(topic)  # metadata known before the first burst
      layouts = {
        "per_stream": list(zip(per_stream, keys, strict=True)),
        "shared": [(shared, key) for key in keys],
      }
      names = [*layouts, "shared_batched"]
      acks: dict[str, list[float]] = {name: [] for name in names}
      cpu: dict[str, float] = dict.fromkeys(names, 0.0)
      for r in range(WARMUP_ROUNDS + rounds):
        for name in names:  # alternating: each sees the same machine
          cpu0, wall0 = time.process_time(), time.monotonic()
          if name in layouts:
            await burst(producer, layouts[name])
          else:
            await burst_batched(producer, shared, keys)
          if r >= WARMUP_ROUNDS:
            acks[name].append((time.monotonic() - wall0) * 1000)
            cpu[name] += time.process_time() - cpu0
          await asyncio.sleep(PAUSE_SEC)
    finally:
      await producer.stop()
  finally:
    await drop_topics(bootstrap, (prefix,))
  out: dict[str, Any] = {"windows_per_burst": windows, "rounds": rounds}
  for name, times in acks.items():
    out[name] = {
      "ack_ms": {
        q: round(percentile(times, at) or 0.0, 1)
        for q, at in (("p50", 50), ("p90", 90), ("max", 100))
      },
      "producer_cpu_us_per_window": round(cpu[name] / (rounds * windows) * 1e6, 1),
    }
  return out


async def main(quick: bool, windows: int, label: str | None) -> int:
  rounds = 10 if quick else 40
  async with ensure_infra() as (bootstrap, _redis_url):
    row = await run(bootstrap, windows, rounds)
  path = write_result(f"produce-{label}" if label else "produce", quick, {"output": row})
  for name in ("per_stream", "shared", "shared_batched"):
    ack = row[name]["ack_ms"]
    print(f"{name:>14}: burst of {windows} acknowledged in p50 {ack['p50']} / p90 {ack['p90']} / "
          f"max {ack['max']} ms; producer CPU {row[name]['producer_cpu_us_per_window']} us "
          "per window")  # fmt: skip
  print(f"written {path}")
  return 0


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--windows", type=int, default=400, help="windows in one burst")
  parser.add_argument("--label", help="write bench/results/produce-LABEL.json")
  args = parser.parse_args()
  raise SystemExit(asyncio.run(main(args.quick, args.windows, args.label)))
