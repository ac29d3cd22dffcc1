"""The Faust application: raw topics -> panes (stage 1) -> stream windows (stage 2) -> sinks.

Run with `faust -A bond.agents.app worker -l info`. The agents only move records between
Kafka and the window core, `bond.windowing` (ARCHITECTURE.md).
"""

from pathlib import Path

import faust

from bond.config import get_settings

settings = get_settings()
settings.require_safe_secret()

# Faust keeps a folder per app id: under BOND_HOME, not wherever the worker was started.
FAUST_DIR = Path(settings.bond_home) / "faust"
FAUST_DIR.mkdir(parents=True, exist_ok=True)

app = faust.App(
  settings.bond_app_id,
  broker=f"kafka://{settings.kafka_bootstrap}",
  store="memory://",
  datadir=str(FAUST_DIR / "{conf.name}-data"),
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


# Importing the modules registers their agents, tables, timers and pages on `app`.
from bond.agents import backfill, feeds, panes, ready, sink_tasks, windows  # noqa: E402,F401

main = app.main
