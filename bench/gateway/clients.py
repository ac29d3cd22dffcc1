"""The client side: subprocesses holding many sockets (`--role client`) and their driver.

Each client process answers one JSON command per stdin line (connect, collect, reset,
close) with one JSON line on stdout; `Clients` spreads sockets over the processes."""

import asyncio
import dataclasses
import json
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, cast

from bench.gateway.common import log_file, produced_at, raise_fd_limit
from bench.gateway.plan import CLIENT_MAX_QUEUE, CONNECT_CONCURRENCY, LOGS, REPLY_TIMEOUT_SEC, ROOT


@dataclasses.dataclass
class Group:
  """A worker's sockets to one server, and what they received since the last reset."""

  mode: str
  sockets: list[Any] = dataclasses.field(default_factory=list)
  tasks: list["asyncio.Task[None]"] = dataclasses.field(default_factory=list)
  counts: list[int] = dataclasses.field(default_factory=list)
  received: int = 0
  first: float | None = None
  last: float | None = None
  delays: list[float] = dataclasses.field(default_factory=list)
  closes: Counter[str] = dataclasses.field(default_factory=Counter)
  open: int = 0
  events: dict[float, list[float]] = dataclasses.field(default_factory=dict)
  cpu_mark: float = dataclasses.field(default_factory=lambda: _cpu_self())

  def reset(self) -> None:
    """Forget what was received so far (and start counting CPU from now)."""
    self.counts = [0] * len(self.counts)
    self.received, self.first, self.last = 0, None, None
    self.delays, self.events = [], {}
    self.cpu_mark = _cpu_self()


def _cpu_self() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


class ClientWorker:
  """Holds groups of websockets clients and answers JSON-line commands."""

  def __init__(self) -> None:
    self.groups: dict[str, Group] = {}

  async def connect(
    self, group: str, url: str, n: int, mode: str, within_sec: float
  ) -> dict[str, Any]:
    """Open n sockets to url (bounded concurrency); return how many opened and how long it took."""
    from websockets.asyncio.client import connect

    g = self.groups.setdefault(group, Group(mode=mode))
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    errors: Counter[str] = Counter()
    started = time.monotonic()
    deadline = started + within_sec

    async def one() -> None:
      async with sem:
        left = deadline - time.monotonic()
        if left <= 0:
          errors["timeout"] += 1
          return
        try:
          ws = await asyncio.wait_for(
            connect(
              url,
              compression=None,
              ping_interval=None,
              max_queue=CLIENT_MAX_QUEUE,
              open_timeout=left,
              close_timeout=2,
            ),
            left,
          )
        except Exception as err:  # any failure to open counts, by kind
          errors[type(err).__name__] += 1
          return
      index = len(g.sockets)
      g.sockets.append(ws)
      g.counts.append(0)
      g.open += 1
      g.tasks.append(asyncio.create_task(self._read(g, ws, index)))

    await asyncio.gather(*(one() for _ in range(n)))
    return {
      "opened": n - sum(errors.values()),
      "errors": dict(errors),
      "secs": time.monotonic() - started,
    }

  async def _read(self, g: Group, ws: Any, index: int) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
      while True:
        frame = await ws.recv(decode=False)
        now = time.time()
        g.counts[index] += 1
        g.received += 1
        if g.first is None:
          g.first = now
        g.last = now
        if g.mode == "delay":
          t = produced_at(frame)
          if t is not None:
            g.delays.append(round((now - t) * 1000, 3))
            seen = g.events.get(t)
            if seen is None:
              g.events[t] = [now, now]
            else:
              seen[1] = now
    except ConnectionClosed as closed:
      code = closed.rcvd.code if closed.rcvd is not None else "none"
      g.closes[str(code)] += 1
    finally:
      g.open -= 1

  async def collect(
    self, group: str, expect: int, within_sec: float, idle_sec: float
  ) -> dict[str, Any]:
    """Wait until every socket got `expect` frames (or time/idleness ends it); return stats."""
    g = self.groups[group]
    started = time.monotonic()
    last_count, last_change = -1, started
    for _ in range(int(within_sec / 0.01) + 1):
      now = time.monotonic()
      if g.received != last_count:
        last_count, last_change = g.received, now
      if now - started >= within_sec or min(g.counts, default=expect) >= expect:
        break
      if now - last_change >= idle_sec:
        break
      await asyncio.sleep(0.01)
    cpu = _cpu_self() - g.cpu_mark
    return {
      "sockets": len(g.sockets),
      "open": g.open,
      "received": g.received,
      "complete": sum(1 for c in g.counts if c >= expect),
      "first": g.first,
      "last": g.last,
      "delays": g.delays if g.mode == "delay" else [],
      "events": [[t, lo, hi] for t, (lo, hi) in g.events.items()],
      "closes": dict(g.closes),
      "cpu_sec": round(cpu, 3),
    }

  async def reset(self, group: str) -> dict[str, Any]:
    """Forget what a group received."""
    self.groups[group].reset()
    return {"ok": True}

  async def close(self, group: str) -> dict[str, Any]:
    """Close a group's sockets."""
    g = self.groups.pop(group, None)
    if g is None:
      return {"closed": 0}
    await asyncio.gather(
      *(asyncio.wait_for(ws.close(), 5) for ws in g.sockets), return_exceptions=True
    )
    for task in g.tasks:
      task.cancel()
    await asyncio.gather(*g.tasks, return_exceptions=True)
    return {"closed": len(g.sockets)}


async def client_worker() -> None:
  """Answer one JSON command per stdin line with one JSON line on stdout, until EOF."""
  raise_fd_limit()
  worker = ClientWorker()
  loop = asyncio.get_running_loop()
  reader = asyncio.StreamReader(limit=1 << 20)
  await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
  ops: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "connect": worker.connect,
    "collect": worker.collect,
    "reset": worker.reset,
    "close": worker.close,
  }
  while True:
    line = await reader.readline()
    if not line:
      break
    command = json.loads(line)
    op = command.pop("op")
    try:
      reply = await ops[op](**command)
    except Exception as err:
      reply = {"error": f"{type(err).__name__}: {err}"}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
  for name in list(worker.groups):
    await worker.close(name)


class Clients:
  """The client subprocesses, driven with JSON-line commands."""

  def __init__(self, count: int) -> None:
    self.count = count
    self.procs: list[asyncio.subprocess.Process] = []

  async def start(self) -> None:
    """Start the client processes."""
    for i in range(self.count):
      log = log_file(f"client{i}")
      proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.gateway", "--role", "client",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
        limit=1 << 26,
      )  # fmt: skip
      log.close()
      self.procs.append(proc)

  async def _call(
    self, proc: asyncio.subprocess.Process, command: dict[str, Any]
  ) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((json.dumps(command) + "\n").encode())
    await proc.stdin.drain()
    line = await asyncio.wait_for(proc.stdout.readline(), REPLY_TIMEOUT_SEC)
    if not line:
      raise RuntimeError(f"client process exited; see {LOGS}")
    reply = json.loads(line)
    if "error" in reply:
      raise RuntimeError(f"client process failed {command['op']}: {reply['error']}")
    return cast(dict[str, Any], reply)

  async def all(self, op: str, **args: Any) -> list[dict[str, Any]]:
    """Send one command to every client process; return their replies."""
    return await asyncio.gather(*(self._call(p, {"op": op, **args}) for p in self.procs))

  async def connect(
    self, group: str, url: str, total: int, mode: str, within_sec: float
  ) -> dict[str, Any]:
    """Spread `total` sockets over the processes; return opened count, errors and seconds."""
    shares = [total // self.count + (1 if i < total % self.count else 0) for i in range(self.count)]
    started = time.monotonic()
    replies = await asyncio.gather(
      *(
        self._call(
          p,
          {
            "op": "connect",
            "group": group,
            "url": url,
            "n": n,
            "mode": mode,
            "within_sec": within_sec,
          },
        )
        for p, n in zip(self.procs, shares, strict=True)
      )
    )
    errors: Counter[str] = Counter()
    for r in replies:
      errors.update(r["errors"])
    return {
      "opened": sum(r["opened"] for r in replies),
      "errors": dict(errors),
      "secs": round(time.monotonic() - started, 2),
    }

  async def stop(self) -> None:
    """Close stdin (the workers close their sockets and exit); kill any that linger."""
    for proc in self.procs:
      if proc.stdin is not None and not proc.stdin.is_closing():
        proc.stdin.close()
    for proc in self.procs:
      try:
        await asyncio.wait_for(proc.wait(), 15)
      except TimeoutError:
        proc.kill()
        await proc.wait()
    self.procs = []
