"""The sink reads the last window of a stream's topic before sending, so a window composed
again after a crash or a move is not written to Kafka a second time."""

import asyncio
import json

import pytest
from aiokafka import AIOKafkaConsumer

from bond.agents.sink_io import last_records
from bond.topics.admin import TopicAdmin, drop_topics
from bond.topics.catalog import stream_topic

pytestmark = pytest.mark.integration


async def test_last_records_reads_each_topics_last_window_and_none_for_an_empty_one(deployment):
  full, empty = (stream_topic(f"{deployment.prefix}tail{n}") for n in (1, 2))
  async with TopicAdmin(deployment.bootstrap) as admin:
    await admin.ensure([full, empty])
  for seq in (1000, 2000, 3000):
    await deployment.producer.send(full.name, json.dumps({"seq": seq}).encode(), key=b"s")
  await deployment.producer.flush()
  consumer = AIOKafkaConsumer(bootstrap_servers=deployment.bootstrap, enable_auto_commit=False)
  await consumer.start()
  try:
    tails = await last_records(consumer, [full.name, empty.name])
    assert {k: v and json.loads(v)["seq"] for k, v in tails.items()} == {
      full.name: 3000,
      empty.name: None,
    }
    # The consumer is left with nothing assigned, ready for the next read.
    assert consumer.assignment() == set()
    await deployment.producer.send_and_wait(full.name, json.dumps({"seq": 4000}).encode(), key=b"s")
    assert json.loads((await last_records(consumer, [full.name]))[full.name])["seq"] == 4000
  finally:
    await consumer.stop()


async def test_the_tails_of_many_new_topics_are_read_in_one_go(deployment):
  # A few hundred streams created at once: their tails used to be asked for one topic's
  # metadata per 100 ms retry, and 480 of them outlasted aiokafka's 40 s timeout.
  topics = [stream_topic(f"{deployment.prefix}many{n}") for n in range(120)]
  async with TopicAdmin(deployment.bootstrap) as admin:
    await admin.ensure(topics)
  try:
    await deployment.producer.send_and_wait(topics[-1].name, b'{"seq": 7000}', key=b"s")
    consumer = AIOKafkaConsumer(bootstrap_servers=deployment.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
      async with asyncio.timeout(8):
        tails = await last_records(consumer, [t.name for t in topics])
    finally:
      await consumer.stop()
    assert tails[topics[-1].name] == b'{"seq": 7000}'
    assert sum(v is None for v in tails.values()) == 119
  finally:
    await drop_topics(deployment.bootstrap, (f"{topics[0].name[:-1]}",))
