"""ASGI entry points: `api` (REST control plane, port 8000) and `gateway` (WebSocket, port 8080).

Run with uvicorn's factory mode: `uvicorn bond.gateway.app:api --factory`.
"""

from starlette.applications import Starlette

from bond.gateway.api import create_api_app
from bond.gateway.ws import create_gateway_app


def api() -> Starlette:
  """Return the REST control plane application."""
  return create_api_app()


def gateway() -> Starlette:
  """Return the WebSocket gateway application."""
  return create_gateway_app()
