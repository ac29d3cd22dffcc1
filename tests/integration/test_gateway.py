"""The WebSocket gateway under uvicorn with the real `websockets` client, Kafka and Redis:
every close code, live fan-out through one consumer, slow clients, shutdown."""

import asyncio
import json
import time

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from bond.config import Settings
from bond.gateway.resume import parse_from
from bond.tokens import sign
from bond.wire import metrics_key
from tests.conftest import free_port
from tests.integration.gateways import (
  STEP_MS,
  GatewayProcess,
  GatewayServer,
  WindowWriter,
  tampered,
  wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def gateway(infra):
  server = await GatewayServer(Settings()).start()
  yield server
  await server.stop()


async def closed_with(url: str, **kwargs) -> tuple[int, str]:
  """Connect, read until the server closes, and return the close code and reason."""
  async with websockets.connect(url, open_timeout=10, **kwargs) as ws:
    try:
      while True:
        await asyncio.wait_for(ws.recv(), 15)
    except ConnectionClosed as closed:
      assert closed.rcvd is not None, "the server sent no close frame"
      return closed.rcvd.code, closed.rcvd.reason
  raise AssertionError("unreachable")


async def recv_seqs(ws, n: int, timeout_sec: float = 15) -> list[int]:
  """Receive n events and return their seqs."""
  return [json.loads(await asyncio.wait_for(ws.recv(), timeout_sec))["seq"] for _ in range(n)]


async def test_close_codes_for_tokens_streams_and_from(streams, gateway):
  sid, other = await streams.new(), await streams.new()
  token = sign(sid)
  expired = sign(sid, 60, now=time.time() - 3600)
  cases = [
    (gateway.url(sid, ""), 4401, "missing"),
    (gateway.url(sid, "not-a-token"), 4401, "malformed"),
    (gateway.url(sid, expired), 4401, "expired"),
    (gateway.url(sid, tampered(token)), 4401, "bad_signature"),
    (gateway.url(sid, sign(other)), 4403, "wrong_stream"),
    (gateway.url("0123456789abcdef", sign("0123456789abcdef")), 4404, "unknown"),
    (gateway.url(sid, token, "yesterday"), 4400, "from="),
    (gateway.url(sid, token, "now-60x"), 4400, "from="),
  ]
  results = await asyncio.gather(*(closed_with(url) for url, _, _ in cases))
  for (_, code, word), (got, reason) in zip(cases, results, strict=True):
    assert got == code and word in reason, (code, word, got, reason)


def test_from_parsing():
  now = 1_761_053_405_000
  assert parse_from("now-60s", now).min_seq == now - 60_000
  assert parse_from("now-5m", now).min_seq == now - 300_000
  assert parse_from("now-2h", now).min_seq == now - 7_200_000
  assert parse_from("2025-10-21T13:30:05Z", now).min_seq == now
  assert parse_from("2025-10-21T15:30:05+02:00", now).min_seq == now
  assert parse_from("1761053405000", now) == type(parse_from("1", now))(now + 1, now)
  for bad in ("now-", "now+5m", "-5", "5m", "13:30", ""):
    with pytest.raises(ValueError):
      parse_from(bad, now)


async def test_live_fanout_uses_one_consumer_and_counts_deliveries(
  streams, gateway, infra, redis_client
):
  sid = await streams.new()
  token = sign(sid)
  writer = WindowWriter(infra["bootstrap"], redis_client, sid)
  await writer.start()
  try:
    sockets = [await websockets.connect(gateway.url(sid, token)) for _ in range(20)]
    fan = gateway.gateway.fanout
    await wait_until(lambda: fan.listening(sid) == 20)
    base = int(time.time() * 1000) // STEP_MS * STEP_MS
    seqs = [base + i * STEP_MS for i in range(10)]
    await writer.write(seqs)
    got = await asyncio.gather(*(recv_seqs(ws, 10) for ws in sockets))
    assert all(g == seqs for g in got)
    stats = fan.stats()
    assert stats["consumers"] == 1 and stats["consumers_started"] == 1 and stats["topics"] == 1
    assert stats["records"] == 10 and stats["deliveries"] == 200
    await wait_until(lambda: _hget_is(redis_client, sid, "msgs_out", 200))
    for ws in sockets:
      await ws.close()
    async with httpx.AsyncClient() as http:
      body = (await http.get(f"http://127.0.0.1:{gateway.port}/metrics")).text
    assert "bond_gateway_messages_out_total 200.0" in body
  finally:
    await writer.stop()


async def _hget_is(redis_client, sid: str, field: str, want: int) -> bool:
  return int(await redis_client.hget(metrics_key(sid), field) or 0) == want


async def test_deleting_a_stream_closes_its_sockets_with_4404(streams, gateway):
  sid = await streams.new()
  async with websockets.connect(gateway.url(sid, sign(sid))) as ws:
    await wait_until(lambda: gateway.gateway.fanout.listening(sid) == 1)
    await streams.delete(sid)
    with pytest.raises(ConnectionClosed) as info:
      await asyncio.wait_for(ws.recv(), 10)
  assert info.value.rcvd is not None and info.value.rcvd.code == 4404
  code, _ = await closed_with(gateway.url(sid, sign(sid)))
  assert code == 4404


async def test_abusive_client_messages_close_only_that_socket(
  streams, gateway, infra, redis_client
):
  sid = await streams.new()
  token = sign(sid)
  async with websockets.connect(gateway.url(sid, token)) as calm:
    await wait_until(lambda: gateway.gateway.fanout.listening(sid) == 1)
    async with websockets.connect(gateway.url(sid, token), max_size=None) as big:
      await big.send(b"x" * 10_000)
      with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(big.recv(), 10)
      assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    async with websockets.connect(gateway.url(sid, token)) as chatty:
      with pytest.raises(ConnectionClosed) as info:
        for _ in range(1000):
          await chatty.send("hello")
        await asyncio.wait_for(chatty.recv(), 10)
      assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    await calm.send("a small message is ignored")
    writer = WindowWriter(infra["bootstrap"], redis_client, sid)
    await writer.start()
    try:
      await writer.write([int(time.time()) * 1000])
      assert await recv_seqs(calm, 1) == writer.written
    finally:
      await writer.stop()


async def test_slow_client_is_closed_4408_while_a_fast_one_keeps_up(infra, streams, redis_client):
  server = await GatewayServer(Settings(bond_ws_queue=4)).start()
  sid = await streams.new()
  token = sign(sid)
  writer = WindowWriter(infra["bootstrap"], redis_client, sid, pad=200_000)
  await writer.start()
  try:
    fast = await websockets.connect(server.url(sid, token), compression=None, max_size=None)
    slow = await websockets.connect(
      server.url(sid, token), compression=None, max_size=None, max_queue=1
    )
    await wait_until(lambda: server.gateway.fanout.listening(sid) == 2)
    base = int(time.time() * 1000) // STEP_MS * STEP_MS
    got: list[int] = []
    delays: list[float] = []
    for i in range(0, 120, 10):
      seqs = [base + (i + k) * STEP_MS for k in range(10)]
      sent = time.monotonic()
      await writer.write(seqs, redis=False)
      got += await recv_seqs(fast, 10)
      delays.append(time.monotonic() - sent)
    assert got == writer.written
    assert server.gateway.dropped == 1 and server.gateway.open == 1
    assert max(delays) < 2.0, delays
    print(
      f"\nfast client: 10 x 200 kB windows per batch, max batch delay {max(delays) * 1000:.0f} ms"
    )
    with pytest.raises(ConnectionClosed) as info:
      while True:
        await asyncio.wait_for(slow.recv(), 10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4408
    await wait_until(lambda: _hget_is(redis_client, sid, "dropped", 1))
    await fast.close()
  finally:
    await writer.stop()
    await server.stop()


async def test_graceful_shutdown_closes_with_1001(infra, streams):
  sid = await streams.new()
  server = await GatewayServer(Settings()).start()
  sockets = [await websockets.connect(server.url(sid, sign(sid))) for _ in range(3)]
  await wait_until(lambda: server.gateway.fanout.listening(sid) == 3)
  stopping = asyncio.create_task(server.stop())
  for ws in sockets:
    with pytest.raises(ConnectionClosed) as info:
      await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001
  await stopping


async def test_sigterm_on_the_uvicorn_process_closes_with_1001(infra, streams):
  sid = await streams.new()
  proc = GatewayProcess(free_port())
  await proc.start()
  try:
    async with websockets.connect(f"ws://127.0.0.1:{proc.port}/ws/{sid}?token={sign(sid)}") as ws:
      await asyncio.sleep(0.3)
      await proc.stop()
      with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 10)
      assert info.value.rcvd is not None and info.value.rcvd.code == 1001
  finally:
    # uvicorn re-raises the signal it caught once it has shut down cleanly
    assert await proc.stop() in (0, -15)


async def test_redis_down_refuses_replay_with_1013_but_live_works(infra, streams, redis_client):
  sid = await streams.new()
  server = await GatewayServer(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")).start()
  writer = WindowWriter(infra["bootstrap"], redis_client, sid)
  await writer.start()
  try:
    code, reason = await closed_with(server.url(sid, sign(sid), "now-60s"))
    assert code == 1013 and "Redis" in reason
    async with websockets.connect(server.url(sid, sign(sid))) as live:
      await wait_until(lambda: server.gateway.fanout.listening(sid) == 1)
      await writer.write([int(time.time()) * 1000], redis=False)
      assert await recv_seqs(live, 1) == writer.written
    async with httpx.AsyncClient() as http:
      ready = await http.get(f"http://127.0.0.1:{server.port}/readyz")
    assert ready.status_code == 503 and ready.json()["redis"] is False
  finally:
    await writer.stop()
    await server.stop()
