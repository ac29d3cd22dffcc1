"""Bond for AI agents: an MCP server (official `mcp` SDK) over a running Bond deployment.

- `bond mcp` runs it over stdio for an agent host (`run_stdio`), configured by BOND_API_URL
  and BOND_API_KEY like the rest of the CLI.
- `McpHttp` / `http_app` serve it over streamable HTTP at /mcp behind an API-key check.

Needs the `mcp` extra (`pip install 'bond-streams[mcp]'`; the `server` extra includes it).
"""

import anyio

from bond.mcp_server.http import ApiKeyMiddleware, McpHttp, http_app
from bond.mcp_server.server import BondMCP, build_server

__all__ = ["ApiKeyMiddleware", "BondMCP", "McpHttp", "build_server", "http_app", "run_stdio"]


def run_stdio(bond: BondMCP | None = None) -> None:
  """Serve the MCP server on stdin/stdout until the host closes it."""
  server = bond or build_server()

  async def main() -> None:
    try:
      await server.server.run_stdio_async()
    finally:
      await server.aclose()

  anyio.run(main)
