"""Exact window values through real Kafka, a real Faust worker and real Redis."""

import asyncio
import dataclasses
import json
import time

import pytest
from aiokafka import AIOKafkaProducer

from bond.compiler import stream_id as make_stream_id
from bond.registry import RegistryWriter, new_record
from bond.schemas import StreamSpec
from bond.topics import CATALOG
from bond.topics.admin import TopicAdmin

pytestmark = pytest.mark.integration


class Deployment:
  """A private Bond deployment (own topic prefix) driven by the test: streams and raw events."""

  def __init__(self, env: dict[str, str], redis_client) -> None:
    self.prefix = env["BOND_TOPIC_PREFIX"]
    self.bootstrap = env["KAFKA_BOOTSTRAP"]
    self.redis = redis_client
    self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
    self.writer = RegistryWriter(self.bootstrap, topic=self.prefix + "bond.control.streams")

  async def start(self) -> None:
    specs = [dataclasses.replace(t, name=self.prefix + t.name) for t in CATALOG]
    async with TopicAdmin(self.bootstrap) as admin:
      await admin.ensure(specs)
    await self.producer.start()
    await self.writer.start()

  async def stop(self) -> None:
    await self.producer.stop()
    await self.writer.stop()

  async def create(self, spec: dict, created_ms: int, owner: str = "test") -> str:
    parsed = StreamSpec.model_validate(spec)
    sid = make_stream_id(parsed, owner)
    await self.writer.put(new_record(sid, owner, parsed, now_ms=created_ms))
    return sid

  async def send(self, topic: str, key: str, **event) -> None:
    event.setdefault("ts_ingest", int(time.time() * 1000))
    await self.producer.send(self.prefix + topic, json.dumps(event).encode(), key=key.encode())

  async def flush(self) -> None:
    await self.producer.flush()

  async def windows(self, sid: str, count: int, timeout_sec: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
      entries = await self.redis.xrange(f"bond:stream:{sid}")
      if len(entries) >= count:
        return [json.loads(fields["e"]) for _, fields in entries]
      await asyncio.sleep(0.1)
    raise AssertionError(f"only {len(entries)} of {count} windows in Redis for {sid}")


@pytest.fixture
async def deployment(isolated_env, redis_client):
  dep = Deployment(isolated_env, redis_client)
  await dep.start()
  yield dep
  await dep.stop()


def trade(ex: str, sym: str, ts: int, price: float, amount: float, tid: int) -> dict:
  return {"exchange": ex, "symbol": sym, "kind": "trade", "ts": ts, "price": price, "amount": amount,
          "side": "buy", "trade_id": str(tid)}  # fmt: skip


async def test_exact_values_boundaries_and_joined_sources(deployment, worker_factory):
  now = int(time.time() * 1000)
  interval = 2000
  ex = "testex"
  spec = {
    "sources": [{"type": "ccxt"}, {"type": "twitter"}, {"type": "onchain", "event_types": ["tx", "transfer"]}],
    "symbols": ["BTC/USDT"],
    "interval_sec": 2,
    "exchanges": [ex],
  }
  sid = await deployment.create(spec, created_ms=now)
  worker_factory().start()
  w0 = -(-now // interval) * interval + interval * 2  # a window comfortably in the future
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
  await deployment.send("bond.raw.x", "BTC", id="1", text="$BTC up", author="a", symbols=["BTC"], ts=w0 + 10)
  await deployment.send("bond.raw.onchain", "sol", chain="sol", type="tx", slot=1, ts=w0 + 20)
  await deployment.send("bond.raw.onchain", "sol", chain="sol", type="transfer", slot=1, ts=w0 + 30, amount=5.0)
  # Progress of every feed past w0 + 4000 closes both windows.
  end = w0 + 2 * interval
  await deployment.send("bond.raw.ccxt", "BTC/USDT", heartbeat=True, source="ccxt", exchange=ex, symbol="BTC/USDT", ts=end)
  await deployment.send("bond.raw.x", "BTC", heartbeat=True, source="twitter", exchange="x", symbol="BTC", ts=end)
  await deployment.send("bond.raw.onchain", "sol", heartbeat=True, source="onchain", exchange="sol", symbol="sol", ts=end)
  await deployment.flush()

  first_end = -(-now // interval) * interval + interval
  expected = (end - first_end) // interval + 1
  events = await deployment.windows(sid, expected)
  by_seq = {e["seq"]: e for e in events}
  seqs = [e["seq"] for e in events]
  assert seqs == list(range(first_end, first_end + interval * len(seqs), interval)), "windows must be consecutive"

  w = by_seq[w0 + interval]
  assert w["ts"].endswith("Z") and w["interval_sec"] == 2
  assert w["trades"] == 3
  assert w["price_avg"] == pytest.approx(100.0)
  assert (w["price_open"], w["price_high"], w["price_low"], w["price_close"]) == (100.0, 110.0, 90.0, 90.0)
  assert w["volume_sum"] == pytest.approx(6.0)
  assert w["vwap"] == pytest.approx((100 * 1 + 110 * 3 + 90 * 2) / 6)
  assert w["tweets"] == 1
  assert w["onchain"] == {"tx": 1, "transfer": 1}
  assert w["raw_data"]["sources"] == sorted([ex, "sol", "x"])

  nxt = by_seq[w0 + 2 * interval]
  assert nxt["trades"] == 1 and nxt["price_close"] == 120.0 and nxt["tweets"] == 0

  empty = by_seq[w0]
  assert empty["price_avg"] is None and empty["trades"] == 0 and empty["onchain"] == {"tx": 0, "transfer": 0}
