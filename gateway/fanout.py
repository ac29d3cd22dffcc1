"""One Kafka consumer per gateway process, feeding every socket of every stream.

The consumer assigns itself `bond.stream.<id>` (one partition) while anyone listens to the
stream and leaves it a little after the last listener goes. Each record is decoded once
and its text frame handed to every sink of the stream; sinks queue it without awaiting,
so one slow socket never holds up the others. A sink may also write the frame to its
socket on the spot (it says so), and the fan-out reports those writes once per record.

The poll loop never holds a lock across `getmany`: dispatching a batch is synchronous, so
a sink added between two awaits sees every later record whole, and a listener of a stream
already read is added at once. Only assignment changes are serialized.
"""

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bond.topics import stream_topic
from bond.topics.admin import TopicAdmin

log = logging.getLogger(__name__)

RETRY_SEC = 1.0
# Kafka answers a connection's requests in order: a fetch that may wait this long on an idle
# topic holds up the metadata and offset requests of a stream's first listener behind it.
FETCH_MAX_WAIT_MS = 30


class Sink(Protocol):
  """Something that takes a stream's frames without awaiting (a socket's send queue)."""

  def deliver(self, seq: int, frame: str) -> bool:
    """Take one event (its seq and its JSON text); True when it was written to the socket now."""


@dataclass
class _Stream:
  sid: str
  tp: TopicPartition
  next_offset: int
  sinks: set[Sink] = field(default_factory=set)
  linger: asyncio.TimerHandle | None = None


class Fanout:
  """Reads every listened-to stream topic with one consumer and hands each frame to its sinks."""

  def __init__(
    self,
    bootstrap: str,
    *,
    poll_timeout_ms: int = 100,
    linger_sec: float = 2.0,
    max_records: int = 1000,
    on_sent: Callable[[str, int], None] | None = None,
  ) -> None:
    self._bootstrap = bootstrap
    self._poll_timeout_ms = poll_timeout_ms
    self._linger_sec = linger_sec
    self._max_records = max_records
    self._on_sent = on_sent
    self._consumer: AIOKafkaConsumer | None = None
    self._task: asyncio.Task[None] | None = None
    self._streams: dict[str, _Stream] = {}
    self._by_tp: dict[TopicPartition, _Stream] = {}
    # Serializes assignment changes that await (a new stream's end offset); the partition
    # being added meanwhile stays in every assignment made by the synchronous changes.
    self._assign_lock = asyncio.Lock()
    self._joining: TopicPartition | None = None
    self._assigned = asyncio.Event()
    self.records = 0
    self.deliveries = 0
    self.consumers_started = 0

  async def start(self) -> None:
    """Connect the consumer and start the poll loop."""
    if self._consumer is not None:
      return
    consumer = AIOKafkaConsumer(
      bootstrap_servers=self._bootstrap,
      group_id=None,
      enable_auto_commit=False,
      auto_offset_reset="latest",
      max_poll_records=self._max_records,
      fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
    self._consumer = consumer
    self.consumers_started += 1
    self._task = asyncio.create_task(self._run(), name="fanout-poll")

  async def stop(self) -> None:
    """Stop polling and close the consumer; safe to call twice."""
    task, self._task = self._task, None
    if task is not None:
      task.cancel()
      await asyncio.gather(task, return_exceptions=True)
    for entry in self._streams.values():
      if entry.linger is not None:
        entry.linger.cancel()
    self._streams.clear()
    self._by_tp.clear()
    consumer, self._consumer = self._consumer, None
    if consumer is not None:
      await consumer.stop()

  async def __aenter__(self) -> "Fanout":
    await self.start()
    return self

  async def __aexit__(self, *exc: object) -> None:
    await self.stop()

  async def subscribe(self, stream_id: str, sink: Sink) -> None:
    """Add a sink; return once every record produced from now on will reach it."""
    entry = self._streams.get(stream_id)
    if entry is None:
      async with self._assign_lock:
        entry = self._streams.get(stream_id)
        if entry is None:
          entry = await self._assign(stream_id)
    # The stream is being read: records are dispatched synchronously between awaits, so
    # the sink gets every record after the one being dispatched now, without waiting.
    if entry.linger is not None:
      entry.linger.cancel()
      entry.linger = None
    entry.sinks.add(sink)

  def unsubscribe(self, stream_id: str, sink: Sink) -> None:
    """Remove a sink; the topic is left after a short linger when no sink remains."""
    entry = self._streams.get(stream_id)
    if entry is None or sink not in entry.sinks:
      return
    entry.sinks.discard(sink)
    if not entry.sinks and entry.linger is None:
      loop = asyncio.get_running_loop()
      entry.linger = loop.call_later(self._linger_sec, self._schedule_leave, stream_id)

  def forget(self, stream_id: str) -> None:
    """Leave a stream's topic at once: the stream was deleted and its topic is going away."""
    entry = self._streams.pop(stream_id, None)
    if entry is None or self._consumer is None:
      return
    self._by_tp.pop(entry.tp, None)
    if entry.linger is not None:
      entry.linger.cancel()
    # Without waiting for the poll in flight: a consumer still fetching a deleted topic
    # asks for its metadata, and a broker that auto-creates topics would bring it back.
    # Records that poll returns for the other streams may come again after the seek
    # below; the dispatch skips offsets already handed out, so none goes out twice.
    self._reassign()
    log.info("fanout: left %s (stream deleted)", entry.tp.topic)

  def stats(self) -> dict[str, int]:
    """Return counters: consumers, assigned topics, sinks, records read and frames handed out."""
    return {
      "consumers": 1 if self._consumer is not None else 0,
      "consumers_started": self.consumers_started,
      "topics": len(self._streams),
      "sinks": sum(len(e.sinks) for e in self._streams.values()),
      "records": self.records,
      "deliveries": self.deliveries,
    }

  def listening(self, stream_id: str) -> int:
    """Return how many sinks listen to a stream."""
    entry = self._streams.get(stream_id)
    return 0 if entry is None else len(entry.sinks)

  # ------------------------------------------------------------------ assignment

  async def _assign(self, stream_id: str) -> _Stream:
    consumer = self._require()
    topic = stream_topic(stream_id).name
    tp = TopicPartition(topic, 0)
    await self._ensure_topic(stream_id, topic)
    self._joining = tp
    try:
      self._reassign()
      # Start at the end: the past comes from the Redis ring, and anything produced after
      # this position is known reaches the new sink.
      await consumer.seek_to_end(tp)
      offset = await consumer.position(tp)
    except BaseException:
      self._joining = None
      self._reassign()
      raise
    self._joining = None
    entry = _Stream(sid=stream_id, tp=tp, next_offset=offset)
    self._streams[stream_id] = entry
    self._by_tp[tp] = entry
    # A poll that ran during the awaits above may have read records of this partition and
    # dropped them (no entry yet): read again from the offset the sinks start at.
    consumer.seek(tp, offset)
    self._assigned.set()
    log.info("fanout: listening to %s from offset %d", topic, offset)
    return entry

  async def _ensure_topic(self, stream_id: str, topic: str) -> None:
    consumer = self._require()
    # Known partitions in the cached metadata spare a metadata request for every topic.
    if consumer.partitions_for_topic(topic) or topic in await consumer.topics():
      return
    # A stream registered a moment ago may not have its topic yet; create it as the
    # catalog says rather than let auto-creation pick other settings.
    async with TopicAdmin(self._bootstrap) as admin:
      await admin.create_stream_topic(stream_id)
    for _ in range(50):
      if topic in await consumer.topics():
        return
      await asyncio.sleep(0.1)
    raise KafkaError(f"topic {topic} did not appear after creation")

  def _reassign(self) -> None:
    """Assign every listened-to partition (and the one joining) and keep their positions."""
    consumer = self._require()
    tps = [e.tp for e in self._streams.values()]
    if self._joining is not None:
      tps.append(self._joining)
    consumer.assign(tps)
    # assign() replaces the whole assignment and forgets positions: put back the offset
    # after the last record dispatched for every partition we keep.
    for entry in self._streams.values():
      consumer.seek(entry.tp, entry.next_offset)
    if tps:
      self._assigned.set()
    else:
      self._assigned.clear()

  def _schedule_leave(self, stream_id: str) -> None:
    entry = self._streams.get(stream_id)
    if entry is None or entry.sinks:
      return
    if entry.linger is not None:
      entry.linger.cancel()
      entry.linger = None
    self._leave(stream_id)

  def _leave(self, stream_id: str) -> None:
    entry = self._streams.get(stream_id)
    if entry is None or entry.sinks or self._consumer is None:
      return
    del self._streams[stream_id]
    self._by_tp.pop(entry.tp, None)
    self._reassign()
    log.info("fanout: left %s", entry.tp.topic)

  # ------------------------------------------------------------------ polling

  def _require(self) -> AIOKafkaConsumer:
    if self._consumer is None:
      raise RuntimeError("Fanout is not started")
    return self._consumer

  async def _run(self) -> None:
    while True:
      await self._assigned.wait()
      try:
        await self._poll_once()
      except KafkaError as err:
        log.warning("fanout: %s; retrying in %.1fs", err, RETRY_SEC)
        await asyncio.sleep(RETRY_SEC)
      # getmany returns buffered records without suspending: let the sockets' I/O and
      # tasks run between two batches.
      await asyncio.sleep(0)

  async def _poll_once(self) -> None:
    consumer = self._require()
    batches = await consumer.getmany(timeout_ms=self._poll_timeout_ms)
    # From here to the end, no await: the batch is dispatched as one step of the loop.
    on_sent = self._on_sent
    for tp, msgs in batches.items():
      entry = self._by_tp.get(tp)
      if entry is None:
        continue
      for msg in msgs:
        if msg.offset < entry.next_offset:
          continue  # read again after a reassignment: already handed out
        entry.next_offset = msg.offset + 1
        self.records += 1
        frame, seq = _decode(msg.value)
        if frame is None:
          log.warning("fanout: skipping unreadable record at %s@%d", tp.topic, msg.offset)
          continue
        sinks = tuple(entry.sinks)
        sent = 0
        for sink in sinks:
          if sink.deliver(seq, frame):
            sent += 1
        self.deliveries += len(sinks)
        if sent and on_sent is not None:
          on_sent(entry.sid, sent)


def _decode(value: bytes | None) -> tuple[str | None, int]:
  """Return the record's text and its seq, or (None, 0) when it is not an event."""
  if value is None:
    return None, 0
  try:
    text = value.decode()
    seq = json.loads(text)["seq"]
  except (UnicodeDecodeError, ValueError, KeyError, TypeError):
    return None, 0
  if not isinstance(seq, int):
    return None, 0
  return text, seq
