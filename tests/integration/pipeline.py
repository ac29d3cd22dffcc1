"""A private Bond deployment driven by a test: its own topic prefix, streams and raw events
(the `deployment` fixture in conftest.py starts one)."""

import asyncio
import dataclasses
import json
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bond.compiler import stream_id as make_stream_id
from bond.registry import RegistryWriter, new_record
from bond.schemas import StreamSpec
from bond.topics import CATALOG
from bond.topics.admin import TopicAdmin


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

  async def create(self, spec: dict, created_ms: int, owner: str | None = None) -> str:
    owner = owner or self.prefix  # unique per test, so stream ids (and Redis keys) are too
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

  async def stream_windows(self, sid: str) -> list[dict]:
    """Return every window in the stream's Kafka topic, in order."""
    return await partition_records(
      self.bootstrap, TopicPartition(f"{self.prefix}bond.stream.{sid}", 0)
    )


async def partition_records(bootstrap: str, tp: TopicPartition) -> list[dict]:
  """Return every record of a topic partition so far, decoded from JSON, in order."""
  consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
  await consumer.start()
  out: list[dict] = []
  try:
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    end = (await consumer.end_offsets([tp]))[tp]
    while await consumer.position(tp) < end:
      batch = await consumer.getmany(tp, timeout_ms=1000)
      out += [json.loads(m.value) for m in batch.get(tp, []) if m.offset < end]
  finally:
    await consumer.stop()
  return out


def trade(ex: str, sym: str, ts: int, price: float, amount: float, tid: int) -> dict:
  return {"exchange": ex, "symbol": sym, "kind": "trade", "ts": ts, "price": price, "amount": amount,
          "side": "buy", "trade_id": str(tid)}  # fmt: skip
