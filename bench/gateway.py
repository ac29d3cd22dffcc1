"""Benchmark the WebSocket gateway against a bare `websockets` broadcast server.

    python -m bench.gateway [--quick]

1. Deliveries/s: the same N subscribers (500) get the same bursts of ~600 B AggregatedEvent
   frames from the gateway (Kafka -> fan-out -> sockets) and from a bare `websockets`
   server that broadcasts what a publisher socket sends it; rounds alternate between the
   two. Reported: the ratio of the best wall-clock rates (target >= 0.8) and the ratio of
   deliveries per server CPU-second (on a small machine the clients, not the servers, may
   set the wall-clock rate; `client_bound` says so).
2. Delivery delay with 5,000 subscribers on one stream: each event carries the time it was
   produced to Kafka (`raw_data.bench_t`); delay = receive time - that time; p99 < 250 ms.
   The same clients then get the same events from the bare server, as a baseline.
3. First-replayed-event latency: connect with `from=now-60s` to a stream whose Redis ring
   holds 60 windows; time from the connect call to the first frame (p50/p99), for a stream
   the gateway already reads and for the first listener of a stream (cold).

Servers run as their own processes (the gateway under `uvicorn --factory`); the clients run
in 4 subprocesses (`--role client`, JSON lines on stdin/stdout). Everything is on 127.0.0.1
and every wait is bounded. Results go to bench/results/gateway.json, logs to .bond/bench/logs.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import random
import resource
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from bench.stack import drop_topics, free_port

ROOT = Path(__file__).resolve().parent.parent
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


# ---------------------------------------------------------------------- shared helpers


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


def _log_file(name: str) -> Any:
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


# ---------------------------------------------------------------------- role: bare server


async def bare_server(port: int) -> None:
  """Serve `/sub` (receive broadcasts) and `/pub` (each text frame is broadcast to /sub)."""
  from websockets.asyncio.server import ServerConnection, broadcast, serve

  subscribers: set[ServerConnection] = set()

  async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else ""
    if path.startswith("/pub"):
      async for message in ws:
        broadcast(subscribers, message)
      return
    subscribers.add(ws)
    try:
      await ws.wait_closed()
    finally:
      subscribers.discard(ws)

  stop = asyncio.Event()
  loop = asyncio.get_running_loop()
  for sig in (signal.SIGTERM, signal.SIGINT):
    loop.add_signal_handler(sig, stop.set)
  async with serve(handler, HOST, port, compression=None, max_queue=CLIENT_MAX_QUEUE):
    await stop.wait()


# ---------------------------------------------------------------------- role: client worker


@dataclasses.dataclass
class Group:
  """A worker's sockets to one server, and what they received since the last reset."""

  mode: str
  sockets: list[Any] = dataclasses.field(default_factory=list)
  tasks: list["asyncio.Task[None]"] = dataclasses.field(default_factory=list)
  counts: list[int] = dataclasses.field(default_factory=list)
  received: int = 0
  first: float | None = None
  last: float | None = None
  delays: list[float] = dataclasses.field(default_factory=list)
  closes: Counter[str] = dataclasses.field(default_factory=Counter)
  open: int = 0
  events: dict[float, list[float]] = dataclasses.field(default_factory=dict)
  cpu_mark: float = dataclasses.field(default_factory=lambda: _cpu_self())

  def reset(self) -> None:
    """Forget what was received so far (and start counting CPU from now)."""
    self.counts = [0] * len(self.counts)
    self.received, self.first, self.last = 0, None, None
    self.delays, self.events = [], {}
    self.cpu_mark = _cpu_self()


def _cpu_self() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


class ClientWorker:
  """Holds groups of websockets clients and answers JSON-line commands."""

  def __init__(self) -> None:
    self.groups: dict[str, Group] = {}

  async def connect(
    self, group: str, url: str, n: int, mode: str, within_sec: float
  ) -> dict[str, Any]:
    """Open n sockets to url (bounded concurrency); return how many opened and how long it took."""
    from websockets.asyncio.client import connect

    g = self.groups.setdefault(group, Group(mode=mode))
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    errors: Counter[str] = Counter()
    started = time.monotonic()
    deadline = started + within_sec

    async def one() -> None:
      async with sem:
        left = deadline - time.monotonic()
        if left <= 0:
          errors["timeout"] += 1
          return
        try:
          ws = await asyncio.wait_for(
            connect(
              url,
              compression=None,
              ping_interval=None,
              max_queue=CLIENT_MAX_QUEUE,
              open_timeout=left,
              close_timeout=2,
            ),
            left,
          )
        except Exception as err:  # any failure to open counts, by kind
          errors[type(err).__name__] += 1
          return
      index = len(g.sockets)
      g.sockets.append(ws)
      g.counts.append(0)
      g.open += 1
      g.tasks.append(asyncio.create_task(self._read(g, ws, index)))

    await asyncio.gather(*(one() for _ in range(n)))
    return {
      "opened": n - sum(errors.values()),
      "errors": dict(errors),
      "secs": time.monotonic() - started,
    }

  async def _read(self, g: Group, ws: Any, index: int) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
      while True:
        frame = await ws.recv(decode=False)
        now = time.time()
        g.counts[index] += 1
        g.received += 1
        if g.first is None:
          g.first = now
        g.last = now
        if g.mode == "delay":
          t = produced_at(frame)
          if t is not None:
            g.delays.append(round((now - t) * 1000, 3))
            seen = g.events.get(t)
            if seen is None:
              g.events[t] = [now, now]
            else:
              seen[1] = now
    except ConnectionClosed as closed:
      code = closed.rcvd.code if closed.rcvd is not None else "none"
      g.closes[str(code)] += 1
    finally:
      g.open -= 1

  async def collect(
    self, group: str, expect: int, within_sec: float, idle_sec: float
  ) -> dict[str, Any]:
    """Wait until every socket got `expect` frames (or time/idleness ends it); return stats."""
    g = self.groups[group]
    started = time.monotonic()
    last_count, last_change = -1, started
    for _ in range(int(within_sec / 0.01) + 1):
      now = time.monotonic()
      if g.received != last_count:
        last_count, last_change = g.received, now
      if now - started >= within_sec or min(g.counts, default=expect) >= expect:
        break
      if now - last_change >= idle_sec:
        break
      await asyncio.sleep(0.01)
    cpu = _cpu_self() - g.cpu_mark
    return {
      "sockets": len(g.sockets),
      "open": g.open,
      "received": g.received,
      "complete": sum(1 for c in g.counts if c >= expect),
      "first": g.first,
      "last": g.last,
      "delays": g.delays if g.mode == "delay" else [],
      "events": [[t, lo, hi] for t, (lo, hi) in g.events.items()],
      "closes": dict(g.closes),
      "cpu_sec": round(cpu, 3),
    }

  async def reset(self, group: str) -> dict[str, Any]:
    """Forget what a group received."""
    self.groups[group].reset()
    return {"ok": True}

  async def close(self, group: str) -> dict[str, Any]:
    """Close a group's sockets."""
    g = self.groups.pop(group, None)
    if g is None:
      return {"closed": 0}
    await asyncio.gather(
      *(asyncio.wait_for(ws.close(), 5) for ws in g.sockets), return_exceptions=True
    )
    for task in g.tasks:
      task.cancel()
    await asyncio.gather(*g.tasks, return_exceptions=True)
    return {"closed": len(g.sockets)}


async def client_worker() -> None:
  """Answer one JSON command per stdin line with one JSON line on stdout, until EOF."""
  raise_fd_limit()
  worker = ClientWorker()
  loop = asyncio.get_running_loop()
  reader = asyncio.StreamReader(limit=1 << 20)
  await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
  ops: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "connect": worker.connect,
    "collect": worker.collect,
    "reset": worker.reset,
    "close": worker.close,
  }
  while True:
    line = await reader.readline()
    if not line:
      break
    command = json.loads(line)
    op = command.pop("op")
    try:
      reply = await ops[op](**command)
    except Exception as err:
      reply = {"error": f"{type(err).__name__}: {err}"}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
  for name in list(worker.groups):
    await worker.close(name)


# ---------------------------------------------------------------------- main: processes


class Clients:
  """The client subprocesses, driven with JSON-line commands."""

  def __init__(self, count: int) -> None:
    self.count = count
    self.procs: list[asyncio.subprocess.Process] = []

  async def start(self) -> None:
    """Start the client processes."""
    for i in range(self.count):
      log = _log_file(f"client{i}")
      proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.gateway", "--role", "client",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
        limit=1 << 26,
      )  # fmt: skip
      log.close()
      self.procs.append(proc)

  async def _call(
    self, proc: asyncio.subprocess.Process, command: dict[str, Any]
  ) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((json.dumps(command) + "\n").encode())
    await proc.stdin.drain()
    line = await asyncio.wait_for(proc.stdout.readline(), REPLY_TIMEOUT_SEC)
    if not line:
      raise RuntimeError(f"client process exited; see {LOGS}")
    reply = json.loads(line)
    if "error" in reply:
      raise RuntimeError(f"client process failed {command['op']}: {reply['error']}")
    return cast(dict[str, Any], reply)

  async def all(self, op: str, **args: Any) -> list[dict[str, Any]]:
    """Send one command to every client process; return their replies."""
    return await asyncio.gather(*(self._call(p, {"op": op, **args}) for p in self.procs))

  async def connect(
    self, group: str, url: str, total: int, mode: str, within_sec: float
  ) -> dict[str, Any]:
    """Spread `total` sockets over the processes; return opened count, errors and seconds."""
    shares = [total // self.count + (1 if i < total % self.count else 0) for i in range(self.count)]
    started = time.monotonic()
    replies = await asyncio.gather(
      *(
        self._call(
          p,
          {
            "op": "connect",
            "group": group,
            "url": url,
            "n": n,
            "mode": mode,
            "within_sec": within_sec,
          },
        )
        for p, n in zip(self.procs, shares, strict=True)
      )
    )
    errors: Counter[str] = Counter()
    for r in replies:
      errors.update(r["errors"])
    return {
      "opened": sum(r["opened"] for r in replies),
      "errors": dict(errors),
      "secs": round(time.monotonic() - started, 2),
    }

  async def stop(self) -> None:
    """Close stdin (the workers close their sockets and exit); kill any that linger."""
    for proc in self.procs:
      if proc.stdin is not None and not proc.stdin.is_closing():
        proc.stdin.close()
    for proc in self.procs:
      try:
        await asyncio.wait_for(proc.wait(), 15)
      except TimeoutError:
        proc.kill()
        await proc.wait()
    self.procs = []


class Server:
  """A server subprocess (the gateway under uvicorn, or the bare broadcast server)."""

  def __init__(
    self, name: str, cmd: list[str], port: int, env: dict[str, str], ready_path: str
  ) -> None:
    self.name, self.cmd, self.port, self.env, self.ready_path = name, cmd, port, env, ready_path
    self.proc: asyncio.subprocess.Process | None = None

  async def start(self) -> "Server":
    """Start the process and wait until it answers."""
    import httpx

    with _log_file(self.name) as log:
      self.proc = await asyncio.create_subprocess_exec(
        *self.cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
      )
    deadline = time.monotonic() + START_TIMEOUT_SEC
    async with httpx.AsyncClient() as http:
      while True:
        if self.proc.returncode is not None:
          raise RuntimeError(f"{self.name} exited; see {LOGS / (self.name + '.log')}")
        if time.monotonic() > deadline:
          raise RuntimeError(f"{self.name} not ready after {START_TIMEOUT_SEC:.0f}s")
        if await self._ready(http):
          return self
        await asyncio.sleep(0.1)

  async def _ready(self, http: Any) -> bool:
    import httpx

    if not self.ready_path:
      try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, self.port), 1)
      except (OSError, TimeoutError):
        return False
      writer.close()
      return True
    try:
      response = await http.get(f"http://{HOST}:{self.port}{self.ready_path}", timeout=2)
    except httpx.HTTPError:
      return False
    return bool(response.status_code == 200)

  @property
  def pid(self) -> int:
    """Return the process id."""
    assert self.proc is not None
    return self.proc.pid

  async def metrics(self) -> dict[str, float]:
    """Return the gateway's Prometheus counters (name -> value), empty when unavailable."""
    import httpx

    try:
      async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://{HOST}:{self.port}/metrics", timeout=5)).text
    except httpx.HTTPError:
      return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
      if line.startswith("bond_") and " " in line:
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
          values[name] = float(value)
    return values

  async def stop(self) -> None:
    """SIGTERM, wait, kill if needed."""
    proc, self.proc = self.proc, None
    if proc is None or proc.returncode is not None:
      return
    proc.send_signal(signal.SIGTERM)
    try:
      await asyncio.wait_for(proc.wait(), 20)
    except TimeoutError:
      proc.kill()
      await proc.wait()


def gateway_server(port: int, env: dict[str, str], name: str = "gateway") -> Server:
  """Return the gateway as `bond up` runs it (uvicorn factory, no per-message deflate)."""
  cmd = [
    sys.executable, "-m", "uvicorn", "bond.gateway.app:gateway", "--factory",
    "--host", HOST, "--port", str(port), "--ws-per-message-deflate", "false",
    "--ws-max-size", "4096", "--no-access-log", "--log-level", "warning",
  ]  # fmt: skip
  return Server(name, cmd, port, env, "/readyz")


def bare_server_process(port: int) -> Server:
  """Return the bare `websockets` broadcast server process."""
  cmd = [sys.executable, "-m", "bench.gateway", "--role", "bare", "--port", str(port)]
  return Server("bare", cmd, port, {**os.environ}, "")


# ---------------------------------------------------------------------- main: a deployment


class Deployment:
  """A private topic prefix with registered streams, their topics and Redis keys."""

  def __init__(self, bootstrap: str, redis_url: str) -> None:
    self.bootstrap, self.redis_url = bootstrap, redis_url
    self.prefix = f"bench-{uuid.uuid4().hex[:8]}."
    self.secret = secrets.token_hex(32)
    self.sids: list[str] = []

  def control_topic(self) -> Any:
    """Return the registry topic of this deployment."""
    from bond.topics import CONTROL_STREAMS

    return dataclasses.replace(CONTROL_STREAMS, name=self.prefix + "bond.control.streams")

  def stream_topic(self, sid: str) -> Any:
    """Return the topic of one stream in this deployment."""
    from bond.topics import stream_topic

    return dataclasses.replace(stream_topic(sid), name=f"{self.prefix}bond.stream.{sid}")

  async def streams(self, count: int) -> list[str]:
    """Register `count` streams (records + topics) before the gateways start."""
    from bond.registry import RegistryWriter, new_record
    from bond.schemas import StreamSpec
    from bond.topics.admin import TopicAdmin

    sids = [uuid.uuid4().hex[:16] for _ in range(count)]
    spec = StreamSpec.model_validate(
      {"sources": ["ccxt"], "symbols": ["BTC/USDT"], "interval_sec": 1}
    )
    async with TopicAdmin(self.bootstrap) as admin:
      await admin.ensure([self.control_topic(), *(self.stream_topic(s) for s in sids)])
    writer = RegistryWriter(self.bootstrap, topic=self.control_topic().name)
    await writer.start()
    try:
      for sid in sids:
        await writer.put(new_record(sid, "bench", spec, token_epoch=0))  # url() signs epoch 0
    finally:
      await writer.stop()
    self.sids += sids
    return sids

  def env(self, **extra: str) -> dict[str, str]:
    """Return the gateway process environment."""
    env = {k: v for k, v in os.environ.items() if k != "BOND_SECRET_PREVIOUS"}
    env.update(
      KAFKA_BOOTSTRAP=self.bootstrap,
      REDIS_URL=self.redis_url,
      BOND_TOPIC_PREFIX=self.prefix,
      BOND_SECRET=self.secret,
      BOND_ENV="dev",
      # Every bench socket shares one address and, per stream, one token.
      BOND_WS_MAX_PER_TOKEN="1000000",
      BOND_WS_MAX_PER_IP="1000000",
      PYTHONUNBUFFERED="1",
      **extra,
    )
    return env

  def url(self, port: int, sid: str, from_: str | None = None) -> str:
    """Return a stream's WebSocket URL with a fresh token."""
    from bond.tokens import sign

    query = f"token={sign(sid, 3600, secret=self.secret)}"
    return f"ws://{HOST}:{port}/ws/{sid}?{query}" + (f"&from={from_}" if from_ else "")

  async def cleanup(self) -> None:
    """Delete this deployment's topics and Redis keys (best effort, bounded)."""
    import redis.asyncio as aioredis

    from bond.wire import metrics_key, stream_key

    client = aioredis.from_url(self.redis_url, socket_timeout=5)
    try:
      keys = [k for s in self.sids for k in (stream_key(s), metrics_key(s))]
      if keys:
        await asyncio.wait_for(client.delete(*keys), 10)
    except Exception as err:
      print(f"  (cleanup: Redis keys not deleted: {err})")
    finally:
      await client.aclose()
    await drop_topics(self.bootstrap, (self.prefix,))  # its control and stream topics


# ---------------------------------------------------------------------- the measurements


def _rate(replies: list[dict[str, Any]]) -> dict[str, Any]:
  firsts = [r["first"] for r in replies if r["first"] is not None]
  lasts = [r["last"] for r in replies if r["last"] is not None]
  received = sum(r["received"] for r in replies)
  span = (max(lasts) - min(firsts)) if firsts and lasts else 0.0
  return {
    "received": received,
    "span_sec": round(span, 4),
    "deliveries_per_sec": round(received / span) if span > 0 else 0,
    "complete_sockets": sum(r["complete"] for r in replies),
    "closes": dict(sum((Counter(r["closes"]) for r in replies), Counter())),
    "client_cpu_sec": round(sum(r["cpu_sec"] for r in replies), 2),
  }


async def fanout_throughput(
  plan: Plan, dep: Deployment, clients: Clients, sid: str, log: Callable[[str], None]
) -> dict[str, Any]:
  """Alternate bursts through the bare server and the gateway to the same N subscribers."""
  from aiokafka import AIOKafkaProducer
  from websockets.asyncio.client import connect

  n, m = plan.fanout_subscribers, plan.fanout_messages
  bare = await bare_server_process(free_port()).start()
  # The burst arrives faster than sockets drain it: the per-socket queue must hold it all,
  # or the gateway rightly closes the sockets with 4408 (its default is 256 frames).
  queue = str(m + 64)
  gateway = await gateway_server(
    free_port(), dep.env(BOND_WS_QUEUE=queue), "gateway-fanout"
  ).start()
  producer = AIOKafkaProducer(
    bootstrap_servers=dep.bootstrap, linger_ms=5, max_batch_size=512 << 10
  )
  await producer.start()
  frames = Frames(sid, (int(time.time() * 1000) // STEP_MS) * STEP_MS)
  topic = dep.stream_topic(sid).name
  rounds: dict[str, list[dict[str, Any]]] = {"bare": [], "gateway": []}
  try:
    connected = {
      "bare": await clients.connect("bare", f"ws://{HOST}:{bare.port}/sub", n, "count", 60),
      "gateway": await clients.connect("gateway", dep.url(gateway.port, sid), n, "count", 60),
    }
    log(
      f"  connected {connected['bare']['opened']} to bare, {connected['gateway']['opened']} to gateway"
    )
    for target in ("bare", "gateway"):
      if connected[target]["opened"] != n:
        raise RuntimeError(f"only {connected[target]['opened']}/{n} sockets opened to {target}")
    await asyncio.sleep(1.0)  # let the gateway's sessions subscribe to the fan-out
    publisher = await connect(f"ws://{HOST}:{bare.port}/pub", compression=None, ping_interval=None)
    try:
      for i in range(plan.fanout_rounds):
        for target in ("bare", "gateway"):
          await clients.all("reset", group=target)
          server = bare if target == "bare" else gateway
          cpu0 = cpu_seconds(server.pid)
          batch = [frames.make()[1] for _ in range(m)]
          if target == "bare":
            for frame in batch:
              await publisher.send(frame)
          else:
            futures = [await producer.send(topic, f.encode(), key=sid.encode()) for f in batch]
            await asyncio.gather(*futures)
          replies = await clients.all(
            "collect",
            group=target,
            expect=m,
            within_sec=plan.collect_timeout_sec,
            idle_sec=plan.idle_sec,
          )
          result = _rate(replies)
          result["server_cpu_sec"] = round(cpu_seconds(server.pid) - cpu0, 2)
          rounds[target].append(result)
          log(
            f"  round {i + 1} {target:>7}: {result['deliveries_per_sec']:>7} deliveries/s "
            f"({result['received']}/{n * m} in {result['span_sec']:.2f}s, "
            f"server cpu {result['server_cpu_sec']}s, client cpu {result['client_cpu_sec']}s)"
          )
    finally:
      await publisher.close()
    metrics = await gateway.metrics()
  finally:
    await clients.all("close", group="bare")
    await clients.all("close", group="gateway")
    await producer.stop()
    await gateway.stop()
    await bare.stop()
  best = {t: max(r["deliveries_per_sec"] for r in rs) for t, rs in rounds.items()}
  ratio = best["gateway"] / best["bare"] if best["bare"] else 0.0
  per_cpu = {
    t: round(sum(r["received"] for r in rs) / max(1e-9, sum(r["server_cpu_sec"] for r in rs)))
    for t, rs in rounds.items()
  }
  complete = all(r["received"] == n * m for rs in rounds.values() for r in rs)
  # Share of one core each server used while its burst was delivered: well under 1.0 means
  # the clients, not the server, set the wall-clock rate.
  busy = {
    t: round(max(r["server_cpu_sec"] / max(1e-9, r["span_sec"]) for r in rs), 2)
    for t, rs in rounds.items()
  }
  return {
    "subscribers": n,
    "messages_per_round": m,
    "frame_bytes": len(frames.make()[1]),
    "rounds": plan.fanout_rounds,
    "gateway_ws_queue": int(queue),
    "connect": connected,
    "bare": rounds["bare"],
    "gateway": rounds["gateway"],
    "bare_deliveries_per_sec": best["bare"],
    "gateway_deliveries_per_sec": best["gateway"],
    "ratio": round(ratio, 3),
    "deliveries_per_server_cpu_sec": per_cpu,
    "ratio_per_server_cpu_sec": round(per_cpu["gateway"] / max(1, per_cpu["bare"]), 3),
    "server_us_per_delivery": {t: round(1e6 / max(1, v), 2) for t, v in per_cpu.items()},
    "server_core_share_during_burst": busy,
    "client_bound": max(busy.values()) < 0.9,
    "all_delivered": complete,
    "gateway_metrics": {k: v for k, v in metrics.items() if "messages_out" in k or "dropped" in k},
  }


Publish = Callable[[str], Awaitable[None]]


class _Direct:
  """A plain Kafka consumer of the stream topic in this process: the Kafka hop alone."""

  def __init__(self, bootstrap: str, topic: str) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    self.consumer = AIOKafkaConsumer(
      bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    self.tp = TopicPartition(topic, 0)
    self.delays_ms: list[float] = []

  async def start(self) -> None:
    """Connect and start at the end of the topic."""
    await self.consumer.start()
    self.consumer.assign([self.tp])
    await self.consumer.seek_to_end(self.tp)
    await self.consumer.position(self.tp)

  async def read(self, until: float) -> None:
    """Read (and time) records until the monotonic time `until`."""
    for _ in range(10_000):
      left = until - time.monotonic()
      if left <= 0:
        return
      batches = await self.consumer.getmany(timeout_ms=max(1, int(left * 1000)))
      now = time.time()
      for msgs in batches.values():
        for msg in msgs:
          t = produced_at(msg.value or b"")
          if t is not None:
            self.delays_ms.append((now - t) * 1000)

  async def stop(self) -> None:
    """Close the consumer."""
    await self.consumer.stop()


async def delivery_delay(
  plan: Plan,
  clients: Clients,
  target: str,
  url: str,
  publish: Publish,
  server: Server,
  frames: Frames,
  log: Callable[[str], None],
  direct: _Direct | None = None,
) -> dict[str, Any]:
  """Connect many subscribers to one stream, publish paced events, measure receive - produce."""
  n, events = plan.delay_subscribers, plan.delay_events
  # A few of the n sockets are read by this (nearly idle) process: their delays show how
  # much of the rest is the busy client processes' own queueing.
  probes = ClientWorker()
  n_probes = min(PROBES, n // 10)
  group = f"delay-{target}"

  async def every(op: str, **args: Any) -> list[dict[str, Any]]:
    fn = getattr(probes, op)
    return [*await clients.all(op, group=group, **args), await fn(group=group, **args)]

  try:
    connected = await clients.connect(group, url, n - n_probes, "delay", 120)
    probed = await probes.connect(group, url, n_probes, "delay", 60)
    connected["opened"] += probed["opened"]
    log(
      f"  {target}: connected {connected['opened']}/{n} in {connected['secs']}s "
      f"{connected['errors'] or ''}"
    )
    if connected["opened"] != n:
      raise RuntimeError(f"only {connected['opened']}/{n} sockets opened to {target}")
    # Warm-up events until every socket got one: every session is subscribed.
    subscribed = 0
    for _ in range(20):
      await publish(frames.make()[1])
      warm = await every("collect", expect=1, within_sec=2, idle_sec=2)
      subscribed = sum(r["complete"] for r in warm)
      if subscribed == n:
        break
    if subscribed != n:
      raise RuntimeError(f"only {subscribed}/{n} sockets got the warm-up events from {target}")
    if direct is not None:
      await direct.start()
    await asyncio.sleep(0.5)  # stragglers of the warm-up land before the reset
    await every("reset")
    cpu0 = cpu_seconds(server.pid)
    started = time.monotonic()
    for i in range(events):
      due = started + i / plan.delay_rate
      if direct is not None:
        await direct.read(due)
      await asyncio.sleep(max(0.0, due - time.monotonic()))
      await publish(frames.make(produced_at=time.time())[1])
    replies = await every(
      "collect", expect=events, within_sec=plan.collect_timeout_sec, idle_sec=plan.idle_sec
    )
    server_cpu = cpu_seconds(server.pid) - cpu0
    elapsed = time.monotonic() - started
  finally:
    with contextlib.suppress(Exception):
      await clients.all("close", group=group)
    await probes.close(group)
    if direct is not None:
      await direct.stop()
  delays = [d for r in replies for d in r["delays"]]
  received = sum(r["received"] for r in replies)
  closes = sum((Counter(r["closes"]) for r in replies), Counter())
  spans: dict[float, list[float]] = {}
  for r in replies:
    for t, lo, hi in r["events"]:
      span = spans.setdefault(t, [lo, hi])
      span[0], span[1] = min(span[0], lo), max(span[1], hi)
  first_ms = [(lo - t) * 1000 for t, (lo, _) in spans.items()]
  spread_ms = [(hi - lo) * 1000 for lo, hi in spans.values()]
  direct_ms = direct.delays_ms if direct is not None else []
  result = {
    "subscribers": n,
    "events": events,
    "events_per_sec": plan.delay_rate,
    "connect": connected,
    "expected": n * events,
    "received": received,
    "closes": dict(closes),
    "p50_ms": _r(percentile(delays, 50)),
    "p90_ms": _r(percentile(delays, 90)),
    "p99_ms": _r(percentile(delays, 99)),
    "p999_ms": _r(percentile(delays, 99.9)),
    "max_ms": _r(max(delays) if delays else None),
    "per_event": {
      "first_socket_p50_ms": _r(percentile(first_ms, 50)),
      "first_socket_max_ms": _r(max(first_ms) if first_ms else None),
      "first_to_last_socket_p50_ms": _r(percentile(spread_ms, 50)),
      "first_to_last_socket_max_ms": _r(max(spread_ms) if spread_ms else None),
    },
    "kafka_direct_consumer_p50_ms": _r(percentile(direct_ms, 50)),
    "kafka_direct_consumer_max_ms": _r(max(direct_ms) if direct_ms else None),
    "probe_sockets": n_probes,
    "probe_p50_ms": _r(percentile(replies[-1]["delays"], 50)),
    "probe_p99_ms": _r(percentile(replies[-1]["delays"], 99)),
    "server_cpu_ms_per_event": _r(server_cpu * 1000 / max(1, events)),
    "server_core_share": round(server_cpu / max(1e-9, elapsed), 2),
    "client_cpu_sec": round(sum(r["cpu_sec"] for r in replies[:-1]), 2),
    "seconds": round(elapsed, 1),
  }
  log(
    f"  {target}: {received}/{n * events} delivered; delay p50 {result['p50_ms']} ms, "
    f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms; per event: first socket "
    f"{result['per_event']['first_socket_p50_ms']} ms, first-to-last "
    f"{result['per_event']['first_to_last_socket_p50_ms']} ms (p50); {n_probes} probe "
    f"sockets in an idle process p99 {result['probe_p99_ms']} ms; Kafka alone p50 "
    f"{result['kafka_direct_consumer_p50_ms']} ms; server CPU "
    f"{result['server_cpu_ms_per_event']} ms per event"
  )
  return result


async def delay_at_scale(
  plan: Plan,
  dep: Deployment,
  clients: Clients,
  gateway: Server,
  sid: str,
  log: Callable[[str], None],
) -> dict[str, Any]:
  """Measure delivery delay through the gateway, then through the bare server, same clients."""
  from aiokafka import AIOKafkaProducer
  from websockets.asyncio.client import connect

  topic = dep.stream_topic(sid).name
  first_seq = (int(time.time() * 1000) // STEP_MS) * STEP_MS
  producer = AIOKafkaProducer(bootstrap_servers=dep.bootstrap, linger_ms=0)
  await producer.start()

  async def to_kafka(frame: str) -> None:
    await producer.send(topic, frame.encode(), key=sid.encode())

  try:
    result = await delivery_delay(
      plan,
      clients,
      "gateway",
      dep.url(gateway.port, sid),
      to_kafka,
      gateway,
      Frames(sid, first_seq),
      log,
      _Direct(dep.bootstrap, topic),
    )
  finally:
    await producer.stop()
  bare = await bare_server_process(free_port()).start()
  try:
    async with connect(
      f"ws://{HOST}:{bare.port}/pub", compression=None, ping_interval=None
    ) as publisher:

      async def to_bare(frame: str) -> None:
        await publisher.send(frame)

      result["bare_baseline"] = await delivery_delay(
        plan,
        clients,
        "bare",
        f"ws://{HOST}:{bare.port}/sub",
        to_bare,
        bare,
        Frames(sid, first_seq),
        log,
      )
  finally:
    await bare.stop()
  gateway_ms = result["server_cpu_ms_per_event"] or 0.0
  bare_ms = result["bare_baseline"]["server_cpu_ms_per_event"] or 0.0
  result["server_cpu_ratio_bare_over_gateway"] = (
    round(bare_ms / gateway_ms, 3) if gateway_ms else None
  )
  return result


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
    return _r(percentile([r[key] for r in rows], q))

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


def _r(value: float | None) -> float | None:
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


async def run(quick: bool, out: Path) -> int:
  """Run the three measurements and write the JSON results."""
  from bench.stack import ensure_infra

  plan = QUICK if quick else FULL
  # aiokafka warns while a topic made a moment ago gets its leader; the retries succeed.
  logging.getLogger("aiokafka").setLevel(logging.ERROR)
  started = time.monotonic()
  fds = raise_fd_limit()
  if fds < plan.delay_subscribers + 1024:
    print(f"the open-files limit is {fds}; {plan.delay_subscribers + 1024} are needed (ulimit -n)")
    return 2
  info = machine()
  print(
    f"gateway benchmark ({'quick' if quick else 'full'}; {info['cores']} cores, fd limit {fds})"
  )

  def log(line: str) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {line}", flush=True)

  async with ensure_infra() as (bootstrap, redis_url):
    log(f"Kafka {bootstrap}, Redis {redis_url}")
    dep = Deployment(bootstrap, redis_url)
    clients = Clients(CLIENT_PROCS)
    try:
      fan_sid, delay_sid, replay_sid = await dep.streams(3)
      await clients.start()
      log(f"1/3 deliveries/s: {plan.fanout_subscribers} subscribers, bare server vs gateway")
      fan = await fanout_throughput(plan, dep, clients, fan_sid, log)
      gateway = await gateway_server(free_port(), dep.env()).start()
      try:
        log(f"2/3 delivery delay: {plan.delay_subscribers} subscribers on one stream")
        delay = await delay_at_scale(plan, dep, clients, gateway, delay_sid, log)
        log(f"3/3 first replayed event: {plan.replay_connects} connects with from=now-60s")
        replay = await replay_latency(plan, dep, gateway, replay_sid, fan_sid, log)
      finally:
        await gateway.stop()
    finally:
      await clients.stop()
      await dep.cleanup()
  result = {
    "benchmark": "gateway",
    "date": datetime.now(UTC).isoformat(timespec="seconds"),
    "quick": quick,
    "commit": git_commit(),
    "machine": info,
    "plan": dataclasses.asdict(plan),
    "client_processes": CLIENT_PROCS,
    "fanout": fan,
    "delay": delay,
    "replay": replay,
    "targets": {
      "ratio_vs_bare_min": RATIO_TARGET,
      "p99_ms_at_5000_max": P99_TARGET_MS,
      "replay_first_frame_ms": None,
    },
    "pass": {
      "ratio": fan["ratio"] >= RATIO_TARGET,
      "ratio_per_server_cpu_sec": fan["ratio_per_server_cpu_sec"] >= RATIO_TARGET,
      "p99_at_5000": (
        None
        if delay["subscribers"] < 5000
        else (
          delay["p99_ms"] is not None
          and delay["p99_ms"] < P99_TARGET_MS
          and delay["received"] == delay["expected"]
        )
      ),
      "replay": None,
    },
    "seconds": round(time.monotonic() - started, 1),
    "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
  }
  write_json(out, result)
  print()
  for line in summary(result):
    print(line)
  print(f"written {out}")
  return 0


def summary(result: dict[str, Any]) -> Iterator[str]:
  """Yield the short human summary."""
  fan, delay, replay, ok = result["fanout"], result["delay"], result["replay"], result["pass"]
  mark = {True: "PASS", False: "FAIL", None: "----"}
  yield (
    f"{mark[ok['ratio']]} deliveries/s with {fan['subscribers']} subscribers: gateway "
    f"{fan['gateway_deliveries_per_sec']}, bare websockets {fan['bare_deliveries_per_sec']}, "
    f"ratio {fan['ratio']} (target >= {RATIO_TARGET})"
  )
  yield (
    f"{mark[ok['ratio_per_server_cpu_sec']]} deliveries per server CPU-second: gateway "
    f"{fan['deliveries_per_server_cpu_sec']['gateway']}, bare "
    f"{fan['deliveries_per_server_cpu_sec']['bare']}, ratio {fan['ratio_per_server_cpu_sec']}"
    + (
      " (the wall-clock rates above are bound by the clients: the servers used "
      f"{fan['server_core_share_during_burst']} of a core)"
      if fan["client_bound"]
      else ""
    )
  )
  yield (
    f"{mark[ok['p99_at_5000']]} delay with {delay['subscribers']} subscribers: p50 "
    f"{delay['p50_ms']} ms, p99 {delay['p99_ms']} ms, max {delay['max_ms']} ms "
    f"({delay['received']}/{delay['expected']} delivered; target p99 < {P99_TARGET_MS:.0f} ms"
    f"{' at 5,000 subscribers: not measured by --quick' if delay['subscribers'] < 5000 else ''})"
  )
  bare = delay["bare_baseline"]
  yield (
    f"     same clients on the bare server: p50 {bare['p50_ms']} ms, p99 {bare['p99_ms']} ms; "
    f"server CPU per event: gateway {delay['server_cpu_ms_per_event']} ms, bare "
    f"{bare['server_cpu_ms_per_event']} ms"
  )
  yield (
    f"{mark[None]} first replayed event (from=now-60s, {replay['ring_windows']} windows): "
    f"p50 {replay['first_frame_p50_ms']} ms, p99 {replay['first_frame_p99_ms']} ms "
    f"over {replay['connects']} connects; first listener of a stream on a busy gateway: p50 "
    f"{replay['cold_first_frame_p50_ms']} ms, max {replay['cold_first_frame_max_ms']} ms (no target)"
  )


def main() -> int:
  """Parse the command line and run a role."""
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--quick", action="store_true", help="a smaller run (under a minute)")
  parser.add_argument("--out", type=Path, default=RESULTS / "gateway.json")
  parser.add_argument(
    "--role", choices=["main", "bare", "client"], default="main", help=argparse.SUPPRESS
  )
  parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.role == "bare":
    raise_fd_limit()
    run_loop(bare_server(args.port))
    return 0
  if args.role == "client":
    run_loop(client_worker())
    return 0
  return int(run_loop(run(args.quick, args.out)))


if __name__ == "__main__":
  sys.exit(main())
