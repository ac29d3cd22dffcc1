"""The feed host: the worker's child process that runs its feeds (ARCHITECTURE.md "Feeds").

Connectors parse every trade, tweet and on-chain event of the feeds a worker owns, however
few streams read them; on the worker's event loop that work delayed every window (about a
quarter of the loop at 500 streams). Here it has a process, and a core, of its own.

`python -m bond.agents.feedhost` reads JSON lines on stdin and writes JSON lines on stdout:

- `{"op": "run", "feeds": [{"feed": [source, exchange, symbol, raw_key], "params": {...}}]}`:
  run exactly these feeds (`FeedRunner.apply`); the latest set wins;
- `{"op": "mute", "id": n}`: nothing publishes from now on, not even a feed still starting,
  until the next `run`; answered `{"op": "muted", "id": n}` once that holds;
- every `STATS_SEC`: `{"op": "stats", "running": [feed ids], "stats": {...}}`.

It dies with the worker: the kernel kills it when its parent goes (PR_SET_PDEATHSIG), and
stdin closing (the worker gone, or stopping) ends it too. A feed published only by a process
the worker can no longer mute would be published twice by its next owner.
"""

import asyncio
import ctypes
import gc
import json
import logging
import os
import signal
import sys
from typing import Any

from bond.agents.feedrunner import FeedParams, FeedRunner
from bond.loopwatch import GC_THRESHOLDS
from bond.windowing import Feed

log = logging.getLogger("bond.feedhost")

STATS_SEC = 0.5
MAX_LINE = 4 * 1024 * 1024  # a command naming every feed of a large deployment
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
  """Have the kernel kill this process when `parent` exits; exit now if it already has."""
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
  except (OSError, AttributeError):  # not Linux: stdin closing still ends it
    log.warning("feed host: cannot ask to die with the worker; relying on stdin")
  if parent and os.getppid() != parent:
    os._exit(0)


def parse_run(msg: dict[str, Any]) -> dict[str, tuple[Feed, FeedParams]]:
  """Return the feeds a `run` command names, by id."""
  out: dict[str, tuple[Feed, FeedParams]] = {}
  for item in msg["feeds"]:
    feed = Feed(*(str(x) for x in item["feed"]))
    out[feed.id] = (feed, FeedParams.from_wire(item["params"]))
  return out


def send(msg: dict[str, Any]) -> None:
  """Write one line to the worker (small lines; the worker reads them as they come)."""
  os.write(sys.stdout.fileno(), json.dumps(msg, separators=(",", ":")).encode() + b"\n")


class Host:
  """Applies the worker's commands to a FeedRunner: the latest feed set, mutes at once."""

  def __init__(self) -> None:
    self.runner = FeedRunner()
    self.wanted: dict[str, tuple[Feed, FeedParams]] = {}
    self.changed = asyncio.Event()
    self.frozen = 0  # how many feeds ran at the last freeze

  def command(self, msg: dict[str, Any]) -> None:
    """Take one command (synchronously: a mute holds before the next line is read)."""
    op = msg.get("op")
    if op == "run":
      self.wanted = parse_run(msg)
      self.changed.set()
    elif op == "mute":
      self.runner.mute()
      send({"op": "muted", "id": msg.get("id")})
    else:
      log.warning("feed host: unknown command %r", op)

  async def apply_loop(self) -> None:
    """Bring the running feeds to the latest set, again whenever it changes."""
    while True:
      await self.changed.wait()
      self.changed.clear()
      await self.runner.apply(dict(self.wanted))
      if len(self.runner.running) > self.frozen:
        # A connector's markets and clients live as long as it does: out of every later
        # collection (a full one walked them all, holding the feeds for tens of ms).
        self.frozen = len(self.runner.running)
        gc.collect()
        gc.freeze()

  async def stats_loop(self) -> None:
    while True:
      send({"op": "stats", "running": sorted(self.runner.running), "stats": self.runner.stats})
      await asyncio.sleep(STATS_SEC)


async def main(parent: int) -> None:
  die_with_parent(parent)
  gc.set_threshold(*GC_THRESHOLDS)
  loop = asyncio.get_running_loop()
  reader = asyncio.StreamReader(limit=MAX_LINE)
  await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
  host = Host()
  tasks = [asyncio.create_task(host.apply_loop()), asyncio.create_task(host.stats_loop())]
  for task in tasks:
    task.add_done_callback(_exit_when_done)
  while True:
    line = await reader.readline()
    if not line:  # the worker closed our stdin or is gone: nothing may publish any more
      host.runner.mute()
      os._exit(0)
    try:
      host.command(json.loads(line))
    except (ValueError, KeyError, TypeError) as err:
      log.error("feed host: bad command %r: %s", line[:200], err)


def _exit_when_done(task: asyncio.Task[None]) -> None:
  """A loop of the host ended (they never do): exit at once, so the worker starts a new one."""
  if not task.cancelled():
    log.error("feed host: %s ended: %r", task.get_coro(), task.exception())
  os._exit(1)


if __name__ == "__main__":
  # Started by the worker: `--parent <its pid>`. Feed starts and stops are logged, as there.
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s feedhost %(levelname)s %(name)s: %(message)s")  # fmt: skip
  logging.getLogger("aiokafka").setLevel(logging.WARNING)
  parent = int(sys.argv[sys.argv.index("--parent") + 1]) if "--parent" in sys.argv else 0
  asyncio.run(main(parent))
