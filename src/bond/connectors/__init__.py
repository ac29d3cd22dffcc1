"""Source connectors: each yields normalised raw events (RawTick, Tweet, OnchainEvent, ...)."""
