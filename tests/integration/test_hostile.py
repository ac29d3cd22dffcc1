"""Hostile input against the running gateway and REST API, on the test session's Kafka and Redis.

A thousand bad-token connections, huge query strings, binary frames and message floods are
each refused with their own close code while a good client on the same gateway keeps
receiving every window; and the secret, API keys and tokens never reach the logs.
"""

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from bond.config import Settings
from bond.tokens import sign
from tests.integration.gateways import STEP_MS, GatewayServer, WindowWriter, tampered, wait_until

pytestmark = pytest.mark.integration

SECRET = "hostile-secret-" + uuid.uuid4().hex
OTHER_SECRET = "hostile-other-" + uuid.uuid4().hex
BAD_TOKENS = 1000
BATCH = 100
WINDOW_EVERY_SEC = 0.05
MAX_WINDOW_DELAY_SEC = 2.0
HUGE_OPEN_TIMEOUT_SEC = 3.0


@pytest.fixture
async def gateway(infra: dict[str, str]) -> Any:
  """Serve a gateway in-process that signs and checks tokens with SECRET."""
  server = await GatewayServer(Settings(bond_secret=SECRET)).start()
  yield server
  await server.stop()


class GoodClient:
  """A live listener that records every window it gets and when, while a writer feeds it."""

  def __init__(self, ws: Any, writer: WindowWriter) -> None:
    self.ws, self.writer = ws, writer
    self.got: list[int] = []
    self.sent_at: dict[int, float] = {}
    self.delays: list[float] = []
    self.tasks: list[asyncio.Task[None]] = []
    self.stopping = False

  def start(self) -> None:
    """Start reading and writing one window every WINDOW_EVERY_SEC."""
    self.tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._write())]

  async def _read(self) -> None:
    while True:
      seq = json.loads(await self.ws.recv())["seq"]
      self.got.append(seq)
      self.delays.append(time.monotonic() - self.sent_at[seq])

  async def _write(self) -> None:
    seq = int(time.time() * 1000) // STEP_MS * STEP_MS
    for _ in range(int(300 / WINDOW_EVERY_SEC)):  # bounded: at most 5 minutes of windows
      if self.stopping:
        return
      self.sent_at[seq] = time.monotonic()
      await self.writer.write([seq])
      seq += STEP_MS
      await asyncio.sleep(WINDOW_EVERY_SEC)

  async def close(self) -> None:
    """Stop both tasks and close the socket (after a failure too)."""
    self.stopping = True
    for task in self.tasks:
      task.cancel()
    await asyncio.gather(*self.tasks, return_exceptions=True)
    await self.ws.close()

  async def stop_and_check(self, min_windows: int) -> None:
    """Stop writing, wait for the last window, and check none was lost or late."""
    self.stopping = True  # not cancel(): a window half written would look lost
    await asyncio.wait_for(self.tasks[1], 10)
    written = list(self.writer.written)
    await wait_until(lambda: len(self.got) >= len(written), 10)
    self.tasks[0].cancel()
    await asyncio.gather(self.tasks[0], return_exceptions=True)
    assert self.got == written, "the good client lost, reordered or duplicated a window"
    assert all(b - a == STEP_MS for a, b in zip(self.got, self.got[1:], strict=False))
    assert len(self.got) >= min_windows, len(self.got)
    assert max(self.delays) < MAX_WINDOW_DELAY_SEC, max(self.delays)


async def good_client(gateway: GatewayServer, sid: str, writer: WindowWriter) -> GoodClient:
  """Connect a live listener and start feeding it windows."""
  ws = await websockets.connect(gateway.url(sid, sign(sid, secret=SECRET)), max_size=None)
  await wait_until(lambda: gateway.gateway.fanout.listening(sid) == 1)
  client = GoodClient(ws, writer)
  client.start()
  return client


async def close_of(url: str, send: list[str | bytes] | None = None) -> tuple[int, str]:
  """Connect, optionally send messages, read until closed; return the close code and reason."""
  async with websockets.connect(url, open_timeout=20, max_size=None) as ws:
    try:
      for msg in send or []:
        await ws.send(msg)
      for _ in range(1000):  # bounded: a refused socket closes after its first read
        await asyncio.wait_for(ws.recv(), 15)
    except ConnectionClosed as closed:
      assert closed.rcvd is not None, "the server sent no close frame"
      return closed.rcvd.code, closed.rcvd.reason
  raise AssertionError("the socket was not closed")


def bad_cases(gateway: GatewayServer, sid: str, other: str) -> list[tuple[str, int, str]]:
  """Return (url, close code, reason word) for each kind of bad token."""
  token = sign(sid, secret=SECRET)
  sid_, exp, epoch, mac = token.split(".")
  other_exp = f"{sid_}.{int(exp) + 60}.{epoch}.{mac}"
  return [
    (gateway.url(sid, tampered(token)), 4401, "bad_signature"),
    (gateway.url(sid, other_exp), 4401, "bad_signature"),
    (gateway.url(sid, sign(sid, 60, secret=SECRET, now=time.time() - 3600)), 4401, "expired"),
    (gateway.url(sid, sign(other, secret=SECRET)), 4403, "wrong_stream"),
    (gateway.url(sid, sign(sid, secret=OTHER_SECRET)), 4401, "bad_signature"),
    (gateway.url(sid, "garbage-" + uuid.uuid4().hex), 4401, "malformed"),
    (gateway.url(sid, "x" * 600), 4401, "malformed"),
    (gateway.url(sid, ""), 4401, "missing"),
  ]


async def test_a_thousand_bad_tokens_and_abusers_leave_a_good_client_untouched(
  streams: Any, gateway: GatewayServer, infra: dict[str, str], redis_client: Any
) -> None:
  sid, other = await streams.new(), await streams.new()
  writer = WindowWriter(infra["bootstrap"], redis_client, sid)
  await writer.start()
  good: GoodClient | None = None
  try:
    good = await good_client(gateway, sid, writer)
    cases = bad_cases(gateway, sid, other)
    # Abusers with valid tokens mixed into the storm: a big binary frame, a binary flood.
    valid = gateway.url(sid, sign(sid, secret=SECRET))
    abusers = [(valid, [b"\x00" * 10_000], 1009), (valid, [b"\x01"] * 1000, 1008)]
    wanted: list[tuple[int, str]] = []
    got: list[tuple[int, str]] = []
    started = time.monotonic()
    for first in range(0, BAD_TOKENS, BATCH):
      batch = [cases[(first + i) % len(cases)] for i in range(BATCH)]
      calls = [close_of(url) for url, _, _ in batch]
      calls += [close_of(url, msgs) for url, msgs, _ in abusers]
      wanted += [(code, word) for _, code, word in batch]
      wanted += [(code, "") for _, _, code in abusers]
      got += await asyncio.gather(*calls)
    storm_sec = time.monotonic() - started
    for (code, word), (got_code, reason) in zip(wanted, got, strict=True):
      assert got_code == code and word in reason, (code, word, got_code, reason)
    assert sum(1 for code, _ in got if code in (4401, 4403)) == BAD_TOKENS
    await good.stop_and_check(min_windows=5)
    assert gateway.gateway.open == 1  # only the good client is left
    closes = gateway.gateway.closes
    # The oversized frames never reach the gateway's code: uvicorn's protocol refuses them
    # from the frame header (--ws-max-size), so only the floods are the gateway's closes.
    assert closes[4401] + closes[4403] == BAD_TOKENS and closes[1008] == 10
    print(
      f"\n{BAD_TOKENS} bad tokens + 20 abusers in {storm_sec:.1f}s; good client got "
      f"{len(good.got)} windows, none lost, max delay {max(good.delays) * 1000:.0f} ms"
    )
  finally:
    if good is not None:
      await good.close()
    await writer.stop()


async def test_huge_query_strings_are_refused_and_the_gateway_stays_healthy(
  streams: Any, gateway: GatewayServer, infra: dict[str, str], redis_client: Any
) -> None:
  sid = await streams.new()
  token = sign(sid, secret=SECRET)
  writer = WindowWriter(infra["bootstrap"], redis_client, sid)
  await writer.start()
  good: GoodClient | None = None
  try:
    good = await good_client(gateway, sid, writer)
    huge = "a" * 100_000
    for url in (gateway.url(sid, huge), gateway.url(sid, token, huge)):
      # What uvicorn does today with a 100 KB request line on a WebSocket upgrade: its
      # `websockets` handshake rejects lines over 8 KB and answers nothing (no 4xx, no
      # close), so the client's open timeout ends it. The gateway never sees the socket.
      started = time.monotonic()
      with pytest.raises(TimeoutError):
        async with websockets.connect(url, open_timeout=HUGE_OPEN_TIMEOUT_SEC):
          pass
      assert time.monotonic() - started < HUGE_OPEN_TIMEOUT_SEC + 2
      assert gateway.gateway.open == 1
    # Under the line limit the gateway itself refuses: a 6 KB token, a 6 KB `from`.
    assert (await close_of(gateway.url(sid, "b" * 6000)))[0] == 4401
    code, reason = await close_of(gateway.url(sid, token, "now-" + "9" * 6000 + "s"))
    assert code == 4400 and "from" in reason
    async with httpx.AsyncClient() as http:
      health = await http.get(f"http://127.0.0.1:{gateway.port}/healthz")
    assert health.status_code == 200
    await asyncio.sleep(0.5)  # a few more windows after the refusals
    await good.stop_and_check(min_windows=5)
    print(
      f"\n100 KB query string: no answer, open timeout; good client got {len(good.got)} windows"
    )
  finally:
    if good is not None:
      await good.close()
    await writer.stop()


class Captured(logging.Handler):
  """Keeps every log record's message and traceback text."""

  def __init__(self) -> None:
    super().__init__(logging.DEBUG)
    self.lines: list[str] = []
    self.names: list[str] = []

  def emit(self, record: logging.LogRecord) -> None:
    """Store the message and any exception text."""
    text = record.getMessage()
    if record.exc_info:
      text += "\n" + logging.Formatter().formatException(record.exc_info)
    self.lines.append(f"{record.name} {record.levelname}: {text}")
    self.names.append(record.name)


class Capture:
  """Attaches one Captured handler at DEBUG to the root logger and uvicorn's (which don't propagate)."""

  NAMES = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "bond", "aiokafka")
  HANDLED = ("", "uvicorn", "uvicorn.access")

  def __init__(self) -> None:
    self.handler = Captured()
    self.levels = {n: logging.getLogger(n).level for n in self.NAMES}

  def attach(self) -> None:
    """Set DEBUG and add the handler; again after uvicorn's dictConfig reset its loggers."""
    for name in self.NAMES:
      logging.getLogger(name).setLevel(logging.DEBUG)
    for name in self.HANDLED:
      logging.getLogger(name).addHandler(self.handler)

  def detach(self) -> None:
    """Remove the handler and restore the levels."""
    for name in self.HANDLED:
      logging.getLogger(name).removeHandler(self.handler)
    for name, level in self.levels.items():
      logging.getLogger(name).setLevel(level)


@pytest.fixture
def capture() -> Iterator[Capture]:
  """Capture every log record at DEBUG for the test's length."""
  cap = Capture()
  cap.attach()
  yield cap
  cap.detach()


async def test_secrets_and_tokens_never_reach_the_logs(
  infra: dict[str, str], capture: Capture
) -> None:
  from tests.integration.test_api import ApiServer, settings_for

  async def markets(exchange_id: str, settings: Settings) -> set[str]:
    return {"BTC/USDT", "ETH/USDT"}

  project, key = f"hostile-{uuid.uuid4().hex[:8]}", "hostile-key-" + uuid.uuid4().hex
  settings = settings_for(infra, 0, bond_api_keys=f"{project}:{key}", bond_secret=SECRET)
  api = await asyncio.to_thread(ApiServer(settings, market_loader=markets).start)
  gateway = await GatewayServer(Settings(bond_secret=SECRET)).start()
  capture.attach()  # uvicorn's own logging config replaced its loggers' levels and handlers
  tokens: list[str] = []
  sid = ""
  try:
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api.url, headers=auth, timeout=30) as http:
      spec = {"spec": {"sources": ["ccxt"], "symbols": ["BTC/USDT"], "interval_sec": 1}}
      created = await http.post("/v1/streams", json=spec)
      assert created.status_code == 201, created.text
      sid = created.json()["stream_id"]
      tokens.append(created.json()["token"])
      for _ in range(3):
        fresh = await http.post(f"/v1/streams/{sid}/token")
        assert fresh.status_code == 200
        tokens.append(fresh.json()["token"])
      bad_key = await http.get("/v1/streams", headers={"Authorization": f"Bearer {key}x"})
      assert bad_key.status_code == 401
      assert (await http.get(f"/v1/streams/{sid}")).status_code == 200
      good = await websockets.connect(gateway.url(sid, tokens[-1]))
      await wait_until(lambda: gateway.gateway.fanout.listening(sid) == 1)
      bad = [tampered(tokens[0]), sign(sid, secret=OTHER_SECRET), tokens[1] + "x"]
      tokens += bad
      for token in bad:
        assert (await close_of(gateway.url(sid, token)))[0] == 4401
      await good.close()
      await wait_until(lambda: gateway.gateway.open == 0)
      assert (await http.delete(f"/v1/streams/{sid}")).status_code == 200
  finally:
    await gateway.stop()
    await asyncio.to_thread(api.stop)
  lines = capture.handler.lines
  assert sid and any(sid in line for line in lines), "the capture saw nothing of the run"
  secrets = {"BOND_SECRET": SECRET, "API key": key}
  tokens_ = {f"token {t[:20]}...": t for t in tokens}
  tokens_ |= {f"signature {t[-64:][:8]}...": t[-64:] for t in tokens if len(t) > 64}

  def leaks(needles: dict[str, str], keep: Any) -> list[str]:
    return [
      f"{what} in {line[:220]}"
      for what, needle in needles.items()
      for line, name in zip(lines, capture.handler.names, strict=True)
      if keep(name) and needle in line
    ]

  # The test's own `websockets` client logs its requests at DEBUG; that is not the servers.
  servers = lambda name: not name.startswith("websockets.client")  # noqa: E731
  bond_side = lambda name: servers(name) and not name.startswith("uvicorn")  # noqa: E731
  found = leaks(secrets, servers) + leaks(tokens_, bond_side)
  assert not found, "secrets reached the logs:\n" + "\n".join(found[:10])
  print(f"\n{len(lines)} log records at DEBUG: no secret or API key; no token outside uvicorn")
  # uvicorn logs every WebSocket request line, query string and so token included, at INFO
  # (`... "WebSocket /ws/<id>?token=..." [accepted]`), the level `bond up` runs it at.
  uvicorn_leaks = leaks(tokens_, lambda name: name.startswith("uvicorn"))
  assert not uvicorn_leaks, "uvicorn logged a full token:\n" + uvicorn_leaks[0]
