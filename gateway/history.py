"""Reading a stream's past windows from its Kafka topic (history older than the Redis ring).

`bond.stream.<id>` keeps BOND_HISTORY_HOURS of windows (ARCHITECTURE.md "History"). A
reader is one plain consumer (manually assigned, no group) for one socket or one request:
it finds the first offset by time (`offsets_for_times`), then reads pages of at most
`page` records up to the end offset the topic had when the read began, yielding each
window whose seq is in range and greater than the last one yielded. So memory per reader
is one fetch (`FETCH_MAX_BYTES`) plus one page, and a process runs at most
BOND_HISTORY_READERS readers at once (`Slots`).
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bond.gateway.shutdown import bounded
from bond.topics import stream_topic

log = logging.getLogger(__name__)

PAGE = 500
FETCH_MAX_BYTES = 1 << 20
# A record's timestamp is when the worker wrote it, at or after its window's end (seq);
# search a little earlier so a writer's clock behind the window clock loses nothing.
CLOCK_MARGIN_MS = 300_000
RING_GRACE_MS = 1000
STALL_SEC = 15.0  # no record for this long while the end is not reached: Kafka is away
STOP_SEC = 3.0  # a reader's consumer closing


class HistoryBusy(Exception):
  """Every history reader of this process is in use."""


class Slots:
  """At most `n` history readers at once in this process; over that, refuse at once."""

  def __init__(self, n: int) -> None:
    self.n = n
    self.used = 0

  def take(self) -> "Slots":
    """Take a slot (use as `with slots.take():`) or raise HistoryBusy."""
    if self.used >= self.n:
      raise HistoryBusy(f"{self.n} history reads are running (BOND_HISTORY_READERS)")
    self.used += 1
    return self

  def __enter__(self) -> "Slots":
    return self

  def __exit__(self, *exc: object) -> None:
    self.used -= 1


def oldest_ms(history_hours: int, now_ms: int | None = None) -> int:
  """Return the oldest seq history may hold: now - BOND_HISTORY_HOURS."""
  now = int(time.time() * 1000) if now_ms is None else now_ms
  return now - history_hours * 3_600_000


def from_kafka(
  min_seq: int, ring_first: int | None, ring_sec: int, now_ms: int | None = None
) -> bool:
  """Return whether windows from min_seq must be read from Kafka: the ring (which keeps
  BOND_RING_SECONDS, plus RING_GRACE_MS for a `from` parsed a moment ago) does not reach
  back that far, or is empty."""
  if ring_first is None:
    # Empty: a new stream whose first windows are in Kafka but not yet in Redis (the sink
    # writes Redis after Kafka, the fan-out reads Kafka), or a Redis that lost its data.
    return True
  if min_seq >= ring_first:
    return False
  now = int(time.time() * 1000) if now_ms is None else now_ms
  return min_seq < now - ring_sec * 1000 - RING_GRACE_MS


class HistoryReader:
  """One consumer reading one stream topic's past, page by page."""

  def __init__(self, bootstrap: str, stream_id: str, page: int = PAGE) -> None:
    self.stream_id = stream_id
    self.tp = TopicPartition(stream_topic(stream_id).name, 0)
    self.page = page
    self._consumer = AIOKafkaConsumer(
      bootstrap_servers=bootstrap,
      group_id=None,
      enable_auto_commit=False,
      auto_offset_reset="earliest",  # retention removed where we were: go on from the oldest
      max_poll_records=page,
      fetch_max_bytes=FETCH_MAX_BYTES,
      max_partition_fetch_bytes=FETCH_MAX_BYTES,
      fetch_max_wait_ms=50,
    )
    self.records = 0

  async def __aenter__(self) -> "HistoryReader":
    await self._consumer.start()
    return self

  async def __aexit__(self, *exc: object) -> None:
    # Bounded: a socket whose replay is cut (closed, the gateway stopping) must not wait on
    # a consumer stuck in its close.
    await bounded("a history reader", self._consumer.stop, STOP_SEC)

  async def pages(
    self, min_seq: int, max_seq: int | None = None
  ) -> AsyncIterator[list[tuple[int, str]]]:
    """Yield pages of (seq, window JSON) with min_seq <= seq <= max_seq, seq increasing."""
    consumer = self._consumer
    if self.tp.topic not in await consumer.topics():
      return  # offsets_for_times would wait forever on a partition that does not exist
    consumer.assign([self.tp])
    end = (await consumer.end_offsets([self.tp]))[self.tp]
    found = (await consumer.offsets_for_times({self.tp: max(0, min_seq - CLOCK_MARGIN_MS)}))[
      self.tp
    ]
    if found is None or found.offset >= end:
      return
    consumer.seek(self.tp, found.offset)
    last = -1
    stalled_at = time.monotonic()
    while True:
      batch = await consumer.getmany(self.tp, timeout_ms=500, max_records=self.page)
      msgs = batch.get(self.tp, [])
      if not msgs:
        if await consumer.position(self.tp) >= end:
          return
        if time.monotonic() - stalled_at > STALL_SEC:
          raise KafkaError(f"no history record from {self.tp.topic} for {STALL_SEC:.0f}s")
        continue
      stalled_at = time.monotonic()
      rows: list[tuple[int, str]] = []
      done = False
      for msg in msgs:
        if msg.offset >= end:
          done = True
          break
        self.records += 1
        seq, text = _window(msg.value)
        if seq is None or seq < min_seq or seq <= last:
          continue
        if max_seq is not None and seq > max_seq:
          done = True  # windows are written in seq order: nothing further is in range
          break
        rows.append((seq, text))
        last = seq
      if rows:
        yield rows
      if done or msgs[-1].offset + 1 >= end:
        return
      await asyncio.sleep(0)


def _window(value: bytes | None) -> tuple[int | None, str]:
  """Return a record's seq and text, or (None, "") when it is not a window."""
  if value is None:
    return None, ""
  try:
    text = value.decode()
    seq = json.loads(text)["seq"]
  except (UnicodeDecodeError, ValueError, KeyError, TypeError):
    return None, ""
  return (seq, text) if isinstance(seq, int) and not isinstance(seq, bool) else (None, "")
