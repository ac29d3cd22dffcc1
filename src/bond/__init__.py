"""Bond: real-time market-data streams for indie quants and AI agents."""

__version__ = "0.3.0"
