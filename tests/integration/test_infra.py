"""The real broker and Redis of the test session: produce/consume, XADD/XRANGE, `bond kafka`."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bond.topics import CATALOG
from bond.topics.admin import TopicAdmin

BOND = str(Path(sys.executable).parent / "bond")


async def test_catalog_topics_exist_with_their_settings(infra):
  async with TopicAdmin(infra["bootstrap"]) as admin:
    have = await admin.existing()
    assert {t.name for t in CATALOG} <= have
    # A second ensure creates nothing: creation is idempotent.
    assert await admin.ensure() == []


async def test_stream_topic_create_and_delete(infra, unique):
  sid = unique("s")
  async with TopicAdmin(infra["bootstrap"]) as admin:
    name = await admin.create_stream_topic(sid)
    assert name == f"bond.stream.{sid}"
    assert name in await admin.existing()
    await admin.delete_stream_topic(sid)
    assert name not in await admin.existing()
    await admin.delete_stream_topic(sid)  # deleting twice is fine


async def test_produce_and_consume_through_the_broker(infra, unique):
  topic = unique("t")
  producer = AIOKafkaProducer(bootstrap_servers=infra["bootstrap"])
  await producer.start()
  try:
    for i in range(5):
      await producer.send_and_wait(topic, json.dumps({"i": i}).encode(), key=b"k")
  finally:
    await producer.stop()
  consumer = AIOKafkaConsumer(
    topic, bootstrap_servers=infra["bootstrap"], auto_offset_reset="earliest"
  )
  await consumer.start()
  try:
    got = []
    while len(got) < 5:
      batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 10)
      got += [json.loads(m.value) for msgs in batch.values() for m in msgs]
  finally:
    await consumer.stop()
  assert [g["i"] for g in got] == [0, 1, 2, 3, 4]


async def test_redis_stream_xadd_with_explicit_ids(redis_client, unique):
  key = unique("bond:test")
  try:
    await redis_client.xadd(key, {"v": "a"}, id="1000-0")
    await redis_client.xadd(key, {"v": "b"}, id="2000-0")
    entries = await redis_client.xrange(key)
    assert [e[0] for e in entries] == ["1000-0", "2000-0"]
  finally:
    await redis_client.delete(key)


async def test_bond_kafka_runs_kafkas_tools_against_bonds_broker(infra, unique):
  """`bond kafka <tool>` without --bootstrap-server talks to KAFKA_BOOTSTRAP."""
  topic = unique("kafkatool")
  producer = AIOKafkaProducer(bootstrap_servers=infra["bootstrap"])
  await producer.start()
  try:
    await producer.send_and_wait(topic, b'{"hello":"bond"}', key=b"k")
  finally:
    await producer.stop()
  env = {**os.environ, "KAFKA_BOOTSTRAP": infra["bootstrap"], "BOND_ENV": "dev"}

  def bond(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
      [BOND, "kafka", *args], capture_output=True, text=True, env=env, timeout=120
    )

  listed = await asyncio.to_thread(bond, "topics", "--list")
  assert listed.returncode == 0, listed.stderr
  assert {"bond.raw.ccxt", "bond.panes", topic} <= set(listed.stdout.split())
  read = await asyncio.to_thread(
    bond, "console-consumer", "--topic", topic, "--from-beginning", "--max-messages", "1",
    "--timeout-ms", "30000",
  )  # fmt: skip
  assert read.returncode == 0, read.stderr
  assert read.stdout.strip() == '{"hello":"bond"}'
  wrong = await asyncio.to_thread(bond, "no-such-tool")
  assert wrong.returncode != 0 and "console-consumer" in wrong.stderr
