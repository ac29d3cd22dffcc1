"""Benchmark the feed path: trades/s the sim exchange sustains, and what a feed carries into Kafka.

`python -m bench.feeds [--quick]` writes bench/results/feeds.json. The sim exchange runs in its
own process (`python -m bond.sim`), as in the dev stack:

1. a raw WebSocket client subscribed to every symbol's `@trade` stream counts what the sim
   delivers at increasing rates, and what it generated and dropped;
2. the production ccxt.pro feed (`CcxtWsFeed`) on five symbols publishes to a private raw
   topic with the worker's producer settings (acks=all, idempotence); the topic's record count
   is what reached Kafka.
"""

import argparse
import asyncio
import dataclasses
import json
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from websockets.asyncio.client import connect

from bench.stack import ensure_infra, free_port, write_result
from bond.config import Settings
from bond.connectors.ccxt_ws import CcxtWsFeed
from bond.schemas import RawTick
from bond.sim.market import START_PRICES
from bond.topics import RAW_CCXT
from bond.topics.admin import TopicAdmin, drop_topics

FEED_SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "DOGE/USDT", "XRP/USDT"]


class Sim:
  """The sim exchange in its own process, at `rate` trades/s per symbol."""

  def __init__(self, rate: float) -> None:
    self.port = free_port()
    self.rate = rate
    self.proc: subprocess.Popen[bytes] | None = None

  @property
  def base_url(self) -> str:
    return f"http://127.0.0.1:{self.port}"

  def __enter__(self) -> "Sim":
    cmd = [sys.executable, "-m", "bond.sim", "--port", str(self.port), "--rate", str(self.rate)]
    self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
      try:
        if httpx.get(f"{self.base_url}/api/v3/ping", timeout=1).status_code == 200:
          return self
      except httpx.HTTPError:
        time.sleep(0.1)
    raise RuntimeError("the sim exchange did not start in 30 s")

  def __exit__(self, *exc: object) -> None:
    if self.proc is not None:
      self.proc.terminate()
      self.proc.wait(10)


async def raw_delivery(rate: float, seconds: float) -> dict[str, Any]:
  """Count the @trade messages one raw client gets from the sim for every symbol."""
  symbols = [f"{base.lower()}usdt" for base in START_PRICES]
  with Sim(rate) as sim:
    async with connect(f"ws://127.0.0.1:{sim.port}/stream/ws/0", max_size=None) as ws:
      params = [f"{s}@trade" for s in symbols]
      await ws.send(json.dumps({"method": "SUBSCRIBE", "params": params, "id": 1}))
      await ws.recv()  # the SUBSCRIBE reply
      received, t0 = 0, time.monotonic()
      while time.monotonic() - t0 < seconds:
        try:
          await asyncio.wait_for(ws.recv(), timeout=1)
        except TimeoutError:
          continue
        received += 1
      elapsed = time.monotonic() - t0
  offered = rate * len(symbols)
  return {"rate_per_symbol": rate, "symbols": len(symbols), "offered_per_sec": round(offered),
          "received_per_sec": round(received / elapsed), "share": round(received / elapsed / offered, 3)}  # fmt: skip


async def feed_to_kafka(bootstrap: str, rate: float, seconds: float) -> dict[str, Any]:
  """Run the ccxt.pro feed on FEED_SYMBOLS against the sim and publish to a private topic."""
  prefix = f"bench-{uuid.uuid4().hex[:8]}."
  topic = prefix + RAW_CCXT.name
  async with TopicAdmin(bootstrap) as admin:
    await admin.ensure([dataclasses.replace(RAW_CCXT, name=topic)])
  settings = Settings(bond_market="sim", bond_env="dev")
  producer = AIOKafkaProducer(
    bootstrap_servers=bootstrap, acks="all", linger_ms=2, enable_idempotence=True
  )
  await producer.start()
  published = 0
  try:
    with Sim(rate) as sim:
      feed = CcxtWsFeed(["binance"], FEED_SYMBOLS, market="sim", sim_url=sim.base_url,
                        settings=settings, tickers=False)  # fmt: skip
      async with feed:
        t0 = time.monotonic()
        async for event in feed:
          if time.monotonic() - t0 >= seconds:
            break
          if not isinstance(event, RawTick):  # a heartbeat
            continue
          await producer.send(topic, event.model_dump_json(exclude_none=True).encode(),
                              key=event.symbol.encode())  # fmt: skip
          published += 1
        elapsed = time.monotonic() - t0
        stats = dict(feed.stats)
    await producer.flush()
    in_kafka = await _records(bootstrap, topic, RAW_CCXT.partitions)
  finally:
    await producer.stop()
    await drop_topics(bootstrap, (prefix,))
  offered = rate * len(FEED_SYMBOLS)
  return {"rate_per_symbol": rate, "symbols": len(FEED_SYMBOLS), "offered_per_sec": round(offered),
          "published_per_sec": round(published / elapsed), "in_kafka": in_kafka, "published": published,
          "duplicates_dropped": stats.get("duplicates_dropped", 0), "disconnects": stats.get("disconnects", 0),
          "backfilled": stats.get("backfilled", 0)}  # fmt: skip


async def _records(bootstrap: str, topic: str, partitions: int) -> int:
  consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
  await consumer.start()
  try:
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    ends = await consumer.end_offsets(tps)
    starts = await consumer.beginning_offsets(tps)
    return sum(ends[tp] - starts[tp] for tp in tps)
  finally:
    await consumer.stop()


async def main(quick: bool) -> int:
  """Run both measurements and write bench/results/feeds.json."""
  seconds = 3 if quick else 6
  sim_rows = []
  for rate in (100, 500, 1500) if not quick else (100, 500):
    row = await raw_delivery(rate, seconds)
    sim_rows.append(row)
    print(
      f"sim: {row['offered_per_sec']:>6} trades/s offered, {row['received_per_sec']:>6}/s to one client"
    )
  feed_rows = []
  with ensure_infra() as (bootstrap, _redis_url):
    for rate in (200, 1000, 3000) if not quick else (200, 1000):
      row = await feed_to_kafka(bootstrap, rate, seconds)
      feed_rows.append(row)
      print(f"feed: {row['offered_per_sec']:>6} trades/s offered, {row['published_per_sec']:>6}/s into Kafka "
            f"({row['in_kafka']} records, {row['duplicates_dropped']} duplicates dropped)")  # fmt: skip
  path = write_result(
    "feeds", quick, {"sim_raw_delivery": sim_rows, "ccxt_ws_feed_to_kafka": feed_rows}
  )
  print(f"written {path}")
  return 0


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true")
  sys.exit(asyncio.run(main(parser.parse_args().quick)))
