"""Measurement 1: deliveries/s to the same N subscribers, bare server vs gateway, alternating."""

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.gateway.clients import Clients
from bench.gateway.common import Frames, cpu_seconds
from bench.gateway.deployment import Deployment
from bench.gateway.plan import HOST, STEP_MS, Plan
from bench.gateway.servers import bare_server_process, gateway_server
from bench.stack import free_port


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
