"""The sink's long-running tasks and timers on the worker (agents/sink.py does the work)."""

import asyncio
import logging
import time

from aiokafka.errors import KafkaError

from bond.agents.app import app
from bond.agents.sink import sink
from bond.agents.state import state

log = logging.getLogger(__name__)


@app.task
async def sink_loop() -> None:
  """Send emitted windows to Kafka forever."""
  await sink.kafka_loop()


@app.task
async def redis_loop() -> None:
  """Write windows to the Redis rings forever."""
  await sink.redis_loop()


PREPARE_PER_TICK = 500


@app.timer(0.25)
async def prepare_topics() -> None:
  """Get new streams' topics ready (created, metadata known) before their first window."""
  todo = [sid for sid in list(state.streams) if sid not in sink._prepared]
  if not todo:
    return
  owned = sink.owned()
  todo = [sid for sid in todo if owned(sid)][:PREPARE_PER_TICK]
  if not todo:
    return
  try:
    await sink.prepare(todo)
  except (KafkaError, OSError, TimeoutError) as err:  # the sink prepares it anyway; next tick
    log.warning("preparing %d stream topics failed: %r", len(todo), err)


METRICS_PHASE_MS = 500  # after each whole second: away from the windows' busiest moment


@app.task
async def metrics_loop() -> None:
  """Publish per-stream metrics once a second, half-way between two window boundaries
  (tens of ms of work at hundreds of streams)."""
  while True:
    now = time.time()
    await asyncio.sleep(1.0 - (now - METRICS_PHASE_MS / 1000) % 1.0)
    try:
      await sink.flush_metrics()
    except Exception:  # a timer would have logged it and kept going: so does this loop
      log.exception("metrics: flush failed")
