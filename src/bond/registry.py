"""The stream registry: StreamRecords in the compacted `bond.control.streams` topic.

Every process that needs the registry (API, workers, gateways) tails the whole topic from
the beginning without a consumer group and keeps it in memory; the API writes to it.
"""

import asyncio
import json
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pydantic import BaseModel

from bond.errors import UpstreamError
from bond.schemas import StreamSpec
from bond.topics import CONTROL_STREAMS
from bond.wire import iso_ms

log = logging.getLogger(__name__)

Listener = Callable[[str, "StreamRecord | None"], None]


PARTITION_WAIT_SEC = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 3.2)


class StreamRecord(BaseModel):
  """One registered stream: who owns it, what it is, when it was created, its token epoch.

  Tokens carry the epoch they were signed for (bond.tokens); a token of another epoch is
  refused. A new record's epoch is its creation time in ms, so a deleted and re-created
  stream refuses the old tokens; a refresh with `revoke_previous` moves it forward.
  """

  stream_id: str
  owner: str
  spec: StreamSpec
  created_at: str
  created_at_ms: int
  token_epoch: int = 0
  backfill_sec: int = 0  # history asked for on create: not part of the spec or the id


def new_record(
  stream_id: str,
  owner: str,
  spec: StreamSpec,
  now_ms: int | None = None,
  token_epoch: int | None = None,
  backfill_sec: int = 0,
) -> StreamRecord:
  """Return a StreamRecord created now (its token epoch defaults to the creation ms)."""
  ms = int(time.time() * 1000) if now_ms is None else now_ms
  return StreamRecord(
    stream_id=stream_id,
    owner=owner,
    spec=spec,
    created_at=_iso_ms3(ms),
    created_at_ms=ms,
    token_epoch=ms if token_epoch is None else token_epoch,
    backfill_sec=backfill_sec,
  )


def revoked_record(record: StreamRecord, now_ms: int | None = None) -> StreamRecord:
  """Return the record with a new token epoch, later than the current one."""
  ms = int(time.time() * 1000) if now_ms is None else now_ms
  return record.model_copy(update={"token_epoch": max(ms, record.token_epoch + 1)})


def _iso_ms3(ms: int) -> str:
  # Records always spell milliseconds (".000Z"), unlike wire.iso_ms.
  text = iso_ms(ms)
  return text if "." in text else text[:-1] + ".000Z"


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
    parts = await self._wait_partitions()
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
    # Ask the cluster (the topic may be brand new, unknown to the consumer's metadata).
    admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
    await admin.start()
    try:
      for pause in (*PARTITION_WAIT_SEC, None):
        for topic in await admin.describe_topics([self._topic]):
          parts = {p["partition"] for p in topic.get("partitions", [])}
          if topic.get("topic") == self._topic and topic.get("error_code") == 0 and parts:
            return parts
        if pause is None:
          break
        await asyncio.sleep(pause)
    finally:
      await admin.close()
    raise UpstreamError(f"topic {self._topic} does not exist; start Bond with `bond up`")

  async def _poll_once(self, timeout_ms: int) -> None:
    assert self._consumer is not None
    batches = await self._consumer.getmany(timeout_ms=timeout_ms)
    for msgs in batches.values():
      for msg in msgs:
        self._apply(msg.key, msg.value)
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
    return await self.wait_until(
      lambda: (stream_id in self._streams) == present, timeout_sec=timeout_sec
    )

  async def wait_until(self, check: Callable[[], bool], timeout_sec: float = 10.0) -> bool:
    """Wait until `check()` holds after a registry change; return whether it did in time."""
    deadline = time.monotonic() + timeout_sec
    while not check():
      left = deadline - time.monotonic()
      if left <= 0:
        return False
      self._changed.clear()
      try:
        await asyncio.wait_for(self._changed.wait(), left)
      except TimeoutError:
        return check()
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
