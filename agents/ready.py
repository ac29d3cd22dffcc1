"""Worker start-up (registry first) and the readiness page `bond up` and tests poll."""

from aiohttp.web import Response

from bond.agents.app import app, settings
from bond.agents.panes import settled
from bond.agents.state import state
from bond.topics.admin import ensure_catalog


@app.task
async def start_registry() -> None:
  """Create the catalog's topics if needed, then load the stream registry."""
  await ensure_catalog(settings.kafka_bootstrap)
  await state.start()


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
  """Answer the worker's counters: stage 1, sink, feeds."""
  from bond.agents.feeds import runner
  from bond.agents.panes import reader, stats
  from bond.agents.sink import sink

  body = {
    "stage1": stats,
    "raw_partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in reader.assigned),
    "sink": sink.stats,
    "feeds": {"running": sorted(runner.running), **runner.stats},
  }
  return web.json(body)


@app.page("/metrics")  # type: ignore[arg-type]
async def metrics_page(web, request) -> Response:  # type: ignore[no-untyped-def]
  """Answer the worker's Prometheus metrics."""
  from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

  return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])
