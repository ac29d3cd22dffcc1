"""The servers under test, each its own process: the gateway under `uvicorn --factory`
and a bare `websockets` broadcast server (`--role bare`)."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

from bench.gateway.common import log_file
from bench.gateway.plan import CLIENT_MAX_QUEUE, HOST, LOGS, ROOT, START_TIMEOUT_SEC


async def bare_server(port: int) -> None:
  """Serve `/sub` (receive broadcasts) and `/pub` (each text frame is broadcast to /sub)."""
  from websockets.asyncio.server import ServerConnection, broadcast, serve

  subscribers: set[ServerConnection] = set()

  async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else ""
    if path.startswith("/pub"):
      async for message in ws:
        broadcast(subscribers, message)
      return
    subscribers.add(ws)
    try:
      await ws.wait_closed()
    finally:
      subscribers.discard(ws)

  stop = asyncio.Event()
  loop = asyncio.get_running_loop()
  for sig in (signal.SIGTERM, signal.SIGINT):
    loop.add_signal_handler(sig, stop.set)
  async with serve(handler, HOST, port, compression=None, max_queue=CLIENT_MAX_QUEUE):
    await stop.wait()


class Server:
  """A server subprocess (the gateway under uvicorn, or the bare broadcast server)."""

  def __init__(
    self, name: str, cmd: list[str], port: int, env: dict[str, str], ready_path: str
  ) -> None:
    self.name, self.cmd, self.port, self.env, self.ready_path = name, cmd, port, env, ready_path
    self.proc: asyncio.subprocess.Process | None = None

  async def start(self) -> "Server":
    """Start the process and wait until it answers."""
    import httpx

    with log_file(self.name) as log:
      self.proc = await asyncio.create_subprocess_exec(
        *self.cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
      )
    deadline = time.monotonic() + START_TIMEOUT_SEC
    async with httpx.AsyncClient() as http:
      while True:
        if self.proc.returncode is not None:
          raise RuntimeError(f"{self.name} exited; see {LOGS / (self.name + '.log')}")
        if time.monotonic() > deadline:
          raise RuntimeError(f"{self.name} not ready after {START_TIMEOUT_SEC:.0f}s")
        if await self._ready(http):
          return self
        await asyncio.sleep(0.1)

  async def _ready(self, http: Any) -> bool:
    import httpx

    if not self.ready_path:
      try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, self.port), 1)
      except (OSError, TimeoutError):
        return False
      writer.close()
      return True
    try:
      response = await http.get(f"http://{HOST}:{self.port}{self.ready_path}", timeout=2)
    except httpx.HTTPError:
      return False
    return bool(response.status_code == 200)

  @property
  def pid(self) -> int:
    """Return the process id."""
    assert self.proc is not None
    return self.proc.pid

  async def metrics(self) -> dict[str, float]:
    """Return the gateway's Prometheus counters (name -> value), empty when unavailable."""
    import httpx

    try:
      async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://{HOST}:{self.port}/metrics", timeout=5)).text
    except httpx.HTTPError:
      return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
      if line.startswith("bond_") and " " in line:
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
          values[name] = float(value)
    return values

  async def stop(self) -> None:
    """SIGTERM, wait, kill if needed."""
    proc, self.proc = self.proc, None
    if proc is None or proc.returncode is not None:
      return
    proc.send_signal(signal.SIGTERM)
    try:
      await asyncio.wait_for(proc.wait(), 20)
    except TimeoutError:
      proc.kill()
      await proc.wait()


def gateway_server(port: int, env: dict[str, str], name: str = "gateway") -> Server:
  """Return the gateway as `bond up` runs it (uvicorn factory, no per-message deflate)."""
  cmd = [
    sys.executable, "-m", "uvicorn", "bond.gateway.app:gateway", "--factory",
    "--host", HOST, "--port", str(port), "--ws-per-message-deflate", "false",
    "--ws-max-size", "4096", "--no-access-log", "--log-level", "warning",
  ]  # fmt: skip
  return Server(name, cmd, port, env, "/readyz")


def bare_server_process(port: int) -> Server:
  """Return the bare `websockets` broadcast server process."""
  cmd = [sys.executable, "-m", "bench.gateway", "--role", "bare", "--port", str(port)]
  return Server("bare", cmd, port, {**os.environ}, "")
