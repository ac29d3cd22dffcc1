"""Stage 2's state going out to its store: what changed, serialised at a flush, written in
order, all at once or in slices (`Stage2` inherits it; ARCHITECTURE.md "Stage 2")."""

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from bond.windowing.clock import Clock
from bond.windowing.pane import Pane
from bond.windowing.stage2_keys import StoreKeys
from bond.windowing.stage2_state import FeedTrack, StateStore, StreamDef, StreamState, TrackId

_DELETE = object()  # a store write that deletes its key


class StateOut:
  """Flushes and writes the changed state of `Stage2` (whose attributes these are)."""

  store: StateStore
  clock: Clock
  keys: StoreKeys
  defs: dict[str, StreamDef]
  flush_every_ms: int
  auto_flush: bool
  last_writes: Callable[[], Iterable[tuple[bytes, Any]]] | None
  _flushed_ms: int
  _writes: deque[tuple[bytes, Any]]
  _users: dict[TrackId, list[str]]
  _tracks: dict[TrackId, FeedTrack]
  _streams: dict[str, StreamState]
  _put_panes: list[tuple[TrackId, int, Pane]]
  _dirty_tracks: set[TrackId]
  _dirty_streams: set[str]
  _evict: set[TrackId]
  _deleted: list[bytes]

  def maybe_flush(self, now_ms: int) -> bool:
    """Flush if `flush_every_ms` has passed since the last flush and it is all written;
    return whether it did."""
    if self._writes or now_ms - self._flushed_ms < self.flush_every_ms:
      return False
    self.flush(write=self.auto_flush)
    return True

  def flush(self, write: bool = True) -> None:
    """Take the changed state as store writes: new panes, tracks, streams, deletions, then
    `last_writes`; write them all now, or leave them to `write` (in slices) if not `write`.

    All keys of a partition share its changelog partition, so a crash loses only a suffix
    of this order: a stream never survives the panes its sent windows were made of. The
    values are serialised here, so a flush written in slices is the state of one moment.
    """
    self.write()  # the rest of an earlier flush goes first
    for tid in self._evict:
      self._evict_old(tid)
    self._evict.clear()
    writes = self._writes
    for (part, feed_id), start, pane in self._put_panes:
      if start in self._tracks.get((part, feed_id), FeedTrack()).panes:
        writes.append((self.keys.key("q", part, f"{start}:{feed_id}"), pane.to_wire()))
    self._put_panes.clear()
    for tid in self._dirty_tracks:
      track = self._tracks.get(tid)
      if track is not None:
        writes.append((self.keys.key("f", tid[0], tid[1]), track.to_wire()))
    self._dirty_tracks.clear()
    for sid in self._dirty_streams:
      st = self._streams.get(sid)
      d = self.defs.get(sid)
      if st is not None and d is not None:
        writes.append((self.keys.key("s", d.partition, sid), st.to_wire()))
    self._dirty_streams.clear()
    for key in self._deleted:
      writes.append((key, _DELETE))
      self.keys.forget(key)
    self._deleted.clear()
    if self.last_writes is not None:
      writes.extend(self.last_writes())
    self._flushed_ms = self.clock()
    if write:
      self.write()

  def write(self, limit: int | None = None) -> int:
    """Write up to `limit` (None: all) of the flushed state to the store, in order; return
    how many writes are left."""
    writes, store = self._writes, self.store
    n = len(writes) if limit is None else min(limit, len(writes))
    for _ in range(n):
      key, value = writes.popleft()
      if value is _DELETE:
        try:
          del store[key]
        except KeyError:
          pass
      else:
        store[key] = value
    return len(writes)

  def _evict_old(self, tid: TrackId) -> None:
    """Drop panes every stream using the feed has sent the windows of."""
    track = self._tracks.get(tid)
    users = self._users.get(tid)
    if track is None or not users:
      return
    horizon = min(self._streams[s].next_end_ms - self.defs[s].size_ms for s in users)
    for start in [s for s in track.panes if s < horizon]:
      del track.panes[start]
      self._deleted.append(self.keys.key("q", tid[0], f"{start}:{tid[1]}"))
    for start in [s for s in track.partials if s < horizon]:
      del track.partials[start]
      self._dirty_tracks.add(tid)
