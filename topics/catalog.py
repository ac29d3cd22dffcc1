"""Every Kafka topic Bond uses: name, key, value schema, partitions, retention, compaction.

Topic names are spelled here and nowhere else; code imports them from this module.
"""

import os
from dataclasses import dataclass, field, replace

# A prefix for every topic name, so several Bond deployments (or test runs) can share a cluster.
PREFIX = os.environ.get("BOND_TOPIC_PREFIX", "")
PARTITIONS = 4
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TopicSpec:
  """One Kafka topic and the contract of its records."""

  name: str
  key: str
  value: str
  partitions: int = PARTITIONS
  retention_ms: int | None = None
  compacted: bool = False
  extra: dict[str, str] = field(default_factory=dict)

  def configs(self) -> dict[str, str]:
    """Return the topic-level configs to create it with."""
    cfg: dict[str, str] = {}
    if self.compacted:
      cfg["cleanup.policy"] = "compact"
      cfg["min.cleanable.dirty.ratio"] = "0.1"
      cfg["segment.ms"] = str(HOUR_MS)
    if self.retention_ms is not None:
      cfg["retention.ms"] = str(self.retention_ms)
    cfg.update(self.extra)
    return cfg


CONTROL_STREAMS = TopicSpec(
  PREFIX + "bond.control.streams",
  key="stream_id",
  value="StreamRecord {owner, spec, created_at} or tombstone on delete",
  partitions=1,
  compacted=True,
)
RAW_CCXT = TopicSpec(
  PREFIX + "bond.raw.ccxt",
  key="symbol (BTC/USDT)",
  value="RawTick or Heartbeat",
  retention_ms=24 * HOUR_MS,
)
RAW_X = TopicSpec(
  PREFIX + "bond.raw.x", key="symbol (BTC)", value="Tweet or Heartbeat", retention_ms=24 * HOUR_MS
)
RAW_ONCHAIN = TopicSpec(
  PREFIX + "bond.raw.onchain",
  key="chain (sol)",
  value="OnchainEvent or Heartbeat",
  retention_ms=24 * HOUR_MS,
)
RAW_CUSTOM = TopicSpec(
  PREFIX + "bond.raw.custom",
  key="source id",
  value="CustomEvent or Heartbeat",
  retention_ms=24 * HOUR_MS,
)
PANES = TopicSpec(
  PREFIX + "bond.panes",
  key="p<partition> (each record is sent to that partition: the one of its streams)",
  value="PaneRecord v1: a closed or partial pane of one feed, its progress, the streams there",
  retention_ms=6 * HOUR_MS,
)

STREAM_TOPIC_PREFIX = PREFIX + "bond.stream."
# A stream topic's index files (offset and time index), preallocated sparse and read through
# mmap. At Kafka's default 10 MiB, the first index entry of a segment faults in up to the
# disk's read-ahead of zeroed page cache (8 MiB on the test machines): 16 MiB and ~5 ms in a
# request handler per stream topic, and produce requests naming hundreds of them were held
# for seconds. 64 KiB indexes 32 MiB of windows (an entry per 4 KiB) before the segment rolls.
STREAM_INDEX_BYTES = 65_536
# Defaults of BOND_HISTORY_HOURS and BOND_RAW_RETENTION_HOURS; TopicAdmin applies the settings.
STREAM_RETENTION_MS = 24 * HOUR_MS
RAW_RETENTION_MS = 24 * HOUR_MS
RAW_TOPICS = {"ccxt": RAW_CCXT, "twitter": RAW_X, "onchain": RAW_ONCHAIN, "custom": RAW_CUSTOM}
CATALOG: tuple[TopicSpec, ...] = (
  CONTROL_STREAMS,
  RAW_CCXT,
  RAW_X,
  RAW_ONCHAIN,
  RAW_CUSTOM,
  PANES,
)


def catalog(raw_retention_ms: int = RAW_RETENTION_MS) -> tuple[TopicSpec, ...]:
  """Return the catalog with the raw topics kept `raw_retention_ms` (BOND_RAW_RETENTION_HOURS)."""
  raw = {spec.name for spec in RAW_TOPICS.values()}
  return tuple(replace(s, retention_ms=raw_retention_ms) if s.name in raw else s for s in CATALOG)


def stream_topic(stream_id: str, retention_ms: int = STREAM_RETENTION_MS) -> TopicSpec:
  """Return the per-stream output topic of `stream_id`, its windows kept `retention_ms`
  (BOND_HISTORY_HOURS: the history the WebSocket replay and GET .../windows can read)."""
  return TopicSpec(
    STREAM_TOPIC_PREFIX + stream_id,
    key="stream_id",
    value="AggregatedEvent",
    partitions=1,
    retention_ms=retention_ms,
    extra={"segment.index.bytes": str(STREAM_INDEX_BYTES)},
  )
