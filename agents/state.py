"""What every agent of a worker shares: the stream registry and the feed index built from it."""

import asyncio
import logging
from collections import defaultdict

from aiokafka.partitioner import murmur2

from bond.aggregate import Feed, feeds_for
from bond.config import get_settings
from bond.registry import Registry, StreamRecord

log = logging.getLogger(__name__)


class WorkerState:
  """The registry of streams and, for each feed, the streams that need it."""

  def __init__(self) -> None:
    self.settings = get_settings()
    self.registry = Registry(self.settings.kafka_bootstrap)
    self.registry.add_listener(self._on_change)
    self.streams: dict[str, tuple[StreamRecord, list[Feed]]] = {}
    self.by_feed: dict[str, set[str]] = defaultdict(set)
    self.ready = asyncio.Event()
    self._groups: dict[str, dict[int, list[str]]] = {}

  def _on_change(self, stream_id: str, record: StreamRecord | None) -> None:
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
    """Load the registry and follow it."""
    await self.registry.start()
    self.ready.set()

  async def stop(self) -> None:
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

  def all_feeds(self) -> dict[str, Feed]:
    """Return every feed some stream needs, by id."""
    return {f.id: f for _, feeds in self.streams.values() for f in feeds}


def partition_for(key: str, partitions: int) -> int:
  """Return the partition Kafka's default partitioner gives `key` (murmur2, as Java and aiokafka)."""
  return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


state = WorkerState()
