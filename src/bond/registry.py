"""The stream registry: StreamRecords in the compacted `bond.control.streams` topic.

Every process that needs the registry (API, workers, gateways) tails the whole topic from
the beginning without a consumer group and keeps it in memory; the API writes to it.
"""

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import BaseModel

from bond.errors import UpstreamError
from bond.schemas import StreamSpec
from bond.topics import CONTROL_STREAMS

log = logging.getLogger(__name__)

Listener = Callable[[str, "StreamRecord | None"], None]


class StreamRecord(BaseModel):
  """One registered stream: who owns it, what it is, when it was created."""

  stream_id: str
  owner: str
  spec: StreamSpec
  created_at: str
  created_at_ms: int


def new_record(
  stream_id: str, owner: str, spec: StreamSpec, now_ms: int | None = None
) -> StreamRecord:
  """Return a StreamRecord created now."""
  ms = int(time.time() * 1000) if now_ms is None else now_ms
  created = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
  return StreamRecord(
    stream_id=stream_id, owner=owner, spec=spec, created_at=created, created_at_ms=ms
  )


class Registry:
  """An in-memory view of `bond.control.streams`, kept current by tailing the topic."""

  def __init__(self, bootstrap: str, topic: str = CONTROL_STREAMS.name) -> None:
    self._bootstrap = bootstrap
    self._topic = topic
    self._streams: dict[str, StreamRecord] = {}
    self._listeners: list[Listener] = []
    self._consumer: AIOKafkaConsumer | None = None
    self._task: asyncio.Task[None] | None = None
    self._changed = asyncio.Event()
    self._position: dict[int, int] = {}

  def add_listener(self, listener: Listener) -> None:
    """Call `listener(stream_id, record_or_None)` on every change, including the initial load."""
    self._listeners.append(listener)

  def get(self, stream_id: str) -> StreamRecord | None:
    """Return the stream's record, or None when unknown or deleted."""
    return self._streams.get(stream_id)

  def all(self) -> list[StreamRecord]:
    """Return every live stream, oldest first."""
    return sorted(self._streams.values(), key=lambda r: (r.created_at_ms, r.stream_id))

  async def start(self) -> None:
    """Load the whole registry, then keep following it in the background."""
    self._consumer = AIOKafkaConsumer(
      bootstrap_servers=self._bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await self._consumer.start()
    parts = self._consumer.partitions_for_topic(self._topic)
    if not parts:
      parts = set(await self._wait_partitions())
    tps = [TopicPartition(self._topic, p) for p in sorted(parts)]
    self._consumer.assign(tps)
    await self._consumer.seek_to_beginning(*tps)
    end = await self._consumer.end_offsets(tps)
    while not await self._caught_up(tps, end):
      await self._poll_once(500)
    self._task = asyncio.create_task(self._follow(), name="registry-follow")

  async def _caught_up(self, tps: list[TopicPartition], end: dict[TopicPartition, int]) -> bool:
    assert self._consumer is not None
    for tp in tps:
      if await self._consumer.position(tp) < end[tp]:
        return False
    return True

  async def _wait_partitions(self) -> set[int]:
    assert self._consumer is not None
    for _ in range(100):
      await self._consumer._client.force_metadata_update()  # the topic may be brand new
      parts = self._consumer.partitions_for_topic(self._topic)
      if parts:
        return set(parts)
      await asyncio.sleep(0.1)
    raise UpstreamError(f"topic {self._topic} does not exist; start Bond with `bond up`")

  async def _poll_once(self, timeout_ms: int) -> None:
    assert self._consumer is not None
    batches = await self._consumer.getmany(timeout_ms=timeout_ms)
    for tp, msgs in batches.items():
      for msg in msgs:
        self._apply(msg.key, msg.value)
        self._position[tp.partition] = msg.offset + 1
    if batches:
      self._changed.set()

  def _apply(self, key: bytes | None, value: bytes | None) -> None:
    if key is None:
      return
    sid = key.decode()
    record: StreamRecord | None = None
    if value is None:
      if self._streams.pop(sid, None) is None:
        return
    else:
      try:
        record = StreamRecord.model_validate_json(value)
      except ValueError:
        log.warning("skipping unreadable registry record for %s", sid)
        return
      self._streams[sid] = record
    for listener in self._listeners:
      listener(sid, record)

  async def _follow(self) -> None:
    while True:
      try:
        await self._poll_once(1000)
      except KafkaError as err:
        log.warning("registry: %s; retrying", err)
        await asyncio.sleep(1)

  async def wait_for(self, stream_id: str, present: bool, timeout_sec: float = 10.0) -> bool:
    """Wait until the stream is (or is no longer) in the registry; return whether it happened."""
    deadline = time.monotonic() + timeout_sec
    while (stream_id in self._streams) != present:
      left = deadline - time.monotonic()
      if left <= 0:
        return False
      self._changed.clear()
      try:
        await asyncio.wait_for(self._changed.wait(), left)
      except TimeoutError:
        return (stream_id in self._streams) == present
    return True

  async def stop(self) -> None:
    """Stop following; safe to call twice."""
    task, self._task = self._task, None
    if task is not None:
      task.cancel()
      await asyncio.gather(task, return_exceptions=True)
    consumer, self._consumer = self._consumer, None
    if consumer is not None:
      await consumer.stop()

  async def __aenter__(self) -> "Registry":
    await self.start()
    return self

  async def __aexit__(self, *exc: object) -> None:
    await self.stop()


class RegistryWriter:
  """Writes StreamRecords and tombstones to `bond.control.streams` (acks=all, idempotent)."""

  def __init__(self, bootstrap: str, topic: str = CONTROL_STREAMS.name) -> None:
    self._producer = AIOKafkaProducer(
      bootstrap_servers=bootstrap, acks="all", enable_idempotence=True
    )
    self._topic = topic
    self._started = False

  async def start(self) -> None:
    """Connect the producer."""
    await self._producer.start()
    self._started = True

  async def stop(self) -> None:
    """Flush and close; safe to call twice."""
    if self._started:
      self._started = False
      await self._producer.stop()

  async def put(self, record: StreamRecord) -> None:
    """Write (or overwrite) a stream's record and wait for the broker's ack."""
    await self._producer.send_and_wait(
      self._topic, record.model_dump_json().encode(), key=record.stream_id.encode()
    )

  async def delete(self, stream_id: str) -> None:
    """Write a tombstone for the stream and wait for the broker's ack."""
    await self._producer.send_and_wait(self._topic, None, key=stream_id.encode())


def record_json(record: StreamRecord) -> dict[str, object]:
  """Return the record as plain JSON-able data."""
  return json.loads(record.model_dump_json())
