"""The MCP server over streamable HTTP, behind an API-key check, to mount in Bond's API at /mcp.

    mcp_http = McpHttp(build_server(api_url=...), keys=settings.api_keys)
    routes.append(Route("/mcp", endpoint=mcp_http.asgi))
    # in the API's lifespan:
    async with mcp_http.lifespan():
      yield state

`http_app(...)` is the same as a standalone Starlette app (tests, a separate process).
"""

import contextlib
import hmac
from collections.abc import AsyncIterator, Collection, Sequence

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bond.mcp_server.server import BondMCP, bearer

LOCAL_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")
MAX_SESSIONS = 100
SESSION_IDLE_SEC = 1800.0


class ApiKeyMiddleware:
  """Answer 401 JSON unless the request carries one of `keys` as a Bearer token (none: open)."""

  def __init__(self, app: ASGIApp, keys: Collection[str]) -> None:
    self.app = app
    self.keys = [k.encode() for k in keys if k]

  def _allowed(self, scope: Scope) -> tuple[bool, str]:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    key = bearer(headers)
    if key is None:
      return (
        False,
        "send your API key as `Authorization: Bearer <key>` (keys come from BOND_API_KEYS)",
      )
    found = False
    for known in self.keys:
      found |= hmac.compare_digest(known, key.encode())
    return found, "unknown API key"

  async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http" or not self.keys:
      await self.app(scope, receive, send)
      return
    ok, why = self._allowed(scope)
    if ok:
      await self.app(scope, receive, send)
      return
    response = JSONResponse(
      {"error": {"code": "unauthorized", "message": why}},
      status_code=401,
      headers={"WWW-Authenticate": "Bearer"},
    )
    await response(scope, receive, send)


class McpHttp:
  """The streamable-HTTP endpoint of a BondMCP: an ASGI app and the lifespan it needs."""

  def __init__(
    self,
    bond: BondMCP,
    keys: Collection[str] = (),
    allowed_hosts: Sequence[str] = LOCAL_HOSTS,
    *,
    max_sessions: int = MAX_SESSIONS,
    session_idle_sec: float = SESSION_IDLE_SEC,
  ) -> None:
    self.bond = bond
    # DNS-rebinding guard: the Host header must be one of these ("host:*" for any port); an
    # empty list turns the guard off (behind a proxy that checks Host itself).
    security = TransportSecuritySettings(
      enable_dns_rebinding_protection=bool(allowed_hosts),
      allowed_hosts=list(allowed_hosts),
      allowed_origins=[f"http://{h}" for h in allowed_hosts]
      + [f"https://{h}" for h in allowed_hosts],
    )
    # Only the session manager of the SDK's app is used: the route, auth and lifespan are ours.
    bond.server.streamable_http_app(
      transport_security=security, max_sessions=max_sessions, session_idle_timeout=session_idle_sec
    )
    self.session_manager: StreamableHTTPSessionManager = bond.server.session_manager
    self.asgi: ASGIApp = ApiKeyMiddleware(self.session_manager.handle_request, keys)

  @contextlib.asynccontextmanager
  async def lifespan(self) -> AsyncIterator[None]:
    """Run the session manager (once per instance), and stop stream listeners at the end."""
    try:
      async with self.session_manager.run():
        yield
    finally:
      await self.bond.aclose()


def http_app(
  bond: BondMCP,
  keys: Collection[str] = (),
  allowed_hosts: Sequence[str] = LOCAL_HOSTS,
  path: str = "/mcp",
) -> Starlette:
  """Return a Starlette app serving `bond` at `path` (streamable HTTP, API key when keys are set)."""
  endpoint = McpHttp(bond, keys, allowed_hosts)

  @contextlib.asynccontextmanager
  async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with endpoint.lifespan():
      yield

  return Starlette(routes=[Route(path, endpoint=endpoint.asgi)], lifespan=lifespan)
