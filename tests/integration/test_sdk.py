"""The SDK and `bond listen` against the real REST API and a gateway process, on the test
session's Kafka and Redis: CRUD, errors, and a continuous `seq` through a gateway kill."""

import asyncio
import itertools
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

import bond
from bond.client import BondAPIError, BondClient, StreamClosedError
from bond.config import Settings
from bond.gateway.api import create_api_app
from tests.conftest import ROOT, free_port
from tests.integration.gateways import STEP_MS, GatewayProcess, WindowWriter, wait_until

pytestmark = pytest.mark.integration

TOKEN_TTL_SEC = 3  # short, so a listen outlives its first token


async def _markets(exchange_id: str, settings: Settings) -> set[str]:
  return {"BTC/USDT", "ETH/USDT", "SOL/USDT"}


class Platform:
  """The REST API (uvicorn in a thread, so blocking clients work too) and a gateway process."""

  def __init__(self) -> None:
    self.api_key = "key-" + uuid.uuid4().hex
    self.gateway = GatewayProcess(free_port())
    port = free_port()
    self.api_url = f"http://127.0.0.1:{port}"
    settings = Settings(
      ws_host=f"127.0.0.1:{self.gateway.port}",
      bond_api_keys=f"sdk-{uuid.uuid4().hex[:8]}:{self.api_key}",
      bond_token_ttl=TOKEN_TTL_SEC,
    )
    app = create_api_app(settings, market_loader=_markets)
    self.server = uvicorn.Server(
      uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    )
    self.thread = threading.Thread(target=self.server.run, daemon=True)

  async def start(self) -> None:
    """Start the API and the gateway."""
    self.thread.start()
    await asyncio.gather(self.gateway.start(), wait_until(lambda: self.server.started, 30))

  async def stop(self) -> None:
    """Stop the gateway, delete this project's streams and stop the API."""
    # The gateway goes first: a consumer still reading a topic as it is deleted would
    # bring it back (the test broker auto-creates topics).
    await self.gateway.stop()
    async with self.client() as client:
      for stream in await client.list_streams():
        await client.delete_stream(stream["stream_id"])
    self.server.should_exit = True
    await asyncio.to_thread(self.thread.join, 15)

  def client(self) -> BondClient:
    """Return an SDK client of this project."""
    return BondClient(self.api_url, api_key=self.api_key)


@pytest.fixture
async def platform(infra: dict[str, str]) -> AsyncIterator[Platform]:
  made = Platform()
  await made.start()
  yield made
  await made.stop()


async def produce(
  writer: WindowWriter, first: int, stop: asyncio.Event, every_sec: float = 0.05
) -> None:
  """Write one window every `every_sec`, Kafka then Redis, like the worker."""
  for i in itertools.count():
    if stop.is_set():
      return
    await writer.write([first + i * STEP_MS])
    await asyncio.sleep(every_sec)


async def test_listen_keeps_a_continuous_seq_through_a_gateway_kill(platform, infra, redis_client):
  client = platform.client()
  info = await client.create_stream("BTC price every 1s")
  sid = info["stream_id"]
  writer = WindowWriter(infra["bootstrap"], redis_client, sid)
  await writer.start()
  stop = asyncio.Event()
  first = (int(time.time() * 1000) - 10_000) // STEP_MS * STEP_MS
  producer = asyncio.create_task(produce(writer, first, stop))
  seqs: list[int] = []
  outage: asyncio.Task[None] | None = None

  async def kill_and_restart() -> None:
    await platform.gateway.stop(signal.SIGKILL)
    await asyncio.sleep(TOKEN_TTL_SEC + 0.5)  # the token in hand expires meanwhile
    await platform.gateway.start()

  try:
    async for event in client.listen(sid, from_="now-60s"):
      seqs.append(event["seq"])
      if len(seqs) == 15:
        outage = asyncio.create_task(kill_and_restart())
      if (
        outage is not None
        and outage.done()
        and len(seqs) >= 15 + 20
        and seqs[-1] >= writer.written[-1]
      ):
        break
  finally:
    stop.set()
    await producer
    await writer.stop()
    await client.aclose()
  assert outage is not None and outage.done()
  outage.result()
  assert seqs[0] == first
  assert all(b - a == STEP_MS for a, b in itertools.pairwise(seqs)), "gap or duplicate"
  assert client.reconnects >= 1 and client.token_refreshes >= 1
  print(
    f"\n{len(seqs)} events, {client.reconnects} reconnects, {client.token_refreshes} token refreshes"
  )


async def test_crud_errors_metrics_and_deletion_while_listening(platform, infra, redis_client):
  async with platform.client() as client:
    preview = await client.compile("ETH price every 2s")
    assert preview["exists"] is False
    created = await client.create_stream("ETH price every 2s")
    sid = created["stream_id"]
    assert sid == preview["stream_id"] and created["ws_url"].startswith("ws://127.0.0.1:")
    assert (
      await client.create_stream({"sources": ["ccxt"], "symbols": ["ETH"], "interval_sec": 2})
    )["stream_id"] == sid
    assert [s["stream_id"] for s in await client.list_streams()] == [sid]
    assert (await client.get_stream(sid))["spec"]["symbols"] == ["ETH/USDT"]
    with pytest.raises(BondAPIError) as info:
      await client.get_stream("0123456789abcdef")
    assert info.value.status == 404 and info.value.code == "not_found"
    with pytest.raises(BondAPIError) as info:
      await client.create_stream("please make me rich")
    assert info.value.status == 422
    with pytest.raises(BondAPIError) as info:
      await BondClient(platform.api_url, api_key="wrong").list_streams()
    assert info.value.status == 401

    def blocking() -> list[dict[str, Any]]:
      with platform.client().sync() as sync_client:
        return sync_client.list_streams()

    assert [s["stream_id"] for s in await asyncio.to_thread(blocking)] == [sid]

    writer = WindowWriter(infra["bootstrap"], redis_client, sid)
    await writer.start()
    got: list[int] = []

    async def listen() -> None:
      async for event in client.listen(sid):
        got.append(event["seq"])

    listening = asyncio.create_task(listen())
    try:
      seq = int(time.time()) * 1000
      while not got:
        await writer.write([seq])
        seq += STEP_MS
        await asyncio.sleep(0.2)
      await wait_until(
        lambda: _msgs_out(client, sid, len(got)),
        timeout_sec=10,
      )
      await client.delete_stream(sid)
      with pytest.raises(StreamClosedError) as closed:
        await asyncio.wait_for(listening, 15)
      assert closed.value.close_code == 4404
    finally:
      listening.cancel()
      await writer.stop()


async def _msgs_out(client: BondClient, sid: str, at_least: int) -> bool:
  return int((await client.metrics(sid)).get("msgs_out") or 0) >= at_least


async def test_module_level_listen_and_the_cli(platform, infra, redis_client):
  async with platform.client() as client:
    sid = (await client.create_stream("SOL price every 1s"))["stream_id"]
  writer = WindowWriter(infra["bootstrap"], redis_client, sid)
  await writer.start()
  first = (int(time.time() * 1000) - 5_000) // STEP_MS * STEP_MS
  await writer.write([first + i * STEP_MS for i in range(5)])
  try:
    seen = []
    async for event in bond.listen(
      sid, "now-60s", api_url=platform.api_url, api_key=platform.api_key
    ):
      seen.append(event["seq"])
      if len(seen) == 5:
        break
    assert seen == writer.written

    cmd = [
      sys.executable, "-m", "bond.cli", "--api-url", platform.api_url, "--api-key", platform.api_key,
      "listen", sid, "--from", "now-60s", "--format", "json",
    ]  # fmt: skip
    # As from a terminal: a suite started in the background inherits SIGINT ignored.
    proc = await asyncio.create_subprocess_exec(
      *cmd, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stdout is not None
    lines = [await asyncio.wait_for(proc.stdout.readline(), 20) for _ in range(5)]
    assert [int(line.split(b'"seq":')[1].split(b",")[0]) for line in lines] == writer.written
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 15) == 0
  finally:
    await writer.stop()


async def test_the_sdk_imports_without_the_server_extras():
  code = (
    "import sys, bond, bond.client, bond.cli_listen; from bond import BondClient, listen; "
    "print(sorted(m for m in ('aiokafka', 'redis', 'starlette', 'uvicorn', 'faust') if m in sys.modules))"
  )
  proc = await asyncio.create_subprocess_exec(
    sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
  )
  out, _ = await proc.communicate()
  assert out.decode().strip() == "[]"


async def test_listen_outlives_its_tokens_without_reconnecting(platform, infra, redis_client):
  # The SDK hands a fresh token to the open socket before each expiry (a refresh frame),
  # so the gateway's 4401-at-expiry never fires and the socket is never reopened.
  client = platform.client()
  info = await client.create_stream("ETH price every 1s")
  sid = info["stream_id"]
  writer = WindowWriter(infra["bootstrap"], redis_client, sid)
  await writer.start()
  stop = asyncio.Event()
  first = int(time.time() * 1000) // STEP_MS * STEP_MS
  producer = asyncio.create_task(produce(writer, first, stop, every_sec=0.1))
  seqs: list[int] = []
  lasts_sec = 3.5 * TOKEN_TTL_SEC
  started = time.monotonic()
  try:
    async for event in client.listen(sid):
      seqs.append(event["seq"])
      if time.monotonic() - started > lasts_sec:
        break
  finally:
    stop.set()
    await producer
    await writer.stop()
    await client.aclose()
  assert client.reconnects == 0, "the socket was reopened"
  assert client.token_refreshes >= 3
  assert all(b - a == STEP_MS for a, b in itertools.pairwise(seqs)), "gap or duplicate"
  assert len(seqs) >= lasts_sec * 5
