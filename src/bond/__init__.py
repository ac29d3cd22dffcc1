"""Bond: real-time market-data streams for indie quants and AI agents."""

from typing import TYPE_CHECKING, Any

__version__ = "0.3.0"
__all__ = ["BondAPIError", "BondClient", "BondEvent", "StreamClosedError", "__version__", "listen"]

if TYPE_CHECKING:
  from bond.client import BondAPIError, BondClient, BondEvent, StreamClosedError, listen


def __getattr__(name: str) -> Any:
  # The SDK loads on first use, so `import bond` (the CLI, the server) stays light.
  if name in __all__ and name != "__version__":
    from bond import client

    return getattr(client, name)
  raise AttributeError(f"module 'bond' has no attribute {name!r}")
