"""Stage 2: compose each stream's windows from its feeds' panes and send them out on time.

State lives per `bond.panes` partition, in a key-value store (the Faust changelog table):

- a `FeedTrack` per (partition, feed): the offset of the last pane record applied, the feed's
  progress (end of its last closed pane), when its last closed pane arrived, its partial
  panes; shared by every stream of that partition using the feed;
- each closed pane once per (partition, feed), kept until every stream using the feed has
  sent the windows holding it;
- a `StreamState` per stream: the end of its next window and what partial panes its sent
  windows took.

So the work per pane is done once per feed and partition, not once per stream; only window
composition and output grow with streams. A window goes out when every feed has passed its
end, or when the `WatermarkPolicy` says it must; a deadline heap holds each stream's next
wake-up, so a timer tick touches only the streams that are due.
"""

import heapq
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from bond.windowing.aggregators import REGISTRY, Registry
from bond.windowing.clock import Clock, stream_first_end
from bond.windowing.compose import compose_window
from bond.windowing.feeds import Feed
from bond.windowing.pane import Pane, PaneRecord, WireError
from bond.windowing.policy import WatermarkPolicy
from bond.windowing.stage2_keys import StoreKeys
from bond.windowing.stage2_out import StateOut
from bond.windowing.stage2_state import (  # noqa: F401 - re-exported
  STATE_VERSION,
  FeedTrack,
  StateStore,
  StreamDef,
  StreamState,
  TrackId,
  WindowOut,
)

log = logging.getLogger(__name__)


class Stage2(StateOut):
  """Per-stream windows from per-feed panes, for the partitions this worker owns."""

  def __init__(
    self,
    *,
    pane_ms: int,
    policy: WatermarkPolicy,
    out: WindowOut,
    store: StateStore,
    clock: Clock,
    partition_of: Callable[[bytes], int],
    registry: Registry = REGISTRY,
    max_catch_up: int = 720,
    used_keep_ms: int = 600_000,
    flush_every_ms: int = 0,
    last_writes: Callable[[], Iterable[tuple[bytes, Any]]] | None = None,
    auto_flush: bool = True,
  ) -> None:
    self.pane_ms = pane_ms
    self.policy = policy
    self.out = out
    self.store = store
    self.clock = clock
    self.registry = registry
    self.max_catch_up = max_catch_up  # windows sent per stream per pass when catching up
    self.used_keep_ms = used_keep_ms  # how long a stream remembers the partials it sent
    # State goes to the store at most this often (0: after every batch and tick): each write
    # is a changelog record, and a feed track changes with every pane. A crash loses at most
    # this much state; what it covered is read again and composed again (ARCHITECTURE.md).
    self.flush_every_ms = flush_every_ms
    # Writes that go last in each flush, after the state they account for (the adapter's
    # bond.panes read positions, taken when the flush is).
    self.last_writes = last_writes
    # Whether `on_records` and `tick` flush when it is time; if not, the caller does, between
    # two emission rounds, and writes a flush out in slices (`write`): hundreds of store
    # writes at once would hold the windows' output.
    self.auto_flush = auto_flush
    self._flushed_ms = 0
    self._writes: deque[tuple[bytes, Any]] = deque()  # a flush not yet written, in order
    # Merged closed panes by (partition, feed, window start, end), within one emission round.
    self._merged: dict[tuple[int, str, int, int], Pane] = {}
    self.owned: frozenset[int] = frozenset()
    self.defs: dict[str, StreamDef] = {}  # the streams of the owned partitions
    self._all_defs: Mapping[str, StreamDef] = {}
    self._defs_known = False
    self._users: dict[TrackId, list[str]] = {}  # streams using each feed, per partition
    self._tracks: dict[TrackId, FeedTrack] = {}
    self._streams: dict[str, StreamState] = {}
    self._heap: list[tuple[int, str]] = []
    self._wake: dict[str, int] = {}
    self.keys = StoreKeys(partition_of)
    self._put_panes: list[tuple[TrackId, int, Pane]] = []
    self._dirty_tracks: set[TrackId] = set()
    self._dirty_streams: set[str] = set()
    self._evict: set[TrackId] = set()
    self._deleted: list[bytes] = []
    # Streams whose windows wait for their backfill to go out first (ARCHITECTURE.md "Backfill").
    self.held: set[str] = set()
    self.stats: dict[str, int] = {"panes_in": 0, "replayed": 0, "windows": 0, "incomplete": 0,
                                  "late": 0, "backfill_ignored": 0, "not_owned": 0, "resent": 0}  # fmt: skip

  # ------------------------------------------------------------------ ownership and streams

  def assign(self, partitions: Iterable[int], items: Iterable[tuple[bytes, Any]]) -> None:
    """Own these partitions from now: load their state from the store's (key, value) items."""
    self.owned = frozenset(partitions)
    self._writes.clear()  # a flush not all written is dropped, as a crash would (see `flush`)
    self._tracks.clear()
    self._streams.clear()
    self.keys.clear()
    self._put_panes.clear()
    self._dirty_tracks.clear()
    self._dirty_streams.clear()
    self._evict.clear()
    panes: list[tuple[TrackId, int, Pane]] = []
    for key, value in items:
      try:
        kind, part, ident = self.keys.parse(key)
      except (ValueError, UnicodeDecodeError):
        continue
      if part not in self.owned:
        continue
      try:
        if kind == "s":
          self._streams[ident] = StreamState.from_wire(value)
        elif kind == "f":
          self._tracks[(part, ident)] = FeedTrack.from_wire(value)
        elif kind == "q":
          start, feed_id = ident.split(":", 1)
          panes.append(((part, feed_id), int(start), Pane.from_wire(value)))
        else:
          continue
      except (WireError, ValueError) as err:
        log.warning("stage 2: dropping unreadable state %r: %s", key, err)
        self._deleted.append(key)
        continue
      self.keys.remember(kind, part, ident, key)
    for tid, pane_start, pane in panes:
      self._track(tid).panes[pane_start] = pane
    log.info("stage 2 owns partitions %s: %d streams, %d feed tracks, %d panes restored",
             sorted(self.owned), len(self._streams), len(self._tracks), len(panes))  # fmt: skip
    if self._defs_known:
      self.set_streams(self._all_defs, restored=True)

  def set_streams(self, defs: Mapping[str, StreamDef], restored: bool = False) -> None:
    """Follow the stream registry: every stream that exists, by id.

    State of streams not in `defs` is deleted, so call it only once the registry is loaded.
    """
    self._all_defs = defs
    self._defs_known = True
    old = self.defs
    self.defs = {sid: d for sid, d in defs.items() if d.partition in self.owned}
    gone = [sid for sid in (old.keys() | self._streams.keys()) if sid not in defs]
    for sid in gone:
      st = self._streams.pop(sid, None)
      if st is not None:
        self._deleted.append(self.keys.key("s", self._partition(sid, old), sid))
      self._wake.pop(sid, None)
      self._dirty_streams.discard(sid)
      self.out.forget(sid)
    self._users = {}
    for sid, d in self.defs.items():
      for feed in d.feeds:
        self._users.setdefault((d.partition, feed.id), []).append(sid)
    for tid in [t for t in self._tracks if t not in self._users]:
      self._drop_track(tid)
    self.held &= self.defs.keys()
    for sid, d in self.defs.items():
      first_end = stream_first_end(d.created_ms, d.size_ms, self.pane_ms)
      if sid not in self._streams:
        self._streams[sid] = StreamState(first_end)
        self._dirty_streams.add(sid)
      if d.backfill_sec > 0 and self._streams[sid].next_end_ms == first_end and sid not in old:
        self.held.add(sid)  # no live window out yet: its backfill (if not done) goes first
      if restored or sid not in old:
        self._schedule(sid, self._streams[sid].next_end_ms + self.policy.lateness_ms, force=True)
    self.flush()

  def release(self, sid: str) -> None:
    """Let a held stream's windows go out (its backfill is done, failed or not needed)."""
    if sid in self.held:
      self.held.discard(sid)
      if sid in self.defs:
        self._schedule(sid, self.clock(), force=True)

  def next_end_of(self, sid: str) -> int | None:
    """Return the end of the stream's next window, if this worker holds its state."""
    st = self._streams.get(sid)
    return None if st is None else st.next_end_ms

  def _partition(self, sid: str, old: Mapping[str, StreamDef]) -> int:
    d = old.get(sid) or self._all_defs.get(sid)
    if d is not None:
      return d.partition
    part = self.keys.stream_partition(sid)
    return part if part is not None else next(iter(self.owned), 0)

  def _drop_track(self, tid: TrackId) -> None:
    track = self._tracks.pop(tid)
    part, feed_id = tid
    for start in track.panes:
      self._deleted.append(self.keys.key("q", part, f"{start}:{feed_id}"))
    self._deleted.append(self.keys.key("f", part, feed_id))
    self._dirty_tracks.discard(tid)

  def _track(self, tid: TrackId, first_ms: int = -1) -> FeedTrack:
    """Return the feed's track here, made on its first pane (`first_ms`: where its data begins)."""
    track = self._tracks.get(tid)
    if track is None:
      track = self._tracks[tid] = FeedTrack(first_ms=first_ms)
    return track

  # ------------------------------------------------------------------ panes in

  def on_records(self, records: Iterable[tuple[int, int, PaneRecord]]) -> None:
    """Apply (partition, offset, record) pane records, then send what is complete."""
    progressed: set[TrackId] = set()
    now_ms = self.clock()
    for partition, offset, rec in records:
      if partition not in self.owned:
        self.stats["not_owned"] += 1
        continue
      if rec.progress_ms is not None:
        self.policy.input_seen(now_ms)  # any closed pane: this worker's input flows
      tid = (partition, rec.feed_id)
      if tid not in self._users:
        continue  # no stream of this partition uses the feed (any more)
      track = self._track(tid, first_ms=rec.start_ms + (self.pane_ms if rec.opened else 0))
      if offset <= track.offset:
        self.stats["replayed"] += 1
        continue
      track.offset = offset
      self._dirty_tracks.add(tid)
      if rec.progress_ms is None:
        self._apply_partial(track, rec)
      else:
        self._apply_closed(tid, track, rec, now_ms)
        progressed.add(tid)
    # Only streams whose next window this progress may complete: for the others nothing
    # changed but a later idleness time, and their scheduled wake asks the policy again.
    touched: set[str] = set()
    streams = self._streams
    for tid in progressed:
      reached = self._tracks[tid].progress_ms
      touched.update(s for s in self._users.get(tid, ()) if streams[s].next_end_ms <= reached)
    self._merged.clear()
    for sid in touched:
      self._try_emit(sid, now_ms)
    self._merged.clear()
    if self.auto_flush:
      self.maybe_flush(now_ms)

  def _apply_partial(self, track: FeedTrack, rec: PaneRecord) -> None:
    # What an open pane of a quiet feed holds so far: kept aside, replaced by each newer
    # partial and by the closed pane; used only if a window must go out before that.
    if rec.pane and rec.start_ms >= track.progress_ms and rec.start_ms not in track.panes:
      track.partials[rec.start_ms] = rec.pane

  def _apply_closed(self, tid: TrackId, track: FeedTrack, rec: PaneRecord, now_ms: int) -> None:
    assert rec.progress_ms is not None
    if rec.start_ms + self.pane_ms <= track.progress_ms:
      # Stage 1 closes a feed's panes once each, in order, and a partition keeps that order:
      # a pane ending at or before the feed's watermark is one re-sent after a stage-1 restart.
      self.stats["resent"] += 1
      return
    self.stats["panes_in"] += 1
    if rec.opened:
      # Nothing is known of this pane's time (a silence of the feed): its data begins again
      # after it, and a window holding it lacks the feed.
      track.first_ms = max(track.first_ms, rec.start_ms + self.pane_ms)
    track.progress_ms = max(track.progress_ms, rec.progress_ms)
    track.seen_ms = now_ms
    track.partials.pop(rec.start_ms, None)
    pane, start = rec.pane, rec.start_ms
    if pane.latency_ms:
      self.out.latency(tid, [float(x) for x in pane.latency_ms])
      pane.latency_ms = []
    needed = False
    for sid in self._users[tid]:
      d, st = self.defs[sid], self._streams[sid]
      if not pane:
        continue
      used = st.used.pop(f"{rec.feed_id}|{start}", None)
      if used is not None:
        self._dirty_streams.add(sid)
      if start >= st.next_end_ms - d.size_ms:
        needed = True
      elif start >= stream_first_end(d.created_ms, d.size_ms, self.pane_ms) - d.size_ms:
        # Its window is out: what it did not hold (as a partial) is late.
        late = pane.events - (used or 0)
        if late > 0:
          self.stats["late"] += late
          self.out.count(sid, "late", late)
      else:
        self.stats["backfill_ignored"] += pane.events  # from before the stream existed
    if needed:
      track.panes[start] = pane
      self._put_panes.append((tid, start, pane))

  # ------------------------------------------------------------------ windows out

  def tick(self) -> int:
    """Send the windows whose time has come (by the policy); return how many streams woke."""
    if not self.policy.is_settled:
      return 0
    now_ms = self.clock()
    woke = 0
    heap = self._heap
    self._merged.clear()
    while heap and heap[0][0] <= now_ms:
      at, sid = heapq.heappop(heap)
      if self._wake.get(sid) != at:
        continue  # superseded by a later schedule
      del self._wake[sid]
      if sid in self.defs:
        woke += 1
        self._try_emit(sid, now_ms)
    self._merged.clear()
    if self.auto_flush:
      self.maybe_flush(now_ms)
    return woke

  def _schedule(self, sid: str, at_ms: int, force: bool = False) -> None:
    current = self._wake.get(sid)
    if current is not None and (current == at_ms or (current < at_ms and not force)):
      return
    self._wake[sid] = at_ms
    heapq.heappush(self._heap, (at_ms, sid))

  def next_wake_ms(self) -> int | None:
    """Return when the next stream is due (for tests and the timer's sleep)."""
    while self._heap and self._wake.get(self._heap[0][1]) != self._heap[0][0]:
      heapq.heappop(self._heap)
    return self._heap[0][0] if self._heap else None

  def _try_emit(self, sid: str, now_ms: int) -> int:
    d = self.defs.get(sid)
    st = self._streams.get(sid)
    if d is None or st is None or sid in self.held:
      return 0  # a held stream is woken by `release`
    emitted = 0
    tracks = [(f, self._tracks.get((d.partition, f.id))) for f in d.feeds]
    while emitted < self.max_catch_up:
      end = st.next_end_ms
      behind = [(f, t) for f, t in tracks if t is None or t.progress_ms < end]
      if behind:
        history = any(t is not None and t.seen_ms for _f, t in tracks)
        seen = [0 if t is None else t.seen_ms for _f, t in behind]
        decision = self.policy.decide(end, seen, history, now_ms)
        if not decision.emit:
          self._schedule(sid, decision.recheck_ms, force=True)
          break
      # A feed whose first pane here starts after the window's start lacks the time before:
      # waiting cannot fill it (a backfill reaching back before the feed existed).
      missing = [
        f.id for f, t in tracks if t is None or t.progress_ms < end or t.first_ms > end - d.size_ms
      ]
      self._emit(d, st, end, tracks, missing, now_ms)
      emitted += 1
    else:
      self._schedule(sid, now_ms, force=True)  # more to catch up: next tick
    if emitted:
      self._dirty_streams.add(sid)
      for f in d.feeds:
        self._evict.add((d.partition, f.id))
    if sid not in self._wake:
      self._schedule(sid, st.next_end_ms + self.policy.lateness_ms)
    return emitted

  def _emit(
    self,
    d: StreamDef,
    st: StreamState,
    end: int,
    tracks: Sequence[tuple[Feed, FeedTrack | None]],
    missing: list[str],
    now_ms: int,
  ) -> None:
    start = end - d.size_ms
    window: dict[str, Pane] = {}
    msgs_in = 0
    for feed, track in tracks:
      if track is None:
        continue
      # Streams of one feed and size share the merge of its closed panes over the window
      # (they are final within one call: panes arrive before, evictions after, emission).
      key = (d.partition, feed.id, start, end)
      merged = self._merged.get(key)
      if merged is None:
        merged = self._merged[key] = Pane()
        for _start, pane in self._panes_in(track.panes, start, end):
          merged.merge(pane, self.registry)
      if feed.id in missing:
        # A quiet feed's open panes (partials) go in; the closed pane, if it comes, adds only
        # what they lacked (counted late). Added to a copy: the shared merge stays closed panes.
        merged = Pane().merge(merged, self.registry)
        for pane_start, pane in self._panes_in(track.partials, start, end):
          merged.merge(pane, self.registry)
          st.used[f"{feed.id}|{pane_start}"] = pane.events
      if merged:
        window[feed.id] = merged
        msgs_in += merged.events
    event = compose_window(d.stream_id, d.spec, d.feeds, end, window, missing, self.registry)
    self.out.emit(d.stream_id, event, msgs_in=msgs_in, lag_ms=now_ms - end)
    self.stats["windows"] += 1
    if missing:
      self.stats["incomplete"] += 1
    st.next_end_ms = end + d.size_ms
    if st.used:
      horizon = end - self.used_keep_ms
      for used in [k for k in st.used if int(k.rsplit("|", 1)[1]) < horizon]:
        del st.used[used]

  def _panes_in(self, panes: dict[int, Pane], start: int, end: int) -> list[tuple[int, Pane]]:
    if not panes:
      return []
    if (end - start) % self.pane_ms == 0 and start % self.pane_ms == 0:
      found = []
      for s in range(start, end, self.pane_ms):
        pane = panes.get(s)
        if pane is not None:
          found.append((s, pane))
      return found
    return sorted((s, p) for s, p in panes.items() if start <= s < end)
