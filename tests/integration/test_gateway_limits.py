"""Hostile sockets against the gateway's limits, under uvicorn with real Kafka and Redis.

Token expiry closes a socket with 4401 unless the client sent a refresh frame; a newer
token epoch (revocation) closes the older sockets; a 2 MiB client frame is refused with
1009 from its header, before its payload is read; sockets per token and per address are
capped (4429); a send queue is bounded in bytes as well as in frames.
"""

import asyncio
import base64
import json
import os
import time
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from bond import wire
from bond.config import Settings
from bond.registry import new_record
from bond.schemas import StreamSpec
from bond.tokens import sign
from tests.integration.gateways import (
  STEP_MS,
  GatewayServer,
  WindowWriter,
  tampered,
  wait_until,
)

pytestmark = pytest.mark.integration

SPEC = StreamSpec.model_validate({"sources": ["ccxt"], "symbols": ["BTC/USDT"], "interval_sec": 1})


@pytest.fixture
async def gateway(infra: dict[str, str]) -> Any:
  server = await GatewayServer(Settings()).start()
  yield server
  await server.stop()


async def close_code(ws: Any, timeout_sec: float = 10) -> tuple[int, str]:
  """Read until the server closes the socket; return the close code and reason."""
  try:
    while True:
      await asyncio.wait_for(ws.recv(), timeout_sec)
  except ConnectionClosed as closed:
    assert closed.rcvd is not None, "the server sent no close frame"
    return closed.rcvd.code, closed.rcvd.reason


async def still_open(ws: Any, for_sec: float) -> bool:
  """Return True when the socket is not closed within for_sec."""
  try:
    await asyncio.wait_for(ws.recv(), for_sec)
  except TimeoutError:
    return True
  except ConnectionClosed:
    return False
  return True


async def test_a_socket_is_closed_4401_at_expiry_unless_the_client_refreshed(
  streams: Any, gateway: GatewayServer, infra: dict[str, str], redis_client: Any
) -> None:
  sid = await streams.new()
  short = sign(sid, 2)  # BOND_TOKEN_TTL as an operator would set it short
  lazy = await websockets.connect(gateway.url(sid, short))
  keen = await websockets.connect(gateway.url(sid, short))
  liar = await websockets.connect(gateway.url(sid, short))
  await wait_until(lambda: gateway.gateway.fanout.listening(sid) == 3)
  await keen.send(json.dumps({"type": wire.REFRESH, "token": sign(sid, 60)}))
  await liar.send(json.dumps({"type": wire.REFRESH, "token": tampered(sign(sid, 60))}))
  code, reason = await close_code(liar, 5)
  assert code == wire.BAD_TOKEN and "bad_signature" in reason
  started = time.monotonic()
  code, reason = await close_code(lazy, 10)
  assert code == wire.BAD_TOKEN and "expired" in reason, (code, reason)
  assert time.monotonic() - started < 4
  assert await still_open(keen, 1.5)  # past the old token's expiry
  writer = WindowWriter(infra["bootstrap"], redis_client, sid)
  await writer.start()
  try:
    await writer.write([int(time.time() * 1000) // STEP_MS * STEP_MS])
    got = json.loads(await asyncio.wait_for(keen.recv(), 10))
    assert got["seq"] == writer.written[0]
  finally:
    await writer.stop()
    await keen.close()


async def test_a_newer_token_epoch_closes_older_sockets_and_refuses_their_tokens(
  streams: Any, gateway: GatewayServer
) -> None:
  sid = await streams.new()  # token epoch 0
  old = sign(sid)
  ws = await websockets.connect(gateway.url(sid, old))
  await wait_until(lambda: gateway.gateway.fanout.listening(sid) == 1)
  await streams.writer.put(new_record(sid, "test", SPEC, token_epoch=5))  # revoke_previous
  code, reason = await close_code(ws)
  assert code == wire.BAD_TOKEN and "revoked" in reason
  async with websockets.connect(gateway.url(sid, old)) as again:
    code, reason = await close_code(again)
  assert code == wire.BAD_TOKEN and "revoked" in reason
  async with websockets.connect(gateway.url(sid, sign(sid, epoch=5))) as fresh:
    assert await still_open(fresh, 1.0)
    await fresh.send(json.dumps({"type": wire.REFRESH, "token": old}))  # an old token as refresh
    code, reason = await close_code(fresh)
  assert code == wire.BAD_TOKEN and "revoked" in reason


async def _raw_socket(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
  """Open a WebSocket by hand, so the test controls every byte it sends."""
  reader, writer = await asyncio.open_connection("127.0.0.1", port)
  key = base64.b64encode(os.urandom(16)).decode()
  writer.write(
    (
      f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
  )
  head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
  assert b" 101 " in head.split(b"\r\n", 1)[0], head[:100]
  return reader, writer


def _frame_header(opcode: int, length: int) -> bytes:
  """Return a masked client frame header (FIN set) for a payload of `length` bytes."""
  if length < 126:
    size = bytes([0x80 | length])
  elif length < 1 << 16:
    size = bytes([0x80 | 126]) + length.to_bytes(2, "big")
  else:
    size = bytes([0x80 | 127]) + length.to_bytes(8, "big")
  return bytes([0x80 | opcode]) + size + b"\0\0\0\0"  # a zero mask leaves the payload as is


async def _read_close(reader: asyncio.StreamReader) -> int:
  """Read server frames until a close frame; return its code."""
  while True:
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), 10)
    length = b1 & 0x7F
    if length == 126:
      length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
      length = int.from_bytes(await reader.readexactly(8), "big")
    payload = await reader.readexactly(length)
    if b0 & 0x0F == 0x8:
      return int.from_bytes(payload[:2], "big")


@pytest.mark.parametrize("uvicorn_cap", ["launch flag", "per connection"])
async def test_a_2mib_client_frame_is_refused_from_its_header(
  streams: Any, infra: dict[str, str], uvicorn_cap: str
) -> None:
  # "launch flag": uvicorn runs with --ws-max-size 4096 as every launch command does.
  # "per connection": uvicorn left at its 16 MiB default; the gateway caps each socket.
  big = None if uvicorn_cap == "launch flag" else 16 * 1024 * 1024
  server = await GatewayServer(Settings(), ws_max_size=big).start()
  sid = await streams.new()
  try:
    reader, writer = await _raw_socket(server.port, f"/ws/{sid}?token={sign(sid)}")
    await wait_until(lambda: server.gateway.open == 1)
    if big is not None:
      hello = b"hello"
      writer.write(_frame_header(0x1, len(hello)) + hello)  # the cap applies from frame two
    # A 2 MiB frame: its header and 1 KiB of its payload; the rest never comes, so a
    # server that waited for the payload would never answer.
    writer.write(_frame_header(0x2, 2 * 1024 * 1024) + b"x" * 1024)
    await writer.drain()
    assert await _read_close(reader) == wire.TOO_BIG
    await wait_until(lambda: server.gateway.open == 0)
    writer.close()
  finally:
    await server.stop()


async def test_sockets_per_token_are_capped_with_4429(streams: Any, gateway: GatewayServer) -> None:
  sid = await streams.new()
  token = sign(sid)
  cap = gateway.settings.bond_ws_max_per_token
  sockets = await asyncio.gather(*(websockets.connect(gateway.url(sid, token)) for _ in range(100)))
  try:
    await wait_until(lambda: gateway.gateway.closes[wire.TOO_MANY] == 100 - cap)
    assert gateway.gateway.open == cap
    states = await asyncio.gather(*(still_open(ws, 1.0) for ws in sockets))
    assert states.count(True) == cap
    refused = [ws for ws, alive in zip(sockets, states, strict=True) if not alive]
    assert {ws.close_code for ws in refused} == {wire.TOO_MANY}
    assert "BOND_WS_MAX_PER_TOKEN" in (refused[0].close_reason or "")
    # Closing sockets frees their places.
    opened = [ws for ws, alive in zip(sockets, states, strict=True) if alive]
    for ws in opened[:5]:
      await ws.close()
    await wait_until(lambda: gateway.gateway.open == cap - 5)
    more = [await websockets.connect(gateway.url(sid, token)) for _ in range(5)]
    await wait_until(lambda: gateway.gateway.open == cap)
    sockets += more
  finally:
    await asyncio.gather(*(ws.close() for ws in sockets))


async def test_sockets_per_address_are_capped_with_4429(
  infra: dict[str, str], streams: Any
) -> None:
  server = await GatewayServer(Settings(bond_ws_max_per_ip=10)).start()
  sid = await streams.new()
  sockets: list[Any] = []
  try:
    for i in range(12):  # twelve different tokens from one address
      sockets.append(await websockets.connect(server.url(sid, sign(sid, 3600 + i))))
    await wait_until(lambda: server.gateway.closes[wire.TOO_MANY] == 2)
    code, reason = await close_code(sockets[-1])
    assert code == wire.TOO_MANY and "BOND_WS_MAX_PER_IP" in reason
    assert server.gateway.open == 10
  finally:
    await asyncio.gather(*(ws.close() for ws in sockets))
    await server.stop()


async def test_a_send_queue_is_bounded_in_bytes(
  infra: dict[str, str], streams: Any, redis_client: Any
) -> None:
  # Frames alone would allow 100,000 waiting frames; 1 MiB of them ends the socket.
  settings = Settings(bond_ws_queue=100_000, bond_ws_queue_bytes=1 << 20)
  server = await GatewayServer(settings).start()
  sid = await streams.new()
  writer = WindowWriter(infra["bootstrap"], redis_client, sid, pad=200_000)
  await writer.start()
  try:
    slow = await websockets.connect(
      server.url(sid, sign(sid)), compression=None, max_size=None, max_queue=1
    )
    await wait_until(lambda: server.gateway.fanout.listening(sid) == 1)
    base = int(time.time() * 1000) // STEP_MS * STEP_MS
    for i in range(0, 200, 10):
      await writer.write([base + (i + k) * STEP_MS for k in range(10)], redis=False)
      if server.gateway.dropped:
        break
    await wait_until(lambda: server.gateway.dropped == 1, 20)
    code, reason = await close_code(slow, 20)
    assert code == wire.TOO_SLOW and "BOND_WS_QUEUE_BYTES" in reason
  finally:
    await writer.stop()
    await server.stop()
