"""Measure memory ceilings: gateway RSS at 5,000 sockets and worker RSS at 1,000 live streams.

    python -m bench.memory [--quick]

Gateway: `uvicorn --factory` as bench.gateway runs it; RSS (VmRSS) idle, then with N open
sockets from 4 client subprocesses (bench.gateway's), per-socket KiB. Worker: bench.pipeline's
private Faust worker; RSS idle, then with M registered streams fed a modest live trade rate.
Writes bench/results/memory.json. Everything on 127.0.0.1; every wait is bounded.
"""

import argparse
import asyncio
import json
import random
import sys
import time
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.gateway.clients import Clients
from bench.gateway.common import git_commit, machine, raise_fd_limit
from bench.gateway.deployment import Deployment
from bench.gateway.plan import CLIENT_PROCS, RESULTS
from bench.gateway.servers import gateway_server
from bench.pipeline import EXCHANGE, SYMBOLS, Run, _trade
from bench.stack import free_port

GIB_KIB = 1 << 20
CEILING_KIB = GIB_KIB  # 1 GiB for each process


def rss_kib(pid: int) -> int:
  """Return a process's resident set size (VmRSS) in KiB."""
  with open(f"/proc/{pid}/status") as status:
    for line in status:
      if line.startswith("VmRSS:"):
        return int(line.split()[1])
  raise RuntimeError(f"no VmRSS for pid {pid}")


async def settled_rss(pid: int, seconds: float = 3.0) -> int:
  """Return the highest RSS seen over a few seconds (memory settles after a burst)."""
  peak = 0
  for _ in range(int(seconds / 0.25)):
    peak = max(peak, rss_kib(pid))
    await asyncio.sleep(0.25)
  return peak


async def gateway_memory(sockets: int) -> dict[str, Any]:
  """Gateway RSS idle and with `sockets` live sockets on a few streams."""
  from bench.stack import ensure_infra

  async with ensure_infra() as (bootstrap, redis_url):
    dep = Deployment(bootstrap, redis_url)
    clients = Clients(CLIENT_PROCS)
    try:
      sids = await dep.streams(10)
      await clients.start()
      gateway = await gateway_server(free_port(), dep.env(), name="memory-gateway").start()
      try:
        await asyncio.sleep(2)
        idle = await settled_rss(gateway.pid)
        opened, errors, secs = 0, {}, 0.0
        for i, sid in enumerate(sids):
          share = sockets // len(sids) + (1 if i < sockets % len(sids) else 0)
          got = await clients.connect(f"g{i}", dep.url(gateway.port, sid), share, "count", 120)
          opened += got["opened"]
          errors.update(got["errors"])
          secs += got["secs"]
        loaded = await settled_rss(gateway.pid)
        metrics = await gateway.metrics()
      finally:
        await gateway.stop()
    finally:
      await clients.stop()
      await dep.cleanup()
  per_socket = (loaded - idle) / max(1, opened)
  return {
    "sockets_wanted": sockets,
    "sockets_open": opened,
    "gateway_open_gauge": metrics.get("bond_gateway_connections"),
    "connect_errors": errors,
    "connect_secs": round(secs, 1),
    "rss_idle_kib": idle,
    "rss_loaded_kib": loaded,
    "per_socket_kib": round(per_socket, 2),
  }


async def worker_memory(streams: int, rate: int, seconds: int) -> dict[str, Any]:
  """Worker RSS idle and with `streams` registered streams fed `rate` live trades/s."""
  from bench.stack import ensure_infra

  async with ensure_infra() as (bootstrap, redis_url):
    run = Run(bootstrap, redis_url)
    await run.topics()
    run.start_worker()
    try:
      assert run.worker is not None
      pid = run.worker.pid
      await asyncio.sleep(2)
      idle = await settled_rss(pid)
      await run.streams(streams, created_ms=int(time.time() * 1000))
      producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
      await producer.start()
      topic = run.prefix + "bond.raw.ccxt"
      rng = random.Random(3)
      sent, peak = 0, 0
      try:
        t0 = time.monotonic()
        for _ in range(int(seconds / 0.05) + 1):  # bounded: one tick per 50 ms
          elapsed = time.monotonic() - t0
          if elapsed >= seconds:
            break
          now = int(time.time() * 1000)
          for _ in range(max(0, int(elapsed * rate) - sent)):
            sym = SYMBOLS[sent % len(SYMBOLS)]
            await producer.send(topic, _trade(sym, now, sent, rng), key=sym.encode())
            sent += 1
          for sym in SYMBOLS:
            hb = {"heartbeat": True, "source": "ccxt", "exchange": EXCHANGE, "symbol": sym,
                  "ts": now, "ts_ingest": now}  # fmt: skip
            await producer.send(topic, json.dumps(hb).encode(), key=sym.encode())
          peak = max(peak, rss_kib(pid))
          await asyncio.sleep(0.05)
        await producer.flush()
      finally:
        await producer.stop()
      loaded = max(peak, await settled_rss(pid))
      stats = run.stats()
    finally:
      await run.cleanup()
  return {
    "streams": streams,
    "trades_per_sec": rate,
    "seconds": seconds,
    "trades_sent": sent,
    "events_aggregated": stats.get("events"),
    "rss_idle_kib": idle,
    "rss_loaded_kib": loaded,
    "per_stream_kib": round((loaded - idle) / max(1, streams), 2),
  }


def mib(kib: int) -> float:
  """Return KiB as MiB, rounded."""
  return round(kib / 1024, 1)


async def main(quick: bool) -> int:
  """Run both measurements and write bench/results/memory.json."""
  sockets = 1000 if quick else 5000
  streams = 200 if quick else 1000
  seconds = 8 if quick else 20
  fds = raise_fd_limit()
  if fds < sockets // CLIENT_PROCS + 1024:
    print(f"the open-files limit is {fds}; raise it (ulimit -n)")
    return 2
  print(f"gateway: idle, then {sockets} sockets")
  gw = await gateway_memory(sockets)
  print(
    f"  idle {mib(gw['rss_idle_kib'])} MiB, {gw['sockets_open']} sockets "
    f"{mib(gw['rss_loaded_kib'])} MiB, {gw['per_socket_kib']} KiB/socket"
  )
  print(f"worker: idle, then {streams} streams at 500 trades/s for {seconds}s")
  wk = await worker_memory(streams, 500, seconds)
  print(
    f"  idle {mib(wk['rss_idle_kib'])} MiB, {streams} streams {mib(wk['rss_loaded_kib'])} MiB, "
    f"{wk['per_stream_kib']} KiB/stream"
  )
  result: dict[str, Any] = {
    "benchmark": "memory",
    "date": datetime.now(UTC).isoformat(timespec="seconds"),
    "quick": quick,
    "commit": git_commit(),
    "machine": machine(),
    "gateway": gw,
    "worker": wk,
    "ceilings_kib": {"gateway": CEILING_KIB, "worker": CEILING_KIB},
    "pass": {
      "gateway": gw["sockets_open"] == sockets and gw["rss_loaded_kib"] <= CEILING_KIB,
      "worker": wk["rss_loaded_kib"] <= CEILING_KIB,
    },
  }
  RESULTS.mkdir(parents=True, exist_ok=True)
  (RESULTS / "memory.json").write_text(json.dumps(result, indent=2) + "\n")
  print(f"ceilings (1 GiB each): {result['pass']}; written {RESULTS / 'memory.json'}")
  return 0 if all(result["pass"].values()) else 1


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--quick", action="store_true", help="1,000 sockets and 200 streams")
  sys.exit(asyncio.run(main(parser.parse_args().quick)))
