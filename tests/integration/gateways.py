"""Helpers shared by the gateway and SDK tests (the `streams` fixture is in conftest.py).

A gateway in-process under uvicorn on a free port or as a subprocess, registered streams
that clean up after themselves, and a producer that writes windows like the worker
does: to `bond.stream.<id>` in Kafka first, then to the Redis ring with id `<seq>-0`.
"""

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import uvicorn
from aiokafka import AIOKafkaProducer

from bond.config import Settings
from bond.gateway.ws import Gateway
from bond.gateway.ws_app import create_gateway_app
from bond.registry import RegistryWriter, new_record
from bond.schemas import AggregatedEvent, StreamSpec
from bond.topics import stream_topic
from bond.topics.admin import TopicAdmin
from bond.wire import iso_ms, metrics_key, stream_key
from tests.conftest import ROOT, free_port

STEP_MS = 1000  # the test streams' interval: one window per second of `seq`


def tampered(token: str) -> str:
  """Return the token with the last hex digit of its signature changed (never to itself)."""
  return token[:-1] + ("1" if token.endswith("0") else "0")


def event(sid: str, seq: int, pad: int = 0) -> dict[str, Any]:
  """Return one AggregatedEvent as JSON-able data, optionally padded to make big frames."""
  start = seq - STEP_MS
  body = AggregatedEvent(
    stream_id=sid,
    seq=seq,
    ts=iso_ms(seq),
    window_start=iso_ms(start),
    interval_sec=STEP_MS // 1000,
    symbol="BTC/USDT",
    price_avg=68000 + seq % 1000 / 10,
    price_open=68000.0,
    price_high=68100.0,
    price_low=67900.0,
    price_close=68050.0,
    vwap=68010.0,
    volume_sum=1.5,
    trades=3,
    tweets=1,
    onchain={"tx": 2, "transfer": 1},
    raw_data={"sim": True, "pad": os.urandom(pad // 2).hex()} if pad else {"sim": True},
  )
  return body.model_dump(mode="json")


GRACEFUL_SHUTDOWN_SEC = 10


class GatewayServer:
  """The gateway app under an in-process uvicorn on 127.0.0.1."""

  def __init__(
    self, settings: Settings, port: int | None = None, ws_max_size: int | None = None
  ) -> None:
    self.settings = settings
    self.port = port or free_port()
    # uvicorn's --ws-max-size: the launch commands pass BOND_WS_MAX_FRAME_BYTES.
    self.ws_max_size = ws_max_size or settings.bond_ws_max_frame_bytes
    self.app = create_gateway_app(settings, handle_signals=False)
    self.server: uvicorn.Server | None = None
    self._task: asyncio.Task[None] | None = None

  @property
  def gateway(self) -> Gateway:
    """Return the running Gateway (from the app's state)."""
    return self.app.state.gateway

  def url(self, sid: str, token: str, from_: str | None = None) -> str:
    """Return the WebSocket URL of a stream."""
    query = f"token={token}" + (f"&from={from_}" if from_ is not None else "")
    return f"ws://127.0.0.1:{self.port}/ws/{sid}?{query}"

  async def start(self) -> "GatewayServer":
    """Start serving and wait until the port answers."""
    config = uvicorn.Config(
      self.app,
      host="127.0.0.1",
      port=self.port,
      log_level="warning",
      lifespan="on",
      ws_ping_interval=5,
      ws_max_size=self.ws_max_size,
      # As `bond up` runs it: sockets still open after this long are cut on shutdown.
      timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SEC,
    )
    self.server = uvicorn.Server(config)
    self._task = asyncio.create_task(self.server.serve())
    deadline = time.monotonic() + 30
    while not self.server.started:
      if self._task.done():
        self._task.result()
      assert time.monotonic() < deadline, "gateway did not start"
      await asyncio.sleep(0.02)
    return self

  async def stop(self, graceful: bool = True) -> None:
    """Close sockets with 1001 (graceful) and stop the server."""
    if self.server is None or self._task is None:
      return
    if graceful and self.server.started:
      await self.gateway.go_away()
    self.server.should_exit = True
    await asyncio.wait_for(self._task, 30)
    self.server = None


class GatewayProcess:
  """The gateway as its own process, the way `bond up` runs it (uvicorn --factory)."""

  def __init__(self, port: int, env: dict[str, str] | None = None) -> None:
    self.port = port
    self.env = {**os.environ, **(env or {})}
    self.proc: asyncio.subprocess.Process | None = None

  async def start(self) -> None:
    """Start uvicorn and wait for /readyz."""
    cmd = [
      sys.executable, "-m", "uvicorn", "bond.gateway.app:gateway", "--factory",
      "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
      "--ws-max-size", "4096",
    ]  # fmt: skip
    self.proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, env=self.env)
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as http:
      while True:
        assert self.proc.returncode is None, "gateway process exited"
        assert time.monotonic() < deadline, "gateway process did not become ready"
        try:
          if (await http.get(f"http://127.0.0.1:{self.port}/readyz")).status_code == 200:
            return
        except httpx.HTTPError:
          pass
        await asyncio.sleep(0.1)

  async def stop(self, sig: int = signal.SIGTERM, timeout_sec: float = 20) -> int:
    """Signal the process and wait for it; return its exit code."""
    assert self.proc is not None
    if self.proc.returncode is None:
      self.proc.send_signal(sig)
    try:
      return await asyncio.wait_for(self.proc.wait(), timeout_sec)
    except TimeoutError:
      self.proc.kill()
      return await self.proc.wait()


class Streams:
  """Registers test streams (record + topic) and removes them all at the end."""

  def __init__(self, bootstrap: str, redis: Any) -> None:
    self.bootstrap = bootstrap
    self.redis = redis
    self.writer = RegistryWriter(bootstrap)
    self.created: list[str] = []

  async def new(self) -> str:
    """Register a stream (token epoch 0: `sign(sid)` tokens work) and create its topic."""
    sid = uuid.uuid4().hex[:16]
    spec = StreamSpec.model_validate(
      {"sources": ["ccxt"], "symbols": ["BTC/USDT"], "interval_sec": 1}
    )
    async with TopicAdmin(self.bootstrap) as admin:
      await admin.create_stream_topic(sid)
    await self.writer.put(new_record(sid, "test", spec, token_epoch=0))
    self.created.append(sid)
    return sid

  async def delete(self, sid: str) -> None:
    """Tombstone a stream."""
    await self.writer.delete(sid)

  async def cleanup(self) -> None:
    """Tombstone every stream made, drop its Redis keys and topic."""
    async with TopicAdmin(self.bootstrap) as admin:
      for sid in self.created:
        await self.writer.delete(sid)
        await self.redis.delete(stream_key(sid), metrics_key(sid))
        await admin.delete_stream_topic(sid)
    await self.writer.stop()


class WindowWriter:
  """Writes windows like the worker: a batch to Kafka, then the same batch to Redis."""

  def __init__(self, bootstrap: str, redis: Any, sid: str, pad: int = 0) -> None:
    self.producer = AIOKafkaProducer(
      bootstrap_servers=bootstrap, linger_ms=0, max_request_size=4 << 20
    )
    self.redis = redis
    self.sid = sid
    self.pad = pad
    self.written: list[int] = []

  async def start(self) -> None:
    """Connect the producer."""
    await self.producer.start()

  async def stop(self) -> None:
    """Flush and close the producer."""
    await self.producer.stop()

  async def write(self, seqs: list[int], redis: bool = True, redis_lag_sec: float = 0) -> None:
    """Write windows to the stream's topic, then (unless told not to) to its ring."""
    bodies = [json.dumps(event(self.sid, s, self.pad), separators=(",", ":")) for s in seqs]
    topic = stream_topic(self.sid).name
    futures = [await self.producer.send(topic, b.encode(), key=self.sid.encode()) for b in bodies]
    await asyncio.gather(*futures)
    if redis_lag_sec:
      await asyncio.sleep(redis_lag_sec)
    if redis:
      pipe = self.redis.pipeline(transaction=False)
      for seq, body in zip(seqs, bodies, strict=True):
        pipe.xadd(stream_key(self.sid), {"e": body}, id=f"{seq}-0", maxlen=1000, approximate=True)
      await pipe.execute()
    self.written += seqs


async def wait_until(check: Callable[[], bool | Awaitable[bool]], timeout_sec: float = 10) -> None:
  """Poll `check` until it is true or fail after the timeout."""
  deadline = time.monotonic() + timeout_sec
  while True:
    result = check()
    if not isinstance(result, bool):
      result = await result
    if result:
      return
    assert time.monotonic() < deadline, "condition not met in time"
    await asyncio.sleep(0.02)
