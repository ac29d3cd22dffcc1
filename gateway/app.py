"""ASGI entry points: `api` (REST control plane, port 8000) and `gateway` (WebSocket, port 8080).

Run with uvicorn's factory mode: `uvicorn bond.gateway.app:api --factory`; the gateway
with `--ws-max-size 4096` (BOND_WS_MAX_FRAME_BYTES), so that uvicorn never reads a larger
client frame. Outside BOND_ENV=dev both refuse unsafe settings with a one-line error.
"""

from starlette.applications import Starlette

from bond.config import Settings, get_settings
from bond.errors import ConfigError

# Each factory imports only its own side: the gateway process needs neither the REST API nor
# the MCP server (their imports held 30 MiB and 0.9 s of start-up in every gateway).


def _checked(service: str) -> Settings:
  settings = get_settings()
  try:
    settings.require_safe_secret()
  except ConfigError as err:
    raise SystemExit(f"bond {service}: refusing to start: {err.message}") from None
  return settings


def api() -> Starlette:
  """Return the REST control plane application."""
  from bond.gateway.api import create_api_app

  return create_api_app(_checked("api"))


def gateway() -> Starlette:
  """Return the WebSocket gateway application."""
  from bond.gateway.ws_app import create_gateway_app

  return create_gateway_app(_checked("gateway"))
