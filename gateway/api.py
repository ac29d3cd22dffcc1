"""The REST control plane (port 8000): streams, tokens, metrics, health and the OpenAPI document.

Stream records live in the compacted `bond.control.streams` topic (written with
RegistryWriter, read back through Registry), so any API process sees the same streams and
they survive restarts. Every error is `{"error": {"code": ..., "message": ...}}`.
"""

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from aiokafka.errors import KafkaError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bond import logredact
from bond.config import Settings, get_settings
from bond.errors import BondError
from bond.gateway import endpoints as ep
from bond.gateway.cpu import CpuPool
from bond.gateway.errors import bond_error_handler, http_error_handler, server_error_handler
from bond.gateway.history import Slots
from bond.gateway.markets import MarketCache, MarketLoader, load_markets
from bond.gateway.observe import ApiMetrics, ObserveMiddleware
from bond.gateway.openapi import build_openapi
from bond.gateway.quota import RateLimiter, StreamQuota
from bond.gateway.state import ApiState
from bond.gateway.windows import stream_windows
from bond.mcp_server import McpHttp, build_server
from bond.registry import Registry, RegistryWriter
from bond.topics.admin import TopicAdmin

__all__ = ["MarketLoader", "create_api_app"]

log = logging.getLogger(__name__)


def create_api_app(
  settings: Settings | None = None,
  *,
  market_loader: MarketLoader | None = None,
) -> Starlette:
  """Return the REST control plane application."""
  conf = settings or get_settings()
  logredact.install()  # uvicorn logs request lines, with ?token=...
  metrics = ApiMetrics()
  openapi = build_openapi()
  # /mcp: the MCP server for AI agents (streamable HTTP). Each tool call goes back through this
  # API over loopback with the caller's own key, so it gets every check a REST caller gets.
  mcp = McpHttp(
    build_server(
      api_url=conf.bond_mcp_api_url or f"http://127.0.0.1:{conf.api_port}", api_key=None
    ),
    keys=set(conf.api_keys),
    allowed_hosts=conf.mcp_allowed_hosts,
  )

  @contextlib.asynccontextmanager
  async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    conf.require_safe_secret()
    keys = conf.api_keys
    async with contextlib.AsyncExitStack() as stack:
      admin = TopicAdmin(
        conf.kafka_bootstrap,
        stream_retention_ms=conf.stream_retention_ms,
        raw_retention_ms=conf.raw_retention_ms,
      )
      await admin.start()
      stack.push_async_callback(admin.stop)
      await admin.ensure()
      registry = Registry(conf.kafka_bootstrap)
      await registry.start()
      stack.push_async_callback(registry.stop)
      try:  # topics made under another BOND_HISTORY_HOURS keep the one set now
        await admin.align_stream_topics([r.stream_id for r in registry.all()])
      except KafkaError as exc:
        log.warning("could not align the retention of stream topics: %s", exc)
      writer = RegistryWriter(conf.kafka_bootstrap)
      await writer.start()
      stack.push_async_callback(writer.stop)
      redis = aioredis.from_url(conf.redis_url, decode_responses=True, socket_timeout=5)
      stack.push_async_callback(redis.aclose)
      cpu = CpuPool(conf.bond_compile_threads, conf.bond_compile_timeout_sec)
      stack.callback(cpu.close)
      state = ApiState(
        settings=conf,
        keys=keys,
        registry=registry,
        writer=writer,
        admin=admin,
        redis=redis,
        markets=MarketCache(market_loader or load_markets, conf),
        metrics=metrics,
        quota=StreamQuota(redis, conf.bond_max_streams),
        rate=RateLimiter(redis, conf.bond_api_rate_per_sec, conf.bond_api_rate_burst),
        cpu=cpu,
        history_slots=Slots(conf.bond_history_readers),
      )
      await stack.enter_async_context(mcp.lifespan())
      log.info("REST API ready: %d streams, %d API keys", len(registry.all()), len(keys))
      yield {"api": state}

  async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi)

  # Starlette answers 405 (with Allow) for a method a path does not serve.
  routes = [
    Route("/v1/streams", ep.StreamsEndpoint),
    Route("/v1/streams/{stream_id}", ep.StreamEndpoint),
    Route("/v1/streams/{stream_id}/token", ep.refresh_token, methods=["POST"]),
    Route("/v1/streams/{stream_id}/metrics", ep.stream_metrics, methods=["GET"]),
    Route("/v1/streams/{stream_id}/windows", stream_windows, methods=["GET"]),
    Route("/v1/compile", ep.compile_spec, methods=["POST"]),
    Route("/healthz", ep.healthz, methods=["GET"]),
    Route("/readyz", ep.readyz, methods=["GET"]),
    Route("/metrics", ep.prometheus, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/mcp", endpoint=mcp.asgi),
  ]
  handlers: dict[Any, Any] = {
    HTTPException: http_error_handler,
    BondError: bond_error_handler,
    500: server_error_handler,
  }
  return Starlette(
    routes=routes,
    middleware=[Middleware(ObserveMiddleware, metrics=metrics)],
    exception_handlers=handlers,
    lifespan=lifespan,
  )
