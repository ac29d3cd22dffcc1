"""The sink's and the feeds' publishing bookkeeping: bounds, order, drops, no head-of-line."""

import random

from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

from bond.agents.outbox import FeedQueue, Outbox, Recent, Window, is_poison
from bond.connectors.backoff import Backoff


class Clock:
  def __init__(self) -> None:
    self.now = 1000.0

  def __call__(self) -> float:
    return self.now


def make_outbox(**kw):
  drops: list[tuple[str, int, str]] = []
  clock = Clock()
  box = Outbox(lambda sid, n, why: drops.append((sid, n, why)), backoff=Backoff(base_sec=0.5, max_sec=4, jitter=0),
               clock=clock, **{"max_window_bytes": 100, **kw})  # fmt: skip
  return box, drops, clock


def w(seq: int, size: int = 10) -> Window:
  return Window(seq, b"x" * size)


def test_recent_quantiles_are_nearest_rank_over_the_last_samples():
  rng = random.Random(7)
  recent = Recent(50)
  values = [rng.uniform(0, 500) for _ in range(400)]
  for i, v in enumerate(values):
    recent.add(v)
    window = sorted(values[max(0, i - 49) : i + 1])
    for q in (0.5, 0.95, 0.99):
      rank = min(len(window) - 1, max(0, -(-q * len(window) // 1) - 1))
      assert recent.quantile(q) == window[int(rank)]
  assert len(recent) == 50
  assert Recent(3).quantile(0.5) is None


def test_a_window_over_the_byte_cap_is_dropped_and_named():
  box, drops, _ = make_outbox()
  assert not box.put("big", w(1000, 101))
  assert box.put("big", w(2000, 100))
  assert drops == [("big", 1, drops[0][2])] and "BOND_MAX_WINDOW_BYTES" in drops[0][2]
  assert [x.seq for x in box.pending["big"]] == [2000]


def test_a_stream_in_flight_or_backing_off_does_not_hold_up_the_others():
  box, _, clock = make_outbox()
  for seq in (1, 2, 3):
    box.put("stuck", w(seq))
  box.put("fine", w(1))
  taken = dict(box.take_ready(lambda sid: True, limit=10))
  assert [x.seq for x in taken["stuck"]] == [1, 2, 3] and [x.seq for x in taken["fine"]] == [1]
  # While "stuck" is in flight, "fine" keeps going.
  assert box.settle("fine", []) is None
  box.put("stuck", w(4))
  box.put("fine", w(2))
  again = dict(box.take_ready(lambda sid: True, limit=10))
  assert list(again) == ["fine"]
  assert box.settle("fine", []) is None
  # "stuck" failed for now: everything goes back in front, in order, after the backoff.
  assert box.settle("stuck", taken["stuck"]) == 0.5
  assert [x.seq for x in box.pending["stuck"]] == [1, 2, 3, 4]
  box.put("fine", w(3))
  assert list(dict(box.take_ready(lambda sid: True, limit=10))) == ["fine"]
  assert box.next_retry_in() == 0.5
  clock.now += 0.5
  retried = dict(box.take_ready(lambda sid: True, limit=2))
  assert [x.seq for x in retried["stuck"]] == [1, 2]
  assert box.settle("stuck", retried["stuck"]) == 1.0  # the next attempt waits longer
  clock.now += 1.0
  box.settle("stuck", dict(box.take_ready(lambda sid: True, limit=10))["stuck"][:0])
  assert box.attempts.get("stuck") is None  # a success resets the policy


def test_streams_not_ready_to_send_wait_and_the_rest_go():
  box, _, _ = make_outbox()
  box.put("new", w(1))
  box.put("old", w(1))
  assert [sid for sid, _ in box.take_ready(lambda sid: sid == "old", limit=10)] == ["old"]
  assert list(box.pending) == ["new"]


def test_buffers_are_bounded_per_stream_and_in_bytes_oldest_first():
  box, drops, _ = make_outbox(max_pending_per_stream=3, max_pending_bytes=1000)
  for seq in range(5):
    box.put("a", w(seq))
  assert [x.seq for x in box.pending["a"]] == [2, 3, 4]
  assert sum(n for _, n, _ in drops) == 2
  box2, drops2, _ = make_outbox(max_pending_bytes=50)
  for seq in range(8):
    box2.put("b", w(seq))
  assert box2.bytes <= 50 and [x.seq for x in box2.pending["b"]] == [3, 4, 5, 6, 7]
  assert sum(n for _, n, _ in drops2) == 3
  box2.forget("b")
  assert box2.bytes == 0 and box2.waiting() == 0


def test_poison_is_told_from_transient_errors():
  assert is_poison(MessageSizeTooLargeError())
  assert not is_poison(KafkaTimeoutError())
  assert not is_poison(KafkaConnectionError())


def test_feed_queue_coalesces_heartbeats_and_drops_them_first():
  q = FeedQueue(max_records=4, max_bytes=10_000)
  q.put(b"t1", False)
  q.put(b"h1", True)
  q.put(b"h2", True)  # replaces h1: progress only
  assert [b for b, _ in q.records] == [b"t1", b"h2"]
  q.put(b"t2", False)
  q.put(b"h3", True)
  assert q.put(b"t3", False) == 1  # full: the oldest heartbeat goes, not a trade
  assert [b for b, _ in q.records] == [b"t1", b"t2", b"h3", b"t3"]
  assert q.put(b"t4", False) == 1
  assert [b for b, _ in q.records] == [b"t1", b"t2", b"t3", b"t4"]
  assert q.put(b"t5", False) == 1  # no heartbeat left: the oldest trade goes
  assert [b for b, _ in q.records] == [b"t2", b"t3", b"t4", b"t5"] and q.dropped == 3


def test_feed_queue_is_bounded_in_bytes_and_keeps_order_on_give_back():
  q = FeedQueue(max_records=1000, max_bytes=100)
  for i in range(20):
    q.put(b"%09d" % i, False)
  assert q.bytes == 99 and len(q) == 11 and q.dropped == 9
  batch = q.take(4)
  assert [int(b) for b, _ in batch] == [9, 10, 11, 12]
  q.give_back(batch[2:])
  assert [int(b) for b, _ in q.records][:3] == [11, 12, 13] and q.bytes == 9 * 9


def test_windows_the_topic_already_holds_are_not_sent_again():
  box, drops, _clock = make_outbox()
  box.delivered("s", 3000)  # the stream's topic ends with window 3000 (read from its tail)
  for seq in (2000, 3000, 4000, 5000):
    box.put("s", w(seq))
  [(sid, batch)] = box.take_ready(lambda _sid: True, 10)
  assert sid == "s" and [x.seq for x in batch] == [4000, 5000]
  assert box.skipped == 2 and not drops
  box.settle("s", [])
  box.delivered("s", 5000)
  box.put("s", w(5000))  # composed again after a crash: nothing to send
  assert box.take_ready(lambda _sid: True, 10) == [] and box.skipped == 3
  assert "s" not in box.inflight and box.waiting() == 0
  box.forget("s")  # a deleted stream starts afresh when re-created
  box.put("s", w(1000))
  assert [x.seq for x in box.take_ready(lambda _sid: True, 10)[0][1]] == [1000]
