"""What every agent of a worker shares: the stream registry and the indexes built from it."""

import asyncio
import logging
from collections import defaultdict

from aiokafka.partitioner import murmur2

from bond.config import Settings, get_settings
from bond.registry import Registry, StreamRecord
from bond.topics import PANES
from bond.topics.admin import ensure_catalog
from bond.windowing import Feed, StreamDef, feeds_for

log = logging.getLogger(__name__)


def partition_for(key: str | bytes, partitions: int) -> int:
  """Return the partition Kafka's default partitioner gives `key` (murmur2, as Java and aiokafka)."""
  raw = key.encode() if isinstance(key, str) else key
  return (murmur2(raw) & 0x7FFFFFFF) % partitions


class WorkerState:
  """The registry of streams and, for each feed, the streams that need it.

  `start` creates the catalog's topics if needed and loads the registry; `stop` closes it.
  `version` changes with every registry change, so readers rebuild their indexes only then.
  """

  def __init__(self, settings: Settings) -> None:
    self.settings = settings
    self.registry = Registry(settings.kafka_bootstrap)
    self.registry.add_listener(self._on_change)
    self.streams: dict[str, tuple[StreamRecord, list[Feed]]] = {}
    self.by_feed: dict[str, set[str]] = defaultdict(set)
    self.version = 0
    self._groups: dict[str, dict[int, list[str]]] = {}
    self._defs: tuple[int, dict[str, StreamDef]] = (-1, {})
    self._started = False
    self.ready = asyncio.Event()

  def _on_change(self, stream_id: str, record: StreamRecord | None) -> None:
    self.version += 1
    self._groups.clear()
    old = self.streams.pop(stream_id, None)
    if old is not None:
      for feed in old[1]:
        self.by_feed[feed.id].discard(stream_id)
        if not self.by_feed[feed.id]:
          del self.by_feed[feed.id]
    if record is not None:
      feeds = feeds_for(record.spec, self.settings.exchanges)
      self.streams[stream_id] = (record, feeds)
      for feed in feeds:
        self.by_feed[feed.id].add(stream_id)
      log.info("stream %s: %d feeds", stream_id, len(feeds))
    else:
      log.info("stream %s deleted", stream_id)

  async def start(self) -> None:
    """Create the catalog's topics if needed, then load the registry and follow it."""
    await ensure_catalog(self.settings.kafka_bootstrap)
    await self.registry.start()
    self._started = True
    self.ready.set()

  async def stop(self) -> None:
    """Stop following the registry (idempotent)."""
    if self._started:
      self._started = False
      await self.registry.stop()

  def feed_partitions(self, feed_id: str, partitions: int) -> dict[int, list[str]]:
    """Return the streams using a feed, grouped by their partition of bond.panes."""
    cached = self._groups.get(feed_id)
    if cached is None:
      cached = {}
      for sid in sorted(self.by_feed.get(feed_id, ())):
        cached.setdefault(partition_for(sid, partitions), []).append(sid)
      self._groups[feed_id] = cached
    return cached

  def stream_defs(self) -> dict[str, StreamDef]:
    """Return what stage 2 needs of every stream, by id (rebuilt only after a change)."""
    version, defs = self._defs
    if version != self.version:
      defs = {
        sid: StreamDef(
          sid,
          record.spec,
          tuple(feeds),
          record.created_at_ms,
          partition_for(sid, PANES.partitions),
          record.backfill_sec,
        )
        for sid, (record, feeds) in self.streams.items()
      }
      self._defs = (self.version, defs)
    return defs

  def all_feeds(self) -> dict[str, Feed]:
    """Return every feed some stream needs, by id."""
    return {f.id: f for _, feeds in self.streams.values() for f in feeds}


# The worker's one registry view, shared by its agents (started and stopped in ready.py).
state = WorkerState(get_settings())
