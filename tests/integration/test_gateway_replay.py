"""Replay then live under live traffic: 100 clients connect at random moments with
`from=now-60s`, an ISO time or a seq, and each sees strictly consecutive seqs."""

import asyncio
import itertools
import json
import random
import time
from datetime import UTC, datetime

import pytest
import websockets

from bond.config import Settings
from bond.tokens import sign
from tests.integration.gateways import (
  STEP_MS,
  GatewayServer,
  WindowWriter,
  wait_until,
)

pytestmark = pytest.mark.integration

TRIALS = 100
CONNECT_SPREAD_SEC = 2.5
LIVE_EVENTS = 15  # each trial reads this many windows past the newest one at its connect time


async def produce(writer: WindowWriter, first: int, stop: asyncio.Event) -> None:
  """Write windows in small batches, Kafka first then Redis, as the worker does."""
  seq = first
  while not stop.is_set():
    batch = [seq + i * STEP_MS for i in range(random.randint(1, 3))]
    # The ring lags Kafka by up to 20 ms: the splice must still find every window.
    await writer.write(batch, redis_lag_sec=random.uniform(0, 0.02))
    seq = batch[-1] + STEP_MS
    await asyncio.sleep(random.uniform(0.005, 0.03))


async def trial(
  server: GatewayServer, sid: str, writer: WindowWriter, first: int, rng: random.Random
) -> dict:
  await asyncio.sleep(rng.uniform(0, CONNECT_SPREAD_SEC))
  mode = rng.choice(["now-60s", "seq", "seq", "iso"])
  expect_first: int | None = None
  if mode == "now-60s":
    from_, expect_first = "now-60s", first
  elif mode == "seq":
    after = rng.choice(writer.written)
    from_, expect_first = str(after), after + STEP_MS
  else:
    when = first + rng.randint(0, len(writer.written) - 1) * STEP_MS
    from_ = datetime.fromtimestamp(when / 1000, UTC).isoformat().replace("+00:00", "Z")
    expect_first = when
  target = writer.written[-1] + LIVE_EVENTS * STEP_MS
  seqs: list[int] = []
  started = time.monotonic()
  first_at: float | None = None
  # A token of its own, as each listener would have (BOND_WS_MAX_PER_TOKEN caps one token).
  token = sign(sid, 3600 + rng.randrange(1_000_000))
  async with websockets.connect(server.url(sid, token, from_), max_queue=None) as ws:
    while not seqs or seqs[-1] < target:
      seqs.append(json.loads(await asyncio.wait_for(ws.recv(), 20))["seq"])
      if first_at is None:
        first_at = time.monotonic() - started
  gaps = [(a, b) for a, b in itertools.pairwise(seqs) if b - a != STEP_MS]
  assert not gaps, f"{mode} from={from_}: gap or duplicate at {gaps[:3]}"
  assert seqs[0] == expect_first, f"{mode} from={from_}: first {seqs[0]} != {expect_first}"
  return {"mode": mode, "events": len(seqs), "first_event_sec": first_at}


async def test_replay_then_live_has_no_gap_and_no_duplicate(infra, streams, redis_client):
  sid = await streams.new()
  server = await GatewayServer(Settings()).start()
  writer = WindowWriter(infra["bootstrap"], redis_client, sid)
  await writer.start()
  first = (int(time.time() * 1000) - 30_000) // STEP_MS * STEP_MS
  stop = asyncio.Event()
  producer = asyncio.create_task(produce(writer, first, stop))
  try:
    await wait_until(lambda: len(writer.written) >= 20)
    rng = random.Random(20251021)
    results = await asyncio.gather(*(trial(server, sid, writer, first, rng) for _ in range(TRIALS)))
  finally:
    stop.set()
    await producer
    await writer.stop()
    await server.stop()
  assert len(results) == TRIALS
  assert {r["mode"] for r in results} == {"now-60s", "seq", "iso"}
  firsts = sorted(r["first_event_sec"] for r in results)
  print(
    f"\n{TRIALS} trials, {sum(r['events'] for r in results)} events, {len(writer.written)} windows "
    f"written; first replayed event p50 {firsts[len(firsts) // 2] * 1000:.1f} ms, "
    f"max {firsts[-1] * 1000:.1f} ms; fanout {server.gateway.fanout.stats()}"
  )
