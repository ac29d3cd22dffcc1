"""The gateway benchmark's sizes, targets, paths and timeouts."""

import dataclasses
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
LOGS = ROOT / ".bond" / "bench" / "logs"
HOST = "127.0.0.1"
STEP_MS = 1000
FRAME_BYTES = 600
RATIO_TARGET = 0.8
P99_TARGET_MS = 250.0
CLIENT_PROCS = 4
CONNECT_CONCURRENCY = 64  # per client process
PROBES = 20  # delay-phase sockets read by the main process
CLIENT_MAX_QUEUE = 1024  # frames a client buffers before it stops reading its socket
START_TIMEOUT_SEC = 60.0
REPLY_TIMEOUT_SEC = 180.0


@dataclasses.dataclass(frozen=True)
class Plan:
  """How big each part of the benchmark is."""

  fanout_subscribers: int
  fanout_messages: int
  fanout_rounds: int
  delay_subscribers: int
  delay_events: int
  delay_rate: float
  replay_connects: int
  replay_cold_connects: int
  ring_windows: int = 60
  collect_timeout_sec: float = 60.0
  idle_sec: float = 5.0


FULL = Plan(
  fanout_subscribers=500,
  fanout_messages=600,
  fanout_rounds=3,
  delay_subscribers=5000,
  delay_events=40,
  delay_rate=2.0,
  replay_connects=50,
  replay_cold_connects=5,
)
QUICK = Plan(
  fanout_subscribers=200,
  fanout_messages=500,
  fanout_rounds=1,
  delay_subscribers=1000,
  delay_events=10,
  delay_rate=2.0,
  replay_connects=20,
  replay_cold_connects=2,
  collect_timeout_sec=20.0,
  idle_sec=3.0,
)
