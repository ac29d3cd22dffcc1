"""What waits to be published, without I/O: the sink's windows per stream and a feed's events.

The sink (agents/sink.py) sends each stream's windows in order, one batch per stream in
flight at a time, so a stream whose batch is stuck or retrying never holds up another
stream's windows. What can never be sent (over `BOND_MAX_WINDOW_BYTES`, refused by Kafka
as too large or invalid) is dropped and reported through `on_drop`, never retried.
"""

import math
import time
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiokafka.errors import (
  CorruptRecordException,
  InvalidTopicError,
  MessageSizeTooLargeError,
  RecordListTooLargeError,
  RecordTooLargeError,
  UnsupportedForMessageFormatError,
)

from bond.connectors.backoff import Backoff

# Kafka refuses these records whatever we do: retrying would stall the stream forever.
POISON: tuple[type[BaseException], ...] = (
  MessageSizeTooLargeError,
  RecordListTooLargeError,
  RecordTooLargeError,
  InvalidTopicError,
  CorruptRecordException,
  UnsupportedForMessageFormatError,
)


def is_poison(err: BaseException) -> bool:
  """Return whether a send failed for good (the record can never be sent)."""
  return isinstance(err, POISON)


@dataclass(slots=True)
class Window:
  """One serialised window of a stream, ready for Kafka and Redis."""

  seq: int
  body: bytes


class Recent:
  """The last `size` samples, kept both in arrival order and sorted.

  Percentiles are then read without sorting: with a thousand streams, sorting each
  stream's reservoir every second cost more CPU than all the windows' output.
  """

  __slots__ = ("order", "ranked", "size")

  def __init__(self, size: int) -> None:
    self.size = size
    self.order: deque[float] = deque()
    self.ranked: list[float] = []

  def __len__(self) -> int:
    return len(self.order)

  def add(self, value: float) -> None:
    """Add a sample, forgetting the oldest when full."""
    if len(self.order) >= self.size:
      old = self.order.popleft()
      del self.ranked[bisect_left(self.ranked, old)]
    self.order.append(value)
    insort(self.ranked, value)

  def extend(self, values: Iterable[float]) -> None:
    for value in values:
      self.add(value)

  @classmethod
  def union(cls, parts: list["Recent"]) -> "Recent":
    """Return one reservoir holding the samples of all `parts` (to read percentiles from)."""
    out = cls(sum(len(p) for p in parts))
    out.ranked = sorted(x for p in parts for x in p.ranked)
    out.order.extend(out.ranked)
    return out

  def summary(self, name: str) -> dict[str, float | None]:
    """Return `{name}_p50_ms`, `_p99_ms` and `_max_ms` of the samples (None when empty)."""
    return {
      f"{name}_p50_ms": self.quantile(0.5),
      f"{name}_p99_ms": self.quantile(0.99),
      f"{name}_max_ms": self.ranked[-1] if self.ranked else None,
    }

  def quantile(self, q: float) -> float | None:
    """Return the q-quantile (0..1) by nearest rank, or None when empty."""
    n = len(self.ranked)
    if not n:
      return None
    return self.ranked[min(n - 1, max(0, math.ceil(q * n) - 1))]


DropHandler = Callable[[str, int, str], None]


class Outbox:
  """Windows waiting for Kafka, per stream and in order; bounded per stream and in bytes."""

  def __init__(
    self,
    on_drop: DropHandler,
    max_window_bytes: int,
    max_pending_per_stream: int = 3600,
    max_pending_bytes: int = 256 * 1024 * 1024,
    backoff: Backoff | None = None,
    clock: Callable[[], float] = time.monotonic,
  ) -> None:
    self.on_drop = on_drop
    self.max_window_bytes = max_window_bytes
    self.max_pending_per_stream = max_pending_per_stream
    self.max_pending_bytes = max_pending_bytes
    self.backoff = backoff or Backoff(base_sec=0.1, max_sec=2.0)
    self.clock = clock
    self.pending: dict[str, deque[Window]] = {}
    self.inflight: set[str] = set()
    self.retry_at: dict[str, float] = {}
    self.attempts: dict[str, int] = {}
    self.bytes = 0
    # The highest seq each stream's topic is known to hold (read from its tail when the
    # stream's topic was prepared, then moved by every delivery): a window at or below it is
    # one this worker, or the stream's owner before it, already sent.
    self.sent_seq: dict[str, int] = {}
    self.skipped = 0  # windows not sent again for that reason

  def put(self, sid: str, window: Window) -> bool:
    """Queue a window; return False when it was dropped (too large to ever be sent)."""
    if len(window.body) > self.max_window_bytes:
      self.on_drop(
        sid,
        1,
        f"window {window.seq} is {len(window.body)} bytes, over BOND_MAX_WINDOW_BYTES "
        f"({self.max_window_bytes})",
      )
      return False
    queue = self.pending.setdefault(sid, deque())
    queue.append(window)
    self.bytes += len(window.body)
    # Kafka away for long: the oldest windows of this stream go first (counted), not memory.
    evicted = 0
    while queue and (
      len(queue) > self.max_pending_per_stream or self.bytes > self.max_pending_bytes
    ):
      self.bytes -= len(queue.popleft().body)
      evicted += 1
    if evicted:
      self.on_drop(sid, evicted, "the sink's buffer for windows not yet in Kafka is full")
    return True

  def waiting(self) -> int:
    """Return how many windows are queued (in flight not included)."""
    return sum(len(q) for q in self.pending.values())

  def take_ready(
    self, can_send: Callable[[str], bool], limit: int
  ) -> list[tuple[str, list[Window]]]:
    """Take up to `limit` windows of every stream free to send (none in flight, not backing off)."""
    now = self.clock()
    out: list[tuple[str, list[Window]]] = []
    for sid, queue in list(self.pending.items()):
      if sid in self.inflight or self.retry_at.get(sid, 0.0) > now or not can_send(sid):
        continue
      batch = [queue.popleft() for _ in range(min(limit, len(queue)))]
      if not queue:
        del self.pending[sid]
      self.bytes -= sum(len(w.body) for w in batch)
      sent = self.sent_seq.get(sid)
      if sent is not None and batch[0].seq <= sent:
        fresh = [w for w in batch if w.seq > sent]
        self.skipped += len(batch) - len(fresh)
        batch = fresh
        if not batch:
          continue
      self.inflight.add(sid)
      out.append((sid, batch))
    return out

  def delivered(self, sid: str, seq: int) -> None:
    """Record that the stream's topic holds windows up to `seq`."""
    if seq > self.sent_seq.get(sid, -1):
      self.sent_seq[sid] = seq

  def settle(self, sid: str, retry: list[Window]) -> float | None:
    """End a stream's batch; `retry` goes back in front. Return the retry delay, if any."""
    self.inflight.discard(sid)
    if not retry:
      self.attempts.pop(sid, None)
      self.retry_at.pop(sid, None)
      return None
    queue = self.pending.setdefault(sid, deque())
    queue.extendleft(reversed(retry))
    self.bytes += sum(len(w.body) for w in retry)
    attempt = self.attempts[sid] = self.attempts.get(sid, 0) + 1
    delay = self.backoff.delay(attempt)
    self.retry_at[sid] = self.clock() + delay
    return delay

  def next_retry_in(self) -> float | None:
    """Return seconds until the earliest stream backing off may send again, if any waits."""
    waits = [at for sid, at in self.retry_at.items() if sid in self.pending]
    return max(0.0, min(waits) - self.clock()) if waits else None

  def forget(self, sid: str) -> None:
    """Drop a deleted stream's queued windows and retry state."""
    queue = self.pending.pop(sid, None)
    if queue:
      self.bytes -= sum(len(w.body) for w in queue)
    self.retry_at.pop(sid, None)
    self.attempts.pop(sid, None)
    self.sent_seq.pop(sid, None)


Record = tuple[bytes, bool]  # (raw record, is a heartbeat)


class FeedQueue:
  """One feed's raw records waiting for Kafka, bounded in count and bytes.

  Beyond the bounds the oldest record goes, a heartbeat first (a later one says the same
  thing), and is counted in `dropped`; a newer heartbeat replaces one queued right before it.
  """

  def __init__(self, max_records: int, max_bytes: int) -> None:
    self.max_records = max_records
    self.max_bytes = max_bytes
    self.records: deque[Record] = deque()
    self.bytes = 0
    self.heartbeats = 0
    self.dropped = 0

  def __len__(self) -> int:
    return len(self.records)

  def put(self, body: bytes, heartbeat: bool) -> int:
    """Queue a record; return how many older ones were dropped to make room."""
    if heartbeat and self.records and self.records[-1][1]:
      self._remove(len(self.records) - 1)
    self.records.append((body, heartbeat))
    self.bytes += len(body)
    self.heartbeats += heartbeat
    dropped = 0
    while len(self.records) > 1 and (
      len(self.records) > self.max_records or self.bytes > self.max_bytes
    ):
      oldest = 0
      if self.heartbeats:
        oldest = next(i for i, (_body, hb) in enumerate(self.records) if hb)
      self._remove(oldest)
      dropped += 1
    self.dropped += dropped
    return dropped

  def _remove(self, index: int) -> None:
    body, heartbeat = self.records[index]
    del self.records[index]
    self.bytes -= len(body)
    self.heartbeats -= heartbeat

  def take(self, n: int) -> list[Record]:
    """Take up to n records from the front."""
    out = [self.records.popleft() for _ in range(min(n, len(self.records)))]
    self.bytes -= sum(len(body) for body, _ in out)
    self.heartbeats -= sum(hb for _, hb in out)
    return out

  def give_back(self, records: list[Record]) -> None:
    """Put records that were not sent back in front, in order."""
    self.records.extendleft(reversed(records))
    self.bytes += sum(len(body) for body, _ in records)
    self.heartbeats += sum(hb for _, hb in records)
