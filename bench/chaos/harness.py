"""The chaos run's platform and clients: start them, create streams, wait for recovery."""

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.chaos import check
from bench.chaos.plan import ROOT, Config, now_ms, say, stream_specs
from bench.stack import free_port
from bond.devstack import DevStack, http_ok


@dataclass
class Run:
  """Everything the run started and learned."""

  cfg: Config
  stack: DevStack
  api_url: str
  ws_url: str
  env: dict[str, str]
  streams: dict[str, dict[str, Any]] = field(
    default_factory=dict
  )  # sid -> info (spec, kind, token)
  clients: dict[int, str] = field(default_factory=dict)  # cid -> sid
  log: check.ClientLog = field(default_factory=lambda: check.ClientLog([]))
  procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
  extra_worker: subprocess.Popen[bytes] | None = None
  extra_worker_port: int = 0
  faults: list[dict[str, Any]] = field(default_factory=list)
  problems: list[str] = field(default_factory=list)
  stopped_for_good: set[str] = field(default_factory=set)

  def interval_ms(self, cid: int) -> int:
    return int(self.streams[self.clients[cid]]["spec"]["interval_sec"]) * 1000

  def info(self, part: str) -> dict[str, Any]:
    for row in self.stack.status():
      if row["name"] == part:
        return row
    return {}


# ---------------------------------------------------------------------- waiting


async def wait_for(
  pred: Callable[[], bool | Awaitable[bool]], timeout_sec: float, step: float = 0.25
) -> bool:
  """Poll pred until it is true or the time is up; return whether it became true."""
  deadline = time.monotonic() + timeout_sec
  while time.monotonic() < deadline:
    got = pred()
    if isinstance(got, Awaitable):
      got = await got
    if got:
      return True
    await asyncio.sleep(step)
  return False


async def http_ready(url: str) -> bool:
  return await asyncio.to_thread(http_ok, url)


def clients_past(run: Run, t_ms: int) -> list[int]:
  """Return the clients that have not yet received a window ending after t_ms."""
  run.log.poll()
  late = []
  for cid in run.clients:
    last = run.log.last_recv(cid)
    if last is None or last.seq <= t_ms:
      late.append(cid)
  return late


async def wait_recovered(run: Run, t_restore: int) -> tuple[float | None, list[int]]:
  """Wait until every client has a window that ended after t_restore; return seconds and stragglers."""
  ok = await wait_for(lambda: not clients_past(run, t_restore), run.cfg.recover_timeout_sec, 0.2)
  stragglers = clients_past(run, t_restore)
  return ((now_ms() - t_restore) / 1000 if ok else None), stragglers


async def ensure_parts_running(run: Run, after: str) -> None:
  """Note and restart any supervised part that is not RUNNING (except those stopped on purpose)."""
  for row in await asyncio.to_thread(run.stack.status):
    name = str(row["name"])
    if name in run.stopped_for_good or row["statename"] in ("RUNNING", "STARTING"):
      continue
    run.problems.append(
      f"after {after}: {name} was {row['statename']} (supervisord gave up); restarted by hand"
    )
    say(f"!! {name} is {row['statename']} after {after}; starting it again")
    try:
      await asyncio.to_thread(run.stack.start_part, name)
    except Exception as err:
      run.problems.append(f"after {after}: {name} could not be restarted: {err}")


# ---------------------------------------------------------------------- setup


def make_stack(home: Path) -> tuple[DevStack, dict[str, str]]:
  """Return a DevStack on free ports and the environment of its processes."""
  kafka = free_port()
  stack = DevStack(
    home=home, kafka_port=kafka, controller_port=free_port(), redis_url=f"redis://127.0.0.1:{free_port()}/0",
    api_port=free_port(), ws_port=free_port(), sim_port=free_port(), worker_web_port=free_port(),
    kafka_heap_mb=512,
  )  # fmt: skip
  stack.env = {
    "BOND_ENV": "dev", "BOND_MARKET": "sim", "BOND_MAX_STREAMS": "100000", "BOND_API_KEYS": "",
    "BOND_TOPIC_PREFIX": "", "BOND_APP_ID": "bond", "BOND_FEEDS": "on", "BOND_HOME": str(home),
    "WS_HOST": f"127.0.0.1:{stack.ws_port}", "API_PORT": str(stack.api_port), "WS_PORT": str(stack.ws_port),
  }  # fmt: skip
  return stack, stack.process_env("sim")


async def start_platform(stack: DevStack, env: dict[str, str]) -> float:
  """Start every part of the platform under supervisord; return the seconds it took."""
  started = time.monotonic()

  def progress(name: str, state: str, sec: float) -> None:
    if state == "ready":
      say(f"  {name} ready in {sec:.1f}s")

  def build_and_up() -> None:
    parts = [stack.kafka_part()]
    redis = stack.redis_part()
    if redis is None:
      raise RuntimeError(f"something already answers at {stack.redis_url}")
    parts += [redis, *stack.platform_parts("sim")]
    stack.up(parts, env, progress)

  await asyncio.to_thread(build_and_up)
  return time.monotonic() - started


async def create_streams(run: Run) -> None:
  """Create the streams through the REST API."""
  async with httpx.AsyncClient(base_url=run.api_url, timeout=30) as http:
    for kind, spec in stream_specs(run.cfg.streams):
      resp = await http.post("/v1/streams", json={"spec": spec})
      if resp.status_code not in (200, 201):
        raise RuntimeError(f"creating {spec} failed: {resp.status_code} {resp.text[:300]}")
      body = resp.json()
      run.streams[body["stream_id"]] = {"kind": kind, "spec": body["spec"], "token": body["token"]}


def start_clients(run: Run, workdir: Path) -> None:
  """Start the client processes, the clients spread evenly over the streams."""
  sids = list(run.streams)
  run.clients = {cid: sids[cid % len(sids)] for cid in range(run.cfg.clients)}
  paths = []
  for p in range(run.cfg.client_procs):
    mine = [f"{cid}:{sid}" for cid, sid in run.clients.items() if cid % run.cfg.client_procs == p]
    path = workdir / f"clients{p}.log"
    path.unlink(missing_ok=True)
    paths.append(path)
    err = (workdir / f"clients{p}.stderr").open("ab")
    run.procs.append(subprocess.Popen(
      [sys.executable, "-m", "bench.chaos.clients", "--api", run.api_url, "--ws", run.ws_url,
       "--out", str(path), *mine],
      cwd=ROOT, stdout=err, stderr=subprocess.STDOUT, start_new_session=True,
    ))  # fmt: skip
  run.log = check.ClientLog(paths)


def stop_clients(run: Run) -> dict[int, dict[str, Any]]:
  """Stop the client processes and return their summaries by client id."""
  for proc in run.procs:
    if proc.poll() is None:
      proc.send_signal(signal.SIGTERM)
  summaries: dict[int, dict[str, Any]] = {}
  for proc in run.procs:
    try:
      proc.wait(30)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
  for path in run.log.paths:
    summary = Path(f"{path}.summary.json")
    if summary.exists():
      summaries.update({int(k): v for k, v in json.loads(summary.read_text()).items()})
  run.log.poll()
  return summaries
