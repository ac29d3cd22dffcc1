"""Shutdown steps that cannot hold a process's exit.

`asyncio.wait_for` cancels a step that runs over its time, then waits for the cancellation
to finish: a client library stuck in its own close (an aiokafka consumer mid-request) held
a gateway's shutdown past 30 s that way. A step here is given its time and then left behind,
cancelled but not awaited.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def bounded(what: str, step: Callable[[], Awaitable[object]], seconds: float) -> bool:
  """Run `step()` for at most `seconds`; return whether it finished (its error is logged)."""
  task = asyncio.ensure_future(step())
  done, _ = await asyncio.wait({task}, timeout=max(0.0, seconds))
  if not done:
    task.cancel()  # not awaited: its own cleanup may be what is stuck
    log.warning("stopping %s took over %.1fs; left behind", what, seconds)
    return False
  if not task.cancelled() and task.exception() is not None:
    log.warning("stopping %s failed: %r", what, task.exception())
  return True
