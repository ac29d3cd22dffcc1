"""`python -m bench.gateway [--quick]`: run the three measurements, write the JSON results."""

import argparse
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.gateway import __doc__ as OVERVIEW
from bench.gateway.clients import Clients, client_worker
from bench.gateway.common import git_commit, machine, raise_fd_limit, run_loop, write_json
from bench.gateway.delay import delay_at_scale
from bench.gateway.deployment import Deployment
from bench.gateway.fanout import fanout_throughput
from bench.gateway.plan import CLIENT_PROCS, FULL, P99_TARGET_MS, QUICK, RATIO_TARGET, RESULTS
from bench.gateway.replay import replay_latency
from bench.gateway.servers import bare_server, gateway_server
from bench.stack import free_port


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
    prog="python -m bench.gateway",
    description=OVERVIEW,
    formatter_class=argparse.RawDescriptionHelpFormatter,
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
