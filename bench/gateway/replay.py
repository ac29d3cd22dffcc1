"""Measurement 3: time to the first replayed frame of a `from=now-60s` connect."""

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

from bench.gateway.common import Frames, percentile, round1
from bench.gateway.deployment import Deployment
from bench.gateway.plan import STEP_MS, Plan
from bench.gateway.servers import Server


async def _replay_once(
  dep: Deployment, redis: Any, port: int, sid: str, frames: Frames, windows: int
) -> dict[str, Any]:
  """Fill the ring with `windows` windows inside now-60s, connect, time the replay."""
  from websockets.asyncio.client import connect

  from bond.wire import stream_key

  frames.next_seq = int(time.time() * 1000) - 100 - (windows - 1) * STEP_MS
  pipe = redis.pipeline(transaction=False)
  pipe.delete(stream_key(sid))
  seqs = []
  for _ in range(windows):
    seq, frame = frames.make()
    seqs.append(seq)
    pipe.xadd(stream_key(sid), {"e": frame}, id=f"{seq}-0")
  await asyncio.wait_for(pipe.execute(), 10)
  t0 = time.perf_counter()
  async with connect(
    dep.url(port, sid, "now-60s"), compression=None, ping_interval=None, open_timeout=10
  ) as ws:
    t_open = time.perf_counter()
    got = [json.loads(await asyncio.wait_for(ws.recv(decode=False), 10))["seq"]]
    t_first = time.perf_counter()
    for _ in range(windows - 1):
      got.append(json.loads(await asyncio.wait_for(ws.recv(decode=False), 10))["seq"])
    t_all = time.perf_counter()
  return {
    "open_ms": (t_open - t0) * 1000,
    "first_ms": (t_first - t0) * 1000,
    "all_ms": (t_all - t0) * 1000,
    "ok": got == seqs,
  }


async def replay_latency(
  plan: Plan, dep: Deployment, gateway: Server, sid: str, busy_sid: str, log: Callable[[str], None]
) -> dict[str, Any]:
  """Connect with from=now-60s to a stream with a full ring; time the first replayed frame.

  Warm connects come at random moments while the fan-out already reads the stream (someone
  listened to it in the last 2 s); cold ones come after it left the stream, while it reads
  another one (a gateway that serves other streams).
  """
  import redis.asyncio as aioredis
  from websockets.asyncio.client import connect

  redis = aioredis.from_url(dep.redis_url, socket_timeout=5)
  frames = Frames(sid, 0)
  rng = random.Random(7)
  warm: list[dict[str, Any]] = []
  cold: list[dict[str, Any]] = []
  linger = 2.6  # the fan-out leaves a stream 2 s after its last listener
  try:
    async with connect(dep.url(gateway.port, busy_sid), compression=None, ping_interval=None):
      for _ in range(plan.replay_cold_connects):
        await asyncio.sleep(linger)
        cold.append(await _replay_once(dep, redis, gateway.port, sid, frames, plan.ring_windows))
      for _ in range(plan.replay_connects):
        await asyncio.sleep(rng.uniform(0.0, 0.2))
        warm.append(await _replay_once(dep, redis, gateway.port, sid, frames, plan.ring_windows))
  finally:
    await redis.aclose()

  def ms(rows: list[dict[str, Any]], key: str, q: float) -> float | None:
    return round1(percentile([r[key] for r in rows], q))

  result = {
    "from": "now-60s",
    "ring_windows": plan.ring_windows,
    "connects": plan.replay_connects,
    "first_frame_p50_ms": ms(warm, "first_ms", 50),
    "first_frame_p99_ms": ms(warm, "first_ms", 99),
    "handshake_p50_ms": ms(warm, "open_ms", 50),
    "all_windows_p50_ms": ms(warm, "all_ms", 50),
    "cold_connects": plan.replay_cold_connects,
    "cold_first_frame_p50_ms": ms(cold, "first_ms", 50),
    "cold_first_frame_max_ms": ms(cold, "first_ms", 100),
    "replays_complete_and_in_order": all(r["ok"] for r in warm + cold),
  }
  log(
    f"  first replayed frame p50 {result['first_frame_p50_ms']} ms, p99 "
    f"{result['first_frame_p99_ms']} ms (handshake {result['handshake_p50_ms']} ms); "
    f"cold stream p50 {result['cold_first_frame_p50_ms']} ms, max {result['cold_first_frame_max_ms']} ms"
  )
  return result
