"""Bond's Kafka topics: the catalog and the helpers that create and delete them."""

from bond.topics.catalog import (
  CATALOG,
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

if __name__ != "bond.topics":
  # topics/ ships as bond.topics (package-dir); a second copy would be a second catalog.
  raise ImportError(f"import bond.topics, not {__name__} (topics/ is the bond.topics package)")
