"""Run a Starlette app under uvicorn inside the current event loop, on loopback."""

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger(__name__)


class _InProcessServer(uvicorn.Server):
  """A uvicorn server that leaves the process's signal handlers alone."""

  @contextlib.contextmanager
  def capture_signals(self) -> Generator[None, None, None]:
    yield


class LocalServer:
  """Serve `app` on host:port (0 = ephemeral) until stop(); `port` is the bound port."""

  def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
    self.app = app
    self.host = host
    self.port = port
    self._server: _InProcessServer | None = None
    self._task: asyncio.Task[None] | None = None

  async def start(self) -> None:
    """Bind the socket and serve in a background task."""
    if self._task is not None:
      return
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((self.host, self.port))
    sock.listen(1024)
    sock.setblocking(False)
    self.port = sock.getsockname()[1]
    config = uvicorn.Config(
      self.app,
      host=self.host,
      port=self.port,
      log_level="warning",
      lifespan="off",
      ws="websockets-sansio",
      ws_ping_interval=None,
      ws_per_message_deflate=False,
      timeout_graceful_shutdown=1,
      access_log=False,
    )
    self._server = _InProcessServer(config)
    self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
    while not self._server.started:
      if self._task.done():
        self._task.result()
        raise RuntimeError("uvicorn stopped during startup")
      await asyncio.sleep(0.01)

  async def stop(self) -> None:
    """Stop serving; safe to call more than once."""
    server, task = self._server, self._task
    self._server, self._task = None, None
    if server is None or task is None:
      return
    server.should_exit = True
    try:
      await asyncio.wait_for(asyncio.shield(task), timeout=3)
    except TimeoutError:
      server.force_exit = True
      task.cancel()
      with contextlib.suppress(asyncio.CancelledError):
        await task
