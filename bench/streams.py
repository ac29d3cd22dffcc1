"""Benchmark how many live streams one worker sustains on the sim stack.

`python -m bench.streams [--quick] [--label NAME]` writes bench/results/streams.json (or
streams-NAME.json). A private deployment (own topic prefix and Faust app id) on the bench's
Kafka and Redis runs the sim exchange, one Faust worker (feeds on), the REST API and the
gateway, each in its own process. Its streams:

- a mix over 20 sim symbols, 2-6 s intervals, half of them with tweets (written to the
  registry as the REST API would, their topics created beforehand as the API does);
- five 1 s streams (BTC, ETH, SOL, XRP, DOGE against USDT) created through the REST API
  and read by WebSocket clients through the gateway; every window's lag is its arrival time
  minus its end (`seq`); for BTC/USDT also its record time in the stream topic minus its
  end, and where that time goes (the first trade after the end, its raw record, the pane).

The mix is ramped (25, 50, 100, 200, 500, 1,000 streams). At each step, after a warm-up,
the bench measures the 1 s streams' lag (p50/p99 over 200 windows: five streams for 40 s;
nearest-rank p99 over fewer than 101 windows is their worst one), their windows that are
missing, have no trade or say `complete: false`, the `bond.panes` consumer lag of the worker's group, and
the worker's CPU (in % of one core; per stream with its feed host's, the child process that
runs its feeds). A step is sustained when every window
of the 1 s streams arrived, complete and with trades, at p99 under 100 ms. The ramp stops
at the first step that is not (the worker would only fall further behind). Every wait is
bounded. BOND_MAX_STREAMS is raised for the deployment (the default allows 5).
"""

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.gateway.common import cpu_seconds
from bench.stack import ensure_infra, free_port, write_result
from bond.agents.state import partition_for
from bond.compiler import stream_id as make_stream_id
from bond.registry import RegistryWriter, new_record
from bond.schemas import StreamSpec
from bond.sim.exchange import START_PRICES
from bond.topics import CATALOG, PANES, RAW_TOPICS, stream_topic
from bond.topics.admin import TopicAdmin, drop_topics
from bond.wire import metrics_key, project_streams_key, stream_key

ROOT = Path(__file__).resolve().parent.parent
MIX_SYMBOLS = [f"{base}/USDT" for base in list(START_PRICES)[:20]]
STEPS = (25, 50, 100, 200, 500, 1000)
QUICK_STEPS = (25, 100, 500)
# The measured 1 s streams (part of the live count): five, so that a step's p99 rests on
# 200 windows rather than being the worst of 20.
MEASURED_SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT")
P99_MAX_MS = 100.0
START_TIMEOUT_SEC = 180.0
STREAMS_SEEN_TIMEOUT_SEC = 120.0
TOPIC_BATCH = 100


def quantile(values: list[float], q: float) -> float | None:
  """Return the q-quantile (0..1) of values by nearest rank, or None when empty."""
  if not values:
    return None
  ordered = sorted(values)
  return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 1)


def machine_busy_sec() -> tuple[float, float]:
  """Return the CPU seconds the machine's cores spent busy (not idle) since boot, and of those
  the time stolen by the hypervisor (a VM's vCPU waiting for a host CPU)."""
  with open("/proc/stat") as stat:
    fields = [int(x) for x in stat.readline().split()[1:]]
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
  steal = fields[7] if len(fields) > 7 else 0
  tick = os.sysconf("SC_CLK_TCK")
  return (sum(fields[:8]) - idle) / tick, steal / tick


def mix_spec(i: int) -> dict[str, Any]:
  """Return the spec of the i-th stream of the mix: 20 symbols, 2-6 s, every other with tweets."""
  sources: list[dict[str, Any]] = [{"type": "ccxt"}]
  if i % 2:
    sources.append({"type": "twitter"})
  return {
    "sources": sources,
    "symbols": [MIX_SYMBOLS[i % len(MIX_SYMBOLS)]],
    "interval_sec": 2 + (i // len(MIX_SYMBOLS)) % 5,
    "exchanges": ["binance"],
  }


class Proc:
  """One platform process (sim, worker, API, gateway) with its log file."""

  def __init__(self, name: str, cmd: list[str], env: dict[str, str], logs: Path) -> None:
    self.name = name
    self.log = logs / f"{name}.log"
    self.proc = subprocess.Popen(
      cmd, env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, cwd=logs, start_new_session=True,
    )  # fmt: skip

  def wait_ready(self, url: str, timeout_sec: float = START_TIMEOUT_SEC) -> None:
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
      if self.proc.poll() is not None:
        raise RuntimeError(f"{self.name} exited; see {self.log}")
      with contextlib.suppress(httpx.HTTPError):
        if httpx.get(url, timeout=1).status_code == 200:
          return
      time.sleep(0.25)
    raise RuntimeError(f"{self.name} not ready in {timeout_sec:.0f}s; see {self.log}")

  def stop(self) -> None:
    if self.proc.poll() is None:
      os.killpg(self.proc.pid, signal.SIGTERM)
      try:
        self.proc.wait(30)
      except subprocess.TimeoutExpired:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class Platform:
  """A private deployment: topic prefix, app id, sim, worker, REST API and gateway."""

  def __init__(self, bootstrap: str, redis_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    self.prefix = f"bench-{tag}."
    self.group = f"bond-bench-{tag}"
    self.bootstrap, self.redis_url = bootstrap, redis_url
    self.home = ROOT / ".bond" / "bench" / f"streams-{tag}"
    self.home.mkdir(parents=True, exist_ok=True)
    self.sim_port, self.api_port, self.ws_port = free_port(), free_port(), free_port()
    self.worker_port = free_port()
    self.env = {
      **os.environ,
      "KAFKA_BOOTSTRAP": bootstrap,
      "REDIS_URL": redis_url,
      "BOND_TOPIC_PREFIX": self.prefix,
      "BOND_APP_ID": self.group,
      "BOND_ENV": "dev",
      "BOND_API_KEYS": "",
      "BOND_MARKET": "sim",
      "BOND_SIM_PORT": str(self.sim_port),
      "BOND_FEEDS": "on",
      "BOND_EXCHANGES": "binance",
      "BOND_MAX_STREAMS": "100000",
      "BOND_HOME": str(self.home),
      "WS_HOST": f"127.0.0.1:{self.ws_port}",
      "PYTHONUNBUFFERED": "1",
    }
    self.procs: dict[str, Proc] = {}
    self.sids: list[str] = []
    self.feeds: set[tuple[str, str]] = set()

  async def start(self) -> None:
    # (The worker creates its tables' changelog topics itself before joining: agents/ready.py.)
    async with TopicAdmin(self.bootstrap) as admin:
      await admin.ensure([dataclasses.replace(t, name=self.prefix + t.name) for t in CATALOG])
    py = sys.executable
    faust = str(Path(py).parent / "faust")
    uv = [py, "-m", "uvicorn", "--host", "127.0.0.1", "--no-access-log", "--factory"]
    plan = [
      ("sim", [py, "-m", "bond.sim", "--port", str(self.sim_port)],
       f"http://127.0.0.1:{self.sim_port}/api/v3/ping"),
      ("worker", [faust, "-A", "bond.agents.app", "worker", "-l", "warn", "--web-port", str(self.worker_port)],
       f"http://127.0.0.1:{self.worker_port}/bond/ready"),
      ("api", [*uv, "bond.gateway.app:api", "--port", str(self.api_port)],
       f"http://127.0.0.1:{self.api_port}/readyz"),
      ("gateway", [*uv, "bond.gateway.app:gateway", "--port", str(self.ws_port), "--ws-per-message-deflate", "false"],
       f"http://127.0.0.1:{self.ws_port}/healthz"),
    ]  # fmt: skip
    for name, cmd, url in plan:
      proc = self.procs[name] = Proc(name, cmd, self.env, self.home)
      await asyncio.to_thread(proc.wait_ready, url)

  def pids(self) -> dict[str, int]:
    """Return the pid of each part on the machine: the platform's, Kafka's and Redis's."""
    out = {name: proc.proc.pid for name, proc in self.procs.items()}
    host_of_worker = f"--parent\0{out['worker']}\0".encode()
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
      try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
      except OSError:
        continue
      if b"bond.agents.feedhost" in cmd and host_of_worker in cmd + b"\0":
        out["feed_host"] = int(pid)  # the worker's child that runs its feeds
      elif b"kafka.Kafka" in cmd:
        out["kafka"] = int(pid)
      elif cmd.startswith(b"redis-server") or b"/redis-server" in cmd.split(b"\0")[0]:
        out["redis"] = int(pid)
    return out

  async def measured_streams(self) -> list[tuple[str, str]]:
    """Create the 1 s streams through the REST API; return their ids and WebSocket URLs."""
    made = [await self._measured_stream(symbol) for symbol in MEASURED_SYMBOLS]
    await self._wait_worker(len(made))
    return made

  async def _measured_stream(self, symbol: str) -> tuple[str, str]:
    spec = {"sources": [{"type": "ccxt"}], "symbols": [symbol], "interval_sec": 1,
            "exchanges": ["binance"]}  # fmt: skip
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.api_port}", timeout=30) as http:
      resp = await http.post("/v1/streams", json={"spec": spec})
      if resp.status_code not in (200, 201):
        raise RuntimeError(f"creating a 1 s stream: {resp.status_code} {resp.text[:300]}")
      body = resp.json()
    self.sids.append(body["stream_id"])
    self.feeds.add(("ccxt", symbol))
    return body[
      "stream_id"
    ], f"ws://127.0.0.1:{self.ws_port}/ws/{body['stream_id']}?token={body['token']}"

  async def add_mix(self, total: int) -> None:
    """Grow the mix to `total` streams (registry records, their topics created first)."""
    start = len(self.sids) - len(MEASURED_SYMBOLS)  # the measured streams are not in the mix
    new: list[tuple[str, str, StreamSpec]] = []
    for i in range(start, total):
      owner = f"{self.prefix}{i}"
      spec = StreamSpec.model_validate(mix_spec(i))
      new.append((make_stream_id(spec, owner), owner, spec))
    async with TopicAdmin(self.bootstrap) as admin:
      for k in range(0, len(new), TOPIC_BATCH):
        topics = [stream_topic(sid) for sid, _o, _s in new[k : k + TOPIC_BATCH]]
        await admin.ensure([dataclasses.replace(t, name=self.prefix + t.name) for t in topics])
    writer = RegistryWriter(self.bootstrap, topic=self.prefix + "bond.control.streams")
    await writer.start()
    try:
      now_ms = int(time.time() * 1000)
      for sid, owner, spec in new:
        await writer.put(new_record(sid, owner, spec, now_ms=now_ms))
        self.sids.append(sid)
      # One feed per (source, symbol): the worker's own feed ids are its business.
      for _sid, _owner, spec in new:
        self.feeds |= {(src.type, spec.symbols[0]) for src in spec.sources}
    finally:
      await writer.stop()
    await self._wait_worker(len(self.sids))

  async def _wait_worker(self, streams: int) -> None:
    """Wait until the worker knows `streams` streams and runs every feed they need."""
    base = f"http://127.0.0.1:{self.worker_port}/bond"
    deadline = time.monotonic() + STREAMS_SEEN_TIMEOUT_SEC
    async with httpx.AsyncClient(timeout=5) as http:
      while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError):
          ready = (await http.get(f"{base}/ready")).json()
          running = (await http.get(f"{base}/stats")).json()["feeds"]["running"]
          if ready.get("streams", 0) >= streams and len(running) >= len(self.feeds):
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"the worker did not load {streams} streams and start their feeds in time")

  async def worker_stats(self) -> dict[str, Any]:
    """Return the worker's /bond/stats ({} when it does not answer)."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
      async with httpx.AsyncClient(timeout=5) as http:
        return dict((await http.get(f"http://127.0.0.1:{self.worker_port}/bond/stats")).json())
    return {}

  async def panes_lag(self) -> int | None:
    """Return the bond.panes records the worker's stage 2 has not read yet (its /bond/stats)."""
    lag = (await self.worker_stats()).get("stage2_panes_lag")
    return None if lag is None else int(lag)

  async def cleanup(self) -> None:
    for proc in reversed(list(self.procs.values())):
      proc.stop()
    client = aioredis.from_url(self.redis_url)
    try:
      for k in range(0, len(self.sids), 500):
        part = self.sids[k : k + 500]
        await client.delete(*[stream_key(s) for s in part], *[metrics_key(s) for s in part])
      # The bench's Redis is its own: a project's reservations would refuse the next run's
      # identical 1 s stream for a while ("another request is creating this stream").
      async for key in client.scan_iter(match=project_streams_key("*")):
        await client.delete(key)
    finally:
      await client.aclose()
    await drop_topics(self.bootstrap, (self.prefix, self.group + "-"))


@dataclasses.dataclass
class Seen:
  """Windows of a 1 s stream: when each reached the client (and for BTC/USDT, its
  stream-topic record and the path's legs)."""

  ws: dict[int, tuple[int, dict[str, Any]]] = dataclasses.field(default_factory=dict)
  kafka: dict[int, int] = dataclasses.field(default_factory=dict)
  errors: list[str] = dataclasses.field(default_factory=list)
  # Where a window's lag goes, per window end (ms after it): the first BTC trade at or
  # after the end (the sim's own timestamp; it closes the feed's last pane), that trade's
  # raw record, the closed pane's bond.panes record.
  first_trade: dict[int, int] = dataclasses.field(default_factory=dict)
  raw_record: dict[int, int] = dataclasses.field(default_factory=dict)
  pane_record: dict[int, int] = dataclasses.field(default_factory=dict)


async def read_ws(url: str, seen: Seen) -> None:
  """Read a 1 s stream through the gateway forever, reconnecting (the bench cancels it)."""
  from websockets.asyncio.client import connect

  while True:
    try:
      async with connect(url, open_timeout=10, compression=None, max_size=2**20) as ws:
        async for frame in ws:
          now_ms = int(time.time() * 1000)
          event = json.loads(frame)
          seen.ws.setdefault(int(event["seq"]), (now_ms, event))
    except Exception as err:  # recorded; the step's verdict shows the gap
      seen.errors.append(f"{time.strftime('%H:%M:%S')} {err!r}")
      await asyncio.sleep(0.5)


async def read_topic(bootstrap: str, topic: str, seen: Seen) -> None:
  """Read the 1 s stream's Kafka topic: each window's record time."""
  consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest")
  await consumer.start()
  try:
    async for msg in consumer:
      seen.kafka.setdefault(int(json.loads(msg.value)["seq"]), msg.timestamp)
  finally:
    await consumer.stop()


async def read_path(bootstrap: str, prefix: str, sid: str, seen: Seen) -> None:
  """Read the BTC trades of the raw topic and the 1 s stream's panes: each window's breakdown.

  Only the two partitions that hold them are read, and a pane record is decoded only when it
  names the feed: the bench shares the machine's two cores with what it measures.
  """
  raw_topic, panes_topic = prefix + RAW_TOPICS["ccxt"].name, prefix + PANES.name
  feed = "ccxt|binance|BTC/USDT"
  raw_tp = TopicPartition(raw_topic, partition_for(b"BTC/USDT", RAW_TOPICS["ccxt"].partitions))
  panes_tp = TopicPartition(panes_topic, partition_for(sid, PANES.partitions))
  consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
  await consumer.start()
  try:
    consumer.assign([raw_tp, panes_tp])
    await consumer.seek_to_end(raw_tp, panes_tp)
    async for msg in consumer:
      if msg.topic == raw_topic:
        if msg.key != b"BTC/USDT":
          continue
        value = json.loads(msg.value)
        if value.get("heartbeat") or value.get("exchange") != "binance":
          continue
        end = int(value["ts"]) // 1000 * 1000  # the last window end at or before the trade
        if end not in seen.first_trade:
          seen.first_trade[end] = int(value["ts"])
          seen.raw_record[end] = msg.timestamp
      elif feed.encode() in msg.value:
        value = json.loads(msg.value)
        if value.get("feed") == feed and "progress_ms" in value:
          seen.pane_record.setdefault(int(value["start_ms"]) + 1000, msg.timestamp)
  finally:
    await consumer.stop()


class MixSample:
  """Reads the stream topics of a sample of the mix (every MIX_SAMPLE_EVERY-th stream, so
  every interval is in it): when each window became readable in Kafka, which is when the
  gateway can have it. What the measured 1 s windows gain must not be the mix's loss."""

  def __init__(self, bootstrap: str) -> None:
    self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    self.intervals: dict[str, int] = {}  # topic -> the stream's interval (s)
    self.seen: dict[tuple[str, int], int] = {}  # (topic, seq) -> ms it was read

  async def follow(self, topics: dict[str, int]) -> None:
    """Read these topics too (from their end)."""
    new = [t for t in topics if t not in self.intervals]
    if not new:
      return
    self.intervals.update(topics)
    tps = [TopicPartition(t, 0) for t in self.intervals]
    positions = {tp: await self.consumer.position(tp) for tp in self.consumer.assignment()}
    self.consumer.assign(tps)
    for tp, offset in positions.items():
      self.consumer.seek(tp, offset)
    await self.consumer.seek_to_end(*(TopicPartition(t, 0) for t in new))

  async def run(self) -> None:
    while True:
      if not self.intervals:
        await asyncio.sleep(0.1)
        continue
      batches = await self.consumer.getmany(timeout_ms=100)
      now_ms = int(time.time() * 1000)
      for tp, records in batches.items():
        for msg in records:
          self.seen.setdefault((tp.topic, int(json.loads(msg.value)["seq"])), now_ms)

  def lags(self, t0_ms: int, t1_ms: int) -> dict[str, list[float | None]]:
    """Return [windows, p50, p99] of the sample's lag (read minus window end) per interval,
    and over all, for windows ending in [t0, t1)."""
    by: dict[str, list[float]] = {}
    for (topic, seq), read_ms in self.seen.items():
      if t0_ms <= seq < t1_ms:
        lag = float(read_ms - seq)
        by.setdefault(f"{self.intervals[topic]}s", []).append(lag)
        by.setdefault("all", []).append(lag)
    return {k: [len(v), quantile(v, 0.5), quantile(v, 0.99)] for k, v in sorted(by.items())}


MIX_SAMPLE_EVERY = 20


def breakdown(seen: Seen, ends: list[int]) -> dict[str, Any]:
  """Return p50/p99 of each leg of the 1 s stream's lag (ms after the window end)."""
  legs = {
    "first_trade": seen.first_trade,
    "raw_record": seen.raw_record,
    "pane_record": seen.pane_record,
    "stream_record": seen.kafka,
    "websocket": {e: v[0] for e, v in seen.ws.items()},
  }
  out: dict[str, Any] = {}
  for name, times in legs.items():
    lags = [float(times[e] - e) for e in ends if e in times]
    out[name] = [quantile(lags, 0.5), quantile(lags, 0.99)]
  return out


def hops(seen: Seen, ends: list[int]) -> dict[str, Any]:
  """Return p50/p99 of the time each hop of the 1 s stream's path took (ms, per window: a
  leg's time minus the previous leg's), where the p99 of the legs alone cannot tell."""
  legs = [
    ("first_trade", seen.first_trade),
    ("raw_record", seen.raw_record),
    ("pane_record", seen.pane_record),
    ("stream_record", seen.kafka),
    ("websocket", {e: v[0] for e, v in seen.ws.items()}),
  ]
  out: dict[str, Any] = {}
  for (_, before), (name, after) in itertools.pairwise(legs):
    took = [float(after[e] - before[e]) for e in ends if e in before and e in after]
    out[name] = [quantile(took, 0.5), quantile(took, 0.99)]
  return out


async def step(
  platform: Platform,
  seens: list[Seen],
  mix: MixSample,
  n: int,
  warmup_sec: float,
  measure_sec: float,
) -> dict[str, Any]:
  """Grow the mix to n streams, warm up, measure; return the step's figures."""
  t_add = time.monotonic()
  await platform.add_mix(n)
  added_sec = time.monotonic() - t_add
  mix_sids = platform.sids[len(seens) :]
  await mix.follow(
    {
      platform.prefix + stream_topic(mix_sids[i]).name: mix_spec(i)["interval_sec"]
      for i in range(0, len(mix_sids), MIX_SAMPLE_EVERY)
    }
  )
  await asyncio.sleep(warmup_sec)
  lag_before = await platform.panes_lag()
  t0_ms = int(time.time() * 1000)
  pids = platform.pids()  # the worker's among them
  wall0, own0, busy0 = time.monotonic(), time.process_time(), machine_busy_sec()
  parts0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
  await asyncio.sleep(measure_sec)
  wall1, own1, busy1 = time.monotonic(), time.process_time(), machine_busy_sec()
  parts1 = {name: cpu_seconds(pid) for name, pid in pids.items()}

  def pct(cpu_sec: float) -> float:
    """CPU seconds over the measured window, in % of one core."""
    return 100 * cpu_sec / max(1e-9, wall1 - wall0)

  t1_ms = int(time.time() * 1000)
  lag_after = await platform.panes_lag()
  worker = await platform.worker_stats()
  # Windows ending in [t0, t1) had until t1 + 1.5 s to arrive; a later one counts as missing.
  await asyncio.sleep(1.5)
  ends = list(range((t0_ms // 1000 + 1) * 1000, t1_ms, 1000))
  btc = seens[0]  # BTC/USDT: its stream-topic records and path are read too
  ws_lags = [float(seen.ws[e][0] - e) for seen in seens for e in ends if e in seen.ws]
  topic_lags = [float(btc.kafka[e] - e) for e in ends if e in btc.kafka]
  events = [seen.ws[e][1] for seen in seens for e in ends if e in seen.ws]
  missing = sum(1 for seen in seens for e in ends if e not in seen.ws)
  no_trade = sum(1 for ev in events if not ev.get("trades"))
  incomplete = sum(1 for ev in events if ev.get("complete") is False)
  cpu_pct = pct(parts1["worker"] - parts0["worker"])
  # The worker's feeds run in its child, the feed host: one worker costs both.
  feeds_pct = pct(parts1.get("feed_host", 0.0) - parts0.get("feed_host", 0.0))
  p99 = quantile(ws_lags, 0.99)
  streams = n + len(seens)
  # How many mix windows end at the same second as each measured one (epoch-aligned windows:
  # a stream of interval I closes at every end divisible by I): the burst it shares the
  # worker with. The lag by burst size tells a cost per window from noise.
  intervals = [mix_spec(i)["interval_sec"] for i in range(n)]
  by_due: dict[int, list[float]] = {}
  for e in ends:
    due = sum(1 for i in intervals if (e // 1000) % i == 0)
    by_due.setdefault(due, []).extend(float(s.ws[e][0] - e) for s in seens if e in s.ws)
  row = {
    "live_streams": streams,
    "windows": len(ends) * len(seens),
    "p50_ms": quantile(ws_lags, 0.5),
    "p99_ms": p99,
    "max_ms": quantile(ws_lags, 1.0),
    "btc_p99_ms": quantile([float(btc.ws[e][0] - e) for e in ends if e in btc.ws], 0.99),
    "topic_p50_ms": quantile(topic_lags, 0.5),
    "topic_p99_ms": quantile(topic_lags, 0.99),
    "missing": missing,
    "no_trade": no_trade,
    "incomplete": incomplete,
    "panes_lag_start": lag_before,
    "panes_lag_end": lag_after,
    "worker_cpu_pct": round(cpu_pct, 1),
    "feed_host_cpu_pct": round(feeds_pct, 1),
    "cpu_pct_per_stream": round((cpu_pct + feeds_pct) / streams, 3),
    # What the worker shares its cores with: the bench itself (WebSocket client, readers) and
    # the machine as a whole (Kafka, the gateway, the sim...), in % of one core.
    "bench_cpu_pct": round(pct(own1 - own0), 1),
    "machine_busy_pct": round(pct(busy1[0] - busy0[0]), 1),
    "machine_steal_pct": round(pct(busy1[1] - busy0[1]), 1),
    "cpu_pct_by_part": {
      name: round(pct(parts1[name] - parts0[name]), 1) for name in sorted(parts0)
    },
    "add_streams_sec": round(added_sec, 1),
    # How old the newest record of a batch is when each stage reads it (the worker's last
    # 512 batches): a stage that falls behind its input shows here first.
    "stage1_read_delay_p99_ms": worker.get("stage1", {}).get("read_delay_p99_ms"),
    "stage2_read_delay_p99_ms": worker.get("stage2", {}).get("read_delay_p99_ms"),
    # The worker's event loop: how late its callbacks ran (a shared loop's queueing delay).
    "worker_loop_lag_ms": [
      worker.get("loop", {}).get(f"loop_lag_{q}_ms") for q in ("p50", "p99", "max")
    ],
    "worker_loop_stalls": worker.get("loop", {}).get("loop_stalls"),
    "worker_gc_pause_max_ms": worker.get("loop", {}).get("gc_pause_max_ms"),
    "worker_gc_pause_p99_ms": worker.get("loop", {}).get("gc_pause_p99_ms"),
    "worker_gc_collections": worker.get("loop", {}).get("gc_collections"),
    # The sink's Kafka sends: first send of a batch to its last acknowledgement.
    "sink_kafka_ack_p99_ms": worker.get("sink", {}).get("kafka_ack_p99_ms"),
    # [p50, p99] ms after the window end at which each leg of the path was done.
    "lag_breakdown_ms": breakdown(btc, ends),
    "lag_hops_ms": hops(btc, ends),
    # A sample of the mix's own windows: [windows, p50, p99] ms from window end until
    # readable in Kafka, per interval.
    "mix_topic_lag_ms": mix.lags(t0_ms, t1_ms),
    # {mix windows ending at the same second: [windows, p50, max]} of the measured lags.
    "lag_by_burst_ms": {
      due: [len(lags), quantile(lags, 0.5), quantile(lags, 1.0)]
      for due, lags in sorted(by_due.items())
    },
  }
  row["sustained"] = (
    bool(ends)
    and missing == 0
    and no_trade == 0
    and incomplete == 0
    and (p99 is not None and p99 < P99_MAX_MS)
  )
  return row


async def main(quick: bool, label: str | None, steps: tuple[int, ...], keep_going: bool) -> int:
  """Ramp the stream count on one worker and write bench/results/streams[-label].json."""
  warmup_sec, measure_sec = (5.0, 10.0) if quick else (10.0, 40.0)
  rows: list[dict[str, Any]] = []
  started = time.monotonic()
  async with ensure_infra() as (bootstrap, redis_url):
    platform = Platform(bootstrap, redis_url)
    tasks: list[asyncio.Task[None]] = []
    seens: list[Seen] = []
    mix = MixSample(bootstrap)
    try:
      await platform.start()
      measured = await platform.measured_streams()
      seens = [Seen() for _ in measured]
      sid, seen = measured[0][0], seens[0]
      topic = platform.prefix + stream_topic(sid).name
      tasks = [
        asyncio.create_task(read_ws(url, s)) for (_sid, url), s in zip(measured, seens, strict=True)
      ]
      await mix.consumer.start()
      tasks += [
        asyncio.create_task(mix.run()),
        asyncio.create_task(read_topic(bootstrap, topic, seen)),
        asyncio.create_task(read_path(bootstrap, platform.prefix, sid, seen)),
      ]
      print(
        f"platform up in {time.monotonic() - started:.0f}s; 1 s streams {[m[0] for m in measured]}"
      )
      header = f"{'streams':>8} {'p50':>7} {'p99':>7} {'topic p99':>9} {'miss':>4} {'no trade':>8} {'incompl':>7} {'panes lag':>14} {'cpu %':>6} {'%/stream':>8} {'s1/s2 read p99':>14}"  # fmt: skip
      print(header)
      for n in steps:
        row = await step(platform, seens, mix, n - len(seens), warmup_sec, measure_sec)
        rows.append(row)
        print(f"{row['live_streams']:>8} {row['p50_ms']!s:>7} {row['p99_ms']!s:>7} {row['topic_p99_ms']!s:>9} "
              f"{row['missing']:>4} {row['no_trade']:>8} {row['incomplete']:>7} "
              f"{row['panes_lag_start']!s:>6}->{row['panes_lag_end']!s:<7} {row['worker_cpu_pct']:>6} "
              f"{row['cpu_pct_per_stream']:>8} "
              f"{row['stage1_read_delay_p99_ms']!s:>6}/{row['stage2_read_delay_p99_ms']!s:<7}"
              f"{'' if row['sustained'] else '  NOT sustained'}", flush=True)  # fmt: skip
        print("         path p50/p99 ms: " + ", ".join(
          f"{leg} {v[0]}/{v[1]}" for leg, v in row["lag_breakdown_ms"].items())
          + "; hops p50/p99 ms: " + ", ".join(
          f"{leg} {v[0]}/{v[1]}" for leg, v in row["lag_hops_ms"].items())
          + f"; max {row['max_ms']}, BTC p99 {row['btc_p99_ms']}"
          + f"; worker loop lag p50/p99/max {row['worker_loop_lag_ms']}"
          + f"; sink Kafka ack p99 {row['sink_kafka_ack_p99_ms']}"
          + f"; GC pause max by generation {row['worker_gc_pause_max_ms']}"
          + f", p99 {row['worker_gc_pause_p99_ms']}, collections {row['worker_gc_collections']}"
          + f"; bench CPU {row['bench_cpu_pct']}%, machine busy {row['machine_busy_pct']}% "
          + f"of {100 * (os.cpu_count() or 1)}% (stolen {row['machine_steal_pct']}%)"
          + f"; CPU % by part {row['cpu_pct_by_part']}"
          + f"; lag by burst (due: n, p50, max) {row['lag_by_burst_ms']}"
          + f"; mix sample in Kafka (n, p50, p99) {row['mix_topic_lag_ms']}", flush=True)  # fmt: skip
        if not row["sustained"] and not keep_going:
          break
    finally:
      for task in tasks:
        task.cancel()
      await asyncio.gather(*tasks, return_exceptions=True)
      await mix.consumer.stop()
      await platform.cleanup()
  sustained = [r["live_streams"] for r in rows if r["sustained"]]
  best = max(sustained, default=0)
  best_row = next((r for r in rows if r["live_streams"] == best), None)
  result = {
    "steps": rows,
    "max_sustained_streams": best,
    "cpu_pct_per_stream_at_max": best_row["cpu_pct_per_stream"] if best_row else None,
    "criteria": {"p99_ms_max": P99_MAX_MS, "windows": "none missing, none without a trade, none incomplete"},
    "setup": {"mix_symbols": len(MIX_SYMBOLS), "intervals_sec": [2, 6], "with_tweets": "every other stream",
              "measured": f"1 s streams of {', '.join(MEASURED_SYMBOLS)} (binance) via the REST API; lag = "
              "arrival at a WebSocket client through the gateway minus window end (topic_* and the "
              "path: BTC/USDT's stream-topic record time minus window end)",
              "warmup_sec": warmup_sec, "measure_sec": measure_sec,
              "ws_errors": [e for s in seens for e in s.errors][:10]},
    "aim": {"streams": 1000, "acceptance_min": 500},
  }  # fmt: skip
  path = write_result(f"streams-{label}" if label else "streams", quick, result)
  print(f"sustained: {best} live streams on one worker "
        f"({result['cpu_pct_per_stream_at_max']} % of a core per stream); written {path}")  # fmt: skip
  return 0


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--label", help="write bench/results/streams-LABEL.json (e.g. before)")
  parser.add_argument("--steps", help="comma-separated live stream counts (default 25,...,1000)")
  parser.add_argument(
    "--keep-going", action="store_true", help="do not stop at the first failed step"
  )
  args = parser.parse_args()
  chosen = (
    tuple(int(s) for s in args.steps.split(","))
    if args.steps
    else (QUICK_STEPS if args.quick else STEPS)
  )
  sys.exit(asyncio.run(main(args.quick, args.label, chosen, args.keep_going)))
