"""The WebSocket gateway application (port 8080): `/ws/{stream_id}`, health and /metrics."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from bond import logredact
from bond.config import Settings, get_settings
from bond.gateway.direct import ServerSend
from bond.gateway.signals import hook_signals
from bond.gateway.ws import Gateway


async def _ws_endpoint(ws: WebSocket) -> None:
  gateway: Gateway = ws.state.gateway
  await gateway.serve(ws)


async def _healthz(request: Request) -> Response:
  return JSONResponse({"status": "ok"})


async def _readyz(request: Request) -> Response:
  gateway: Gateway = request.state.gateway
  deps = await gateway.ready()
  ok = all(deps.values()) and not gateway.closing
  return JSONResponse(
    {"status": "ready" if ok else "not_ready", **deps}, status_code=200 if ok else 503
  )


async def _metrics(request: Request) -> Response:
  # Counters only: no stream ids or project names, so no key is needed.
  gateway: Gateway = request.state.gateway
  return Response(generate_latest(gateway.prometheus), media_type="text/plain; version=0.0.4")


def create_gateway_app(
  settings: Settings | None = None, *, handle_signals: bool = True
) -> Starlette:
  """Return the WebSocket gateway application (port 8080)."""
  conf = settings or get_settings()
  logredact.install()  # uvicorn logs request lines, with ?token=...

  @asynccontextmanager
  async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    async with Gateway(conf) as gateway:
      app.state.gateway = gateway
      restore = hook_signals(gateway.go_away, lambda: gateway.closing) if handle_signals else None
      # With thousands of sockets a full collection walks millions of objects (pauses
      # over a second): freeze what start-up made and collect rarely.
      gateway.gc.start()
      try:
        yield {"gateway": gateway}
      finally:
        gateway.gc.stop()
        if restore is not None:
          restore()

  routes = [
    WebSocketRoute("/ws/{stream_id}", _ws_endpoint),
    Route("/healthz", _healthz),
    Route("/readyz", _readyz),
    Route("/metrics", _metrics),
  ]
  # Outermost user middleware: it sees the server's own `send`, which the direct writes and
  # the client frame cap need.
  middleware = [Middleware(ServerSend, max_frame_bytes=conf.bond_ws_max_frame_bytes)]
  return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
