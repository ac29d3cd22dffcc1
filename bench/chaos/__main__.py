"""`python -m bench.chaos [--short] [--home DIR] [--out FILE]`: run, print, exit 1 on any loss."""

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

from bench.chaos import __doc__ as OVERVIEW
from bench.chaos.plan import FULL, RESULTS, ROOT, SHORT
from bench.chaos.run import run_chaos
from bench.chaos.verdict import report


def main() -> None:
  """Run the chaos scenario, print the table, exit 1 on any loss, duplicate or failed check."""
  parser = argparse.ArgumentParser(
    prog="python -m bench.chaos", description=(OVERVIEW or "").split("\n\n")[0]
  )
  parser.add_argument(
    "--short", action="store_true", help="8 streams, 20 clients, the CI fault set"
  )
  parser.add_argument(
    "--home", help="where the private platform lives (default .bond/chaos or a temp dir)"
  )
  parser.add_argument(
    "--out",
    type=Path,
    help="the result JSON (default bench/results/chaos.json, chaos-short.json for --short)",
  )
  args = parser.parse_args()
  logging.basicConfig(level=logging.WARNING)
  cfg = SHORT if args.short else FULL
  home = Path(args.home) if args.home else (
    Path(tempfile.mkdtemp(prefix="bond-chaos-")) if args.short else ROOT / ".bond" / "chaos")  # fmt: skip
  out = args.out or RESULTS / ("chaos-short.json" if args.short else "chaos.json")
  result = asyncio.run(run_chaos(cfg, home, out))
  report(result)
  print(f"results: {out}  logs: {home / 'logs'}")
  sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
  main()
