"""Run the offline market: `python -m bond.sim --port 8765 [--rate 20] [--seed 42]`."""

import argparse
import asyncio
import contextlib
import logging
import signal

from bond.config import get_settings
from bond.sim.exchange import SimExchange


async def _serve(port: int, rate: float, seed: int) -> None:
  sim = SimExchange(port=port, trades_per_sec=rate, seed=seed)
  stop = asyncio.Event()
  loop = asyncio.get_running_loop()
  for sig in (signal.SIGTERM, signal.SIGINT):
    loop.add_signal_handler(sig, stop.set)
  async with sim:
    logging.getLogger("bond.sim").info("sim exchange ready on %s", sim.base_url)
    await stop.wait()


def main() -> None:
  """Serve the Binance-shaped sim exchange until SIGTERM or Ctrl-C."""
  settings = get_settings()
  parser = argparse.ArgumentParser(prog="python -m bond.sim", description=__doc__)
  parser.add_argument("--port", type=int, default=settings.bond_sim_port)
  parser.add_argument(
    "--rate", type=float, default=settings.bond_sim_trades_per_sec, help="trades/s per symbol"
  )
  parser.add_argument("--seed", type=int, default=42)
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  with contextlib.suppress(KeyboardInterrupt):
    asyncio.run(_serve(args.port, args.rate, args.seed))


if __name__ == "__main__":
  main()
