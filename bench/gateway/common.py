"""Helpers every process of the gateway benchmark uses: limits, event loop, frames, stats."""

import asyncio
import json
import math
import os
import platform
import resource
import subprocess
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, cast

from bench.gateway.plan import FRAME_BYTES, LOGS, ROOT, STEP_MS


def raise_fd_limit() -> int:
  """Raise the soft open-files limit to the hard limit (at most 65,536); return it."""
  soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
  want = hard if hard != resource.RLIM_INFINITY else 65_536
  want = min(want, 65_536)
  if soft < want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
  return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run_loop(main: Awaitable[Any]) -> Any:
  """Run a coroutine on uvloop when it is installed (uvicorn picks it too), else asyncio."""
  try:
    import uvloop
  except ImportError:
    return asyncio.run(cast(Any, main))
  return uvloop.run(cast(Any, main))


def loop_name() -> str:
  """Return the event loop the servers and clients run on."""
  try:
    import uvloop
  except ImportError:
    return "asyncio"
  return f"uvloop {uvloop.__version__}"


def log_file(name: str) -> Any:
  """Open (append) the log file of one benchmark process under .bond/bench/logs."""
  LOGS.mkdir(parents=True, exist_ok=True)
  return open(LOGS / f"{name}.log", "ab")


def write_json(path: Path, data: dict[str, Any]) -> None:
  """Write data as indented JSON, creating the folder."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(data, indent=2) + "\n")


def _iso(ms: int) -> str:
  return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + "Z"


class Frames:
  """Builds ~600 B AggregatedEvent JSON frames with increasing seqs and a produce time."""

  def __init__(self, sid: str, first_seq: int) -> None:
    from bond.schemas import AggregatedEvent

    self.sid = sid
    self.next_seq = first_seq
    base = AggregatedEvent(
      stream_id=sid,
      seq=first_seq,
      ts=_iso(first_seq),
      window_start=_iso(first_seq - STEP_MS),
      interval_sec=STEP_MS // 1000,
      symbol="BTC/USDT",
      price_avg=68012.37,
      price_open=68000.0,
      price_high=68100.5,
      price_low=67900.25,
      price_close=68050.75,
      vwap=68010.12,
      volume_sum=12.3456,
      trades=42,
      tweets=3,
      onchain={"tx": 12, "transfer": 4},
      raw_data={"sim": True, "bench_t": 1e9},
    )
    self.template = base.model_dump(mode="json")
    size = len(self._dump(self.template))
    self.template["raw_data"]["pad"] = "x" * max(0, FRAME_BYTES - size - len(',"pad":""'))

  @staticmethod
  def _dump(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))

  def make(self, produced_at: float | None = None) -> tuple[int, str]:
    """Return the next (seq, frame); the frame carries `produced_at` (default: now)."""
    seq = self.next_seq
    self.next_seq += STEP_MS
    body = dict(self.template)
    body.update(seq=seq, ts=_iso(seq), window_start=_iso(seq - STEP_MS))
    body["raw_data"] = {**self.template["raw_data"], "bench_t": produced_at or time.time()}
    return seq, self._dump(body)


def produced_at(frame: bytes) -> float | None:
  """Return the `bench_t` a frame carries, without parsing the whole JSON."""
  at = frame.rfind(b'"bench_t":')
  if at < 0:
    return None
  start = at + 10
  end = start
  while end < len(frame) and frame[end] not in b",}":
    end += 1
  try:
    return float(frame[start:end])
  except ValueError:
    return None


def percentile(values: list[float], q: float) -> float | None:
  """Return the q-th percentile (nearest rank) of values, or None when empty."""
  if not values:
    return None
  ordered = sorted(values)
  rank = max(1, math.ceil(q / 100 * len(ordered)))
  return ordered[min(rank, len(ordered)) - 1]


def cpu_seconds(pid: int) -> float:
  """Return the user+system CPU seconds a process has used so far (0 when unknown)."""
  try:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
  except (OSError, IndexError):
    return 0.0
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def round1(value: float | None) -> float | None:
  return None if value is None else round(value, 1)


def machine() -> dict[str, Any]:
  """Return what the numbers were measured on."""
  import uvicorn
  import websockets

  load = os.getloadavg()
  return {
    "cores": os.cpu_count(),
    "python": platform.python_version(),
    "platform": platform.platform(),
    "loop": loop_name(),
    "websockets": websockets.__version__,
    "uvicorn": uvicorn.__version__,
    "loadavg_at_start": [round(x, 2) for x in load],
  }


def git_commit() -> str | None:
  """Return the current commit, if any."""
  proc = subprocess.run(
    ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
  )
  return proc.stdout.strip() or None
