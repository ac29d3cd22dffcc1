"""Bond's Kafka topics: the catalog and the helpers that create and delete them."""

from bond.topics.catalog import (
  CATALOG,
  CONTROL_FEEDS,
  CONTROL_STREAMS,
  PANES,
  RAW_CCXT,
  RAW_CUSTOM,
  RAW_ONCHAIN,
  RAW_TOPICS,
  RAW_X,
  TopicSpec,
  stream_topic,
)

__all__ = [
  "CATALOG",
  "CONTROL_FEEDS",
  "CONTROL_STREAMS",
  "PANES",
  "RAW_CCXT",
  "RAW_CUSTOM",
  "RAW_ONCHAIN",
  "RAW_TOPICS",
  "RAW_X",
  "TopicSpec",
  "stream_topic",
]
