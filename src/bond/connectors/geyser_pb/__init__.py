"""Generated Geyser gRPC stubs (see ../regen_geyser.py)."""
