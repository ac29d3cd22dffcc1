"""The Faust application: raw topics -> panes (stage 1) -> stream windows (stage 2) -> sinks.

Run with `faust -A bond.agents.app worker -l info`. The agents only move records between
Kafka and the window core, `bond.windowing` (ARCHITECTURE.md).
"""

from typing import Any

import faust

from bond.config import get_settings

settings = get_settings()
settings.require_safe_secret()

app = faust.App(
  settings.bond_app_id,
  broker=f"kafka://{settings.kafka_bootstrap}",
  store="memory://",
  key_serializer="raw",
  value_serializer="raw",
  topic_partitions=4,
  topic_replication_factor=1,
  topic_allow_declare=True,
  consumer_auto_offset_reset="earliest",
  broker_commit_interval=1.0,
  # A crashed worker leaves the group after this long, so its partitions move quickly.
  broker_session_timeout=6.0,
  broker_heartbeat_interval=2.0,
  stream_buffer_maxsize=65536,
  producer_linger_ms=2,
  producer_acks=-1,
  table_cleanup_interval=60.0,
  web_bind="127.0.0.1",
  web_enabled=True,
  autodiscover=False,
  topic_disable_leader=True,
)


async def changelogs_known(*tables: Any) -> None:
  """Wait until the worker's producer knows the partitions of these tables' changelogs.

  Setting a table key sends a changelog record through aiokafka's partitioner, which fails
  with a TypeError (and crashes the worker) while the producer has no metadata for that
  topic: seen right after a (re)start, when stage 2 restores state as soon as it settles.
  """
  # Faust exposes no public wait for metadata; its aiokafka driver holds the real producer.
  producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
  for table in tables:
    await producer.partitions_for(table.changelog_topic.get_topic_name())


# Importing the modules registers their agents, tables, timers and pages on `app`.
from bond.agents import backfill, feeds, panes, ready, windows  # noqa: E402,F401

main = app.main
