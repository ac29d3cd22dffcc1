"""Worker start-up and shutdown (registry first, then stage 1) and the pages `bond up`, tests
and benches poll."""

import asyncio
import gc
import logging
import threading
from collections.abc import Iterable
from typing import Any

from aiohttp.web import Response

from bond.agents.app import app, settings
from bond.agents.panes import TABLES, reader, settled
from bond.agents.state import state
from bond.agents.windows import driver
from bond.agents.windows import reader as pane_reader
from bond.agents.windows import table as windows_table
from bond.loopwatch import GC_THRESHOLDS, LoopWatch
from bond.topics import TopicSpec
from bond.topics.admin import TopicAdmin

log = logging.getLogger(__name__)

CHANGELOGS_WAIT_SEC = 30.0
loopwatch = LoopWatch(stall_ms=settings.bond_stall_ms)


def root_logger_at_handler_level() -> None:
  """Undo Faust's root logger at DEBUG: at `-l warn` and above its worker sets it so that its
  terminal spinner turns on every record, and then every library's debug call (aiokafka
  makes several per request) builds a record nobody prints: a tenth of an idle worker's CPU.
  """
  root = logging.getLogger()
  levels = [h.level for h in root.handlers if type(h).__name__ != "SpinnerHandler"]
  if levels and root.level < min(levels):
    root.setLevel(min(levels))


def changelog_specs(tables: Iterable[Any], default_partitions: int) -> list[TopicSpec]:
  """Return the changelog topics of Faust tables, as Faust itself would declare them."""
  return [
    TopicSpec(
      t.changelog_topic.get_topic_name(),
      "table key",
      "table state (changelog)",
      partitions=t.partitions or default_partitions,
      compacted=True,
    )
    for t in tables
  ]


async def ensure_changelogs(bootstrap: str, specs: list[TopicSpec]) -> list[str]:
  """Create the changelog topics that do not exist yet; return those created."""
  async with TopicAdmin(bootstrap) as admin:
    return await admin.ensure(specs)


@app.on_worker_init.connect  # type: ignore[arg-type]  # mode types receivers narrowly
def changelogs_before_joining(sender: Any, **kwargs: Any) -> None:
  """Create the tables' changelog topics before the worker joins its group.

  Faust creates them itself at start, moments before joining; on a fresh broker a topic
  created that late can be missing from the group leader's metadata, and the leader then
  leaves it out of the assignment for good ("Ignoring missing topic"): stage 2 owned no
  partition and no window ever went out (seen in a CI chaos run). Runs before the worker's
  event loop, in a thread of its own, bounded; on failure Faust creates them as before.
  """
  specs = changelog_specs(app.tables.values(), app.conf.topic_partitions)

  def run() -> None:
    try:
      ensure = ensure_changelogs(settings.kafka_bootstrap, specs)
      created = asyncio.run(asyncio.wait_for(ensure, CHANGELOGS_WAIT_SEC))
      if created:
        log.info("created changelog topics %s", created)
    except Exception as err:  # Faust declares them at start anyway
      log.warning("could not create the changelog topics before starting: %r", err)

  thread = threading.Thread(target=run, name="changelogs", daemon=True)
  thread.start()
  thread.join(CHANGELOGS_WAIT_SEC + 5)


@app.task
async def start_worker() -> None:
  """Create the catalog's topics if needed, load the stream registry, start both stages' readers."""
  root_logger_at_handler_level()
  loopwatch.start()
  await state.start()
  # A table write picks its changelog partition from the producer's metadata, which holds
  # only topics it was asked about: fetch it for every changelog before the first write.
  producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
  for table in (*TABLES.values(), windows_table):
    await producer.partitions_for(table.changelog_topic.get_topic_name())
  driver.writable.set()
  # What start-up made lives as long as the worker: out of every collection from now on, and
  # young collections less often (each walked tens of thousands of live objects).
  gc.collect()
  gc.freeze()
  gc.set_threshold(*GC_THRESHOLDS)
  reader.start()
  pane_reader.start()


@app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types receivers narrowly
async def stop_worker(sender: Any, **kwargs: Any) -> None:
  """Stop both stages' readers and the registry when the worker shuts down."""
  await pane_reader.stop()
  await reader.stop()
  await state.stop()
  await loopwatch.stop()


@app.page("/bond/ready")  # type: ignore[arg-type]
async def ready_page(web, request) -> Response:  # type: ignore[no-untyped-def]
  """Answer 200 once the registry is loaded and partitions are assigned."""
  assigned = bool(app.consumer.assignment()) if app.consumer else False
  ok = settled() and assigned
  body = {
    "ready": ok,
    "streams": len(state.streams),
    "assigned": assigned,
    "rebalancing": app.rebalancing,
  }
  return web.json(body, status=200 if ok else 503)


@app.page("/bond/stats")  # type: ignore[arg-type]
async def stats_page(web, request) -> Response:  # type: ignore[no-untyped-def]
  """Answer the worker's counters: stage 1, stage 2, sink, feeds."""
  from bond.agents.feeds import host
  from bond.agents.sink import sink

  body = {
    "stage1": reader.counters(),
    "stage2": {**driver.core.stats, **driver.read_delay_ms.summary("read_delay")},
    "stage2_partitions": sorted(driver.owned or ()),
    "stage2_streams": len(driver.core.defs),
    "stage2_panes_lag": pane_reader.lag(),
    "raw_partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in reader.assigned),
    "sink": {**sink.stats, **sink.kafka_ack_ms.summary("kafka_ack")},
    "feeds": {"running": sorted(host.running), **host.stats, "host_restarts": host.restarts},
    "loop": loopwatch.summary(),
  }
  return web.json(body)


@app.page("/metrics")  # type: ignore[arg-type]
async def metrics_page(web, request) -> Response:  # type: ignore[no-untyped-def]
  """Answer the worker's Prometheus metrics."""
  from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

  return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])
