"""Local peers that speak the protocols of Bond's sources, for offline runs and tests."""
