"""The faults a chaos run injects, one at a time, each returning when it was held and lifted."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.chaos.harness import Run, http_ready, wait_for
from bench.chaos.plan import ROOT, now_ms
from bench.stack import free_port
from bond.devstack import kafka_ready


async def kill9(run: Run, part: str, ready_url: str) -> dict[str, Any]:
  """kill -9 a supervised part; supervisord (autorestart=unexpected) starts it again."""
  pid = int(run.info(part).get("pid") or 0)
  if not pid:
    raise RuntimeError(f"{part} is not running")
  t = now_ms()
  os.kill(pid, signal.SIGKILL)

  def restarted() -> bool:
    row = run.info(part)
    return row.get("statename") == "RUNNING" and int(row.get("pid") or 0) not in (0, pid)

  back = await wait_for(restarted, 60)
  ready = back and await wait_for(lambda: http_ready(ready_url), 180, 0.5)
  detail = (
    f"pid {pid} killed; supervisord restarted it" if back else "supervisord did not restart it"
  )
  if not ready:
    run.problems.append(f"{part} kill -9: not ready again within the wait ({detail})")
  return {"t_fault": t, "t_restore": t, "detail": detail, "ready_after_sec": (now_ms() - t) / 1000}


async def fault_worker_kill9(run: Run) -> dict[str, Any]:
  return await kill9(run, "worker", f"http://127.0.0.1:{run.stack.worker_web_port}/bond/ready")


async def fault_gateway_kill9(run: Run) -> dict[str, Any]:
  return await kill9(run, "gateway", f"http://127.0.0.1:{run.stack.ws_port}/healthz")


async def probe_replay(run: Run, sid: str, timeout_sec: float = 20.0) -> dict[str, Any]:
  """Open a replay (`from=now-60s`) and report the first frame or the close code."""
  from websockets.asyncio.client import connect
  from websockets.exceptions import ConnectionClosed, InvalidHandshake

  token = run.streams[sid]["token"]
  url = f"{run.ws_url}/ws/{sid}?token={token}&from=now-60s"
  started = time.monotonic()
  try:
    async with connect(url, open_timeout=10, compression=None) as ws:
      frame = await asyncio.wait_for(ws.recv(), timeout_sec)
      return {
        "result": "event",
        "seq": json.loads(frame)["seq"],
        "sec": round(time.monotonic() - started, 2),
      }
  except ConnectionClosed as closed:
    code = closed.rcvd.code if closed.rcvd else None
    reason = closed.rcvd.reason if closed.rcvd else ""
    return {
      "result": "closed",
      "code": code,
      "reason": reason,
      "sec": round(time.monotonic() - started, 2),
    }
  except (OSError, TimeoutError, InvalidHandshake) as err:
    return {
      "result": "error",
      "error": f"{type(err).__name__}: {err}",
      "sec": round(time.monotonic() - started, 2),
    }


async def fault_redis_restart(run: Run) -> dict[str, Any]:
  """Stop Redis (live must go on, replays get 1013), start it again (replays work)."""
  sid = next(iter(run.streams))
  t = now_ms()
  await asyncio.to_thread(run.stack.stop_part, "redis")
  await asyncio.sleep(1.0)
  during = await probe_replay(run, sid, timeout_sec=min(15.0, run.cfg.outage_sec + 8))
  rest = run.cfg.outage_sec - (now_ms() - t) / 1000
  if rest > 0:
    await asyncio.sleep(rest)
  # Did live windows reach clients while Redis was down?
  run.log.poll()
  live = sum(1 for evs in run.log.events.values() for e in evs if e.recv_ms > t + 500)
  t_r = now_ms()
  await asyncio.to_thread(run.stack.start_part, "redis")
  await asyncio.sleep(0.5)
  after = await probe_replay(run, sid)
  ok_during = during.get("result") == "closed" and during.get("code") == 1013
  ok_after = after.get("result") == "event"
  if not ok_during:
    run.problems.append(f"redis outage: a replay request got {during} instead of close 1013")
  if not ok_after:
    run.problems.append(f"redis back: a replay request got {after} instead of events")
  if live == 0:
    run.problems.append(
      f"redis outage: no live window reached any client during the {(t_r - t) / 1000:.0f}s outage"
    )
  return {"t_fault": t, "t_restore": t_r, "replay_during": during, "replay_after": after,
          "live_events_during_outage": live, "checks_ok": ok_during and ok_after}  # fmt: skip


async def fault_kafka_restart(run: Run) -> dict[str, Any]:
  """Stop the Kafka broker, keep it down a while, start it again."""
  t = now_ms()
  await asyncio.to_thread(run.stack.stop_part, "kafka")
  stopped_sec = (now_ms() - t) / 1000
  await asyncio.sleep(run.cfg.outage_sec)
  t_r = now_ms()
  await asyncio.to_thread(run.stack.start_part, "kafka")
  up = await wait_for(
    lambda: asyncio.to_thread(lambda: asyncio.run(kafka_ready(run.stack.bootstrap))), 90, 1.0
  )
  if not up:
    run.problems.append("kafka restart: broker not ready within 90 s")
  return {
    "t_fault": t,
    "t_restore": t_r,
    "stop_sec": stopped_sec,
    "ready_after_sec": (now_ms() - t_r) / 1000,
  }


async def fault_sim_flap(run: Run) -> dict[str, Any]:
  """Stop and start the sim exchange a few times (feeds lose their peer and reconnect)."""
  t = now_ms()
  for i in range(run.cfg.sim_flaps):
    await asyncio.to_thread(run.stack.stop_part, "sim")
    await asyncio.sleep(run.cfg.outage_sec / 2)
    await asyncio.to_thread(run.stack.start_part, "sim")
    if i < run.cfg.sim_flaps - 1:
      await asyncio.sleep(run.cfg.outage_sec / 2)
  return {"t_fault": t, "t_restore": now_ms(), "flaps": run.cfg.sim_flaps}


async def fault_worker_join(run: Run) -> dict[str, Any]:
  """Start a second Faust worker with the same environment (partitions and feeds rebalance)."""
  port = run.extra_worker_port = free_port()
  faust = str(Path(sys.executable).parent / "faust")
  log = (run.stack.logs / "worker2.log").open("ab")
  t = now_ms()
  run.extra_worker = subprocess.Popen(  # noqa: ASYNC220
    [faust, "-A", "bond.agents.app", "worker", "-l", "info", "--web-port", str(port)],
    env={**os.environ, **run.env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
  )  # fmt: skip
  ready = await wait_for(lambda: http_ready(f"http://127.0.0.1:{port}/bond/ready"), 180, 0.5)
  if not ready:
    run.problems.append("second worker: not ready within 180 s")
  return {"t_fault": t, "t_restore": t, "ready_after_sec": (now_ms() - t) / 1000, "web_port": port}


async def fault_worker_leave(run: Run) -> dict[str, Any]:
  """Stop the supervised worker for good: the second one takes its partitions and feeds."""
  if run.extra_worker is None or run.extra_worker.poll() is not None:
    raise RuntimeError("worker_leave needs worker_join first")
  t = now_ms()
  run.stopped_for_good.add("worker")
  await asyncio.to_thread(run.stack.stop_part, "worker")
  ready = await wait_for(
    lambda: http_ready(f"http://127.0.0.1:{run.extra_worker_port}/bond/ready"), 120, 0.5
  )
  if not ready:
    run.problems.append("worker leave: the remaining worker was not ready within 120 s")
  return {"t_fault": t, "t_restore": t, "stop_sec": (now_ms() - t) / 1000}


FAULTS: dict[str, tuple[str, Callable[[Run], Awaitable[dict[str, Any]]]]] = {
  "worker_kill9": ("worker kill -9 + restart", fault_worker_kill9),
  "gateway_kill9": ("gateway kill -9 + restart", fault_gateway_kill9),
  "redis_restart": ("redis stop/start", fault_redis_restart),
  "kafka_restart": ("kafka broker stop/start", fault_kafka_restart),
  "sim_flap": ("sim exchange flapping", fault_sim_flap),
  "worker_join": ("second worker joins", fault_worker_join),
  "worker_leave": ("one of two workers stopped", fault_worker_leave),
}
