"""Measurement 2: delivery delay (receive - produce time) with thousands of subscribers."""

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from bench.gateway.clients import Clients, ClientWorker
from bench.gateway.common import Frames, cpu_seconds, percentile, produced_at, round1
from bench.gateway.deployment import Deployment
from bench.gateway.plan import HOST, PROBES, STEP_MS, Plan
from bench.gateway.servers import Server, bare_server_process
from bench.stack import free_port

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
    "p50_ms": round1(percentile(delays, 50)),
    "p90_ms": round1(percentile(delays, 90)),
    "p99_ms": round1(percentile(delays, 99)),
    "p999_ms": round1(percentile(delays, 99.9)),
    "max_ms": round1(max(delays) if delays else None),
    "per_event": {
      "first_socket_p50_ms": round1(percentile(first_ms, 50)),
      "first_socket_max_ms": round1(max(first_ms) if first_ms else None),
      "first_to_last_socket_p50_ms": round1(percentile(spread_ms, 50)),
      "first_to_last_socket_max_ms": round1(max(spread_ms) if spread_ms else None),
    },
    "kafka_direct_consumer_p50_ms": round1(percentile(direct_ms, 50)),
    "kafka_direct_consumer_max_ms": round1(max(direct_ms) if direct_ms else None),
    "probe_sockets": n_probes,
    "probe_p50_ms": round1(percentile(replies[-1]["delays"], 50)),
    "probe_p99_ms": round1(percentile(replies[-1]["delays"], 99)),
    "server_cpu_ms_per_event": round1(server_cpu * 1000 / max(1, events)),
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
