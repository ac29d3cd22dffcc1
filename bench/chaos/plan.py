"""How big a chaos run is, which faults it injects, and the mix of streams it creates."""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bond.config import Settings

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "DOGE/USDT", "XRP/USDT", "LINK/USDT"]
INTERVALS = [1, 2, 3, 5, 10]
KINDS = ["ccxt", "ccxt+twitter", "ccxt_liq", "ccxt_2ex", "twitter", "onchain+ccxt", "multi"]
LATENESS_MS: int = Settings.model_fields["bond_lateness_ms"].default  # the run keeps the default
# The exchanges of a stream that names none (the run keeps BOND_EXCHANGES' default).
EXCHANGES: list[str] = Settings.model_fields["bond_exchanges"].default.split(",")
REDIS_LIVE_LATE_MS = 3000  # lateness (1 s) plus delivery: live windows during a Redis outage
ON_TIME_MS = (
  2500  # a window delivered later than this after its end counts as late in the tail check
)


@dataclass
class Config:
  """How big the run is and which faults it injects."""

  name: str
  streams: int
  clients: int
  client_procs: int
  faults: list[str]
  baseline_sec: float
  settle_sec: float
  outage_sec: float
  final_sec: float
  recover_timeout_sec: float
  sim_flaps: int = 2


SHORT = Config("short", streams=8, clients=20, client_procs=1,
               faults=["worker_kill9", "gateway_kill9", "redis_restart", "kafka_restart", "worker_join",
                       "worker_leave", "sim_flap"],
               baseline_sec=8, settle_sec=5, outage_sec=6, final_sec=8, recover_timeout_sec=60, sim_flaps=1)  # fmt: skip
FULL = Config("full", streams=50, clients=200, client_procs=2,
              faults=["worker_kill9", "gateway_kill9", "redis_restart", "kafka_restart", "worker_join",
                      "worker_leave", "sim_flap"],  # the sim restarts its trade ids: last
              baseline_sec=30, settle_sec=20, outage_sec=10, final_sec=30, recover_timeout_sec=120, sim_flaps=3)  # fmt: skip


def now_ms() -> int:
  return int(time.time() * 1000)


def say(text: str) -> None:
  print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


def stream_specs(n: int) -> list[tuple[str, dict[str, Any]]]:
  """Return n distinct (kind, spec) of mixed sources, symbols and intervals."""
  out: list[tuple[str, dict[str, Any]]] = []
  for i in range(n):
    sym, interval, kind = (
      SYMBOLS[i % len(SYMBOLS)],
      INTERVALS[i % len(INTERVALS)],
      KINDS[i % len(KINDS)],
    )
    spec: dict[str, Any] = {"symbols": [sym], "interval_sec": interval, "exchanges": ["binance"]}
    if kind == "ccxt":
      spec["sources"] = [{"type": "ccxt"}]
    elif kind == "ccxt+twitter":
      spec["sources"] = [{"type": "ccxt"}, {"type": "twitter"}]
    elif kind == "ccxt_liq":
      spec["sources"] = [{"type": "ccxt", "liquidations": True}]
    elif kind == "ccxt_2ex":
      spec["sources"], spec["exchanges"] = [{"type": "ccxt"}], ["binance", "okx"]
    elif kind == "twitter":
      spec = {"sources": [{"type": "twitter"}], "symbols": [sym], "interval_sec": interval}
    elif kind == "onchain+ccxt":
      spec["sources"] = [{"type": "onchain"}, {"type": "ccxt"}]
    else:
      spec["sources"] = [{"type": "ccxt"}]
      spec["symbols"] = [sym, SYMBOLS[(i + 1) % len(SYMBOLS)]]
    out.append((kind, spec))
  return out
