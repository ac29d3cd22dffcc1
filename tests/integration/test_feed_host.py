"""The feed host (agents/feedhost.py): the worker's child process that runs its feeds.

It runs the feeds it is told to, against the sim exchange through ccxt, into real Kafka;
after confirming a mute it publishes nothing more; it ends when its stdin closes and when
its parent is killed (kill -9), so no feed is ever published by a process nobody can mute.
"""

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bond.agents.state import partition_for
from bond.topics import RAW_TOPICS, TopicSpec
from bond.topics.admin import TopicAdmin
from tests.integration.pipeline import partition_records

pytestmark = pytest.mark.timeout(120)

FEED = ["ccxt", "binance", "BTC/USDT", "BTC/USDT"]
PARAMS = {"liquidations": False, "event_types": [], "custom": None}


def host_env(isolated_env: dict[str, str], sim_port: int) -> dict[str, str]:
  return {**isolated_env, "BOND_MARKET": "sim", "BOND_SIM_PORT": str(sim_port),
          "BOND_EXCHANGES": "binance", "BOND_FEEDS": "on"}  # fmt: skip


async def wait_until(check: Any, within_sec: float, what: str) -> Any:
  deadline = time.monotonic() + within_sec
  while time.monotonic() < deadline:
    got = await check()
    if got:
      return got
    await asyncio.sleep(0.1)
  raise AssertionError(f"timed out waiting for {what}")


class Host:
  """A feed host process driven over its pipes, as the worker drives it."""

  def __init__(self, proc: asyncio.subprocess.Process) -> None:
    self.proc = proc
    self.lines: list[dict[str, Any]] = []
    self.reader = asyncio.create_task(self._read())

  async def _read(self) -> None:
    assert self.proc.stdout is not None
    while line := await self.proc.stdout.readline():
      self.lines.append(json.loads(line))

  async def send(self, msg: dict[str, Any]) -> None:
    assert self.proc.stdin is not None
    self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
    await self.proc.stdin.drain()

  def running(self) -> list[str]:
    stats = [m for m in self.lines if m["op"] == "stats"]
    return stats[-1]["running"] if stats else []


async def start_host(
  infra: dict[str, Any], isolated_env: dict[str, str], sim_port: int
) -> tuple[Host, TopicSpec]:
  """Create the isolated raw topic and start a feed host against the sim, as a worker does."""
  prefix = isolated_env["BOND_TOPIC_PREFIX"]
  raw = dataclasses.replace(RAW_TOPICS["ccxt"], name=prefix + RAW_TOPICS["ccxt"].name)
  async with TopicAdmin(infra["bootstrap"]) as admin:
    await admin.ensure([raw])
  proc = await asyncio.create_subprocess_exec(
    sys.executable, "-m", "bond.agents.feedhost", "--parent", str(os.getpid()),
    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    env=host_env(isolated_env, sim_port),
  )  # fmt: skip
  return Host(proc), raw


async def raw_end(bootstrap: str, topic: str) -> int:
  tp = TopicPartition(topic, partition_for("BTC/USDT", RAW_TOPICS["ccxt"].partitions))
  consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
  await consumer.start()
  try:
    return (await consumer.end_offsets([tp]))[tp]
  finally:
    await consumer.stop()


async def test_runs_feeds_publishes_nothing_once_muted_and_ends_with_stdin(
  infra, isolated_env, sim_factory
):
  sim = await sim_factory(trades_per_sec=50, seed=11)
  host, raw = await start_host(infra, isolated_env, sim.port)
  proc = host.proc
  try:
    await host.send({"op": "run", "feeds": [{"feed": FEED, "params": PARAMS}]})
    await wait_until(lambda: asyncio.sleep(0, "ccxt|binance|BTC/USDT" in host.running()), 30,
                     "the feed to run")  # fmt: skip
    start = await raw_end(infra["bootstrap"], raw.name)
    grown = await wait_until(
      lambda: _grown(infra["bootstrap"], raw.name, start + 20), 30, "trades in the raw topic"
    )
    assert grown

    await host.send({"op": "mute", "id": 1})
    await wait_until(lambda: asyncio.sleep(0, {"op": "muted", "id": 1} in host.lines), 10,
                     "the mute to be confirmed")  # fmt: skip
    # Records already handed to the producer may still land: take the end once it is still.
    muted_at = await _settled_end(infra["bootstrap"], raw.name)
    # The sim keeps trading: a feed still publishing would add records within a second.
    later = time.monotonic() + 1.5
    while time.monotonic() < later:
      assert await raw_end(infra["bootstrap"], raw.name) == muted_at, "published after a mute"
      await asyncio.sleep(0.25)

    # A new set after the mute runs again (the worker sends one when ownership settles).
    await host.send({"op": "run", "feeds": [{"feed": FEED, "params": PARAMS}]})
    await wait_until(lambda: _grown(infra["bootstrap"], raw.name, muted_at + 1), 30,
                     "trades again after the next run")  # fmt: skip

    assert proc.stdin is not None
    proc.stdin.close()
    await asyncio.wait_for(proc.wait(), 10)
  finally:
    if proc.returncode is None:
      proc.kill()
      await proc.wait()
    host.reader.cancel()


async def raw_btc(bootstrap: str, topic: str) -> list[dict[str, Any]]:
  """Return every BTC/USDT record of the raw partition so far (decoded)."""
  tp = TopicPartition(topic, partition_for("BTC/USDT", RAW_TOPICS["ccxt"].partitions))
  return await partition_records(bootstrap, tp)


async def test_a_feed_asked_for_more_restarts_with_it_and_publishes_no_trade_twice(
  infra, isolated_env, sim_factory
):
  # A stream wanting liquidations joins a feed that runs without them (its first streams
  # did not ask): the feed starts again with them, after the last trade it published.
  sim = await sim_factory(trades_per_sec=50, seed=12, liquidation_ratio=0.2)
  host, raw = await start_host(infra, isolated_env, sim.port)
  proc = host.proc

  async def kinds() -> set[str]:
    return {r.get("kind", "heartbeat") for r in await raw_btc(infra["bootstrap"], raw.name)}

  try:
    await host.send({"op": "run", "feeds": [{"feed": FEED, "params": PARAMS}]})
    await wait_until(lambda: _grown(infra["bootstrap"], raw.name, 50), 30, "trades")
    assert "liquidation" not in await kinds()

    await host.send({"op": "run", "feeds": [{"feed": FEED, "params": {**PARAMS, "liquidations": True}}]})  # fmt: skip
    await wait_until(lambda: _has_liquidation(kinds), 30, "liquidations after the new run")
    # Trades kept coming after the restart, none of them twice.
    trades_at = len(await raw_btc(infra["bootstrap"], raw.name))
    await wait_until(lambda: _grown(infra["bootstrap"], raw.name, trades_at + 20), 30, "trades")
    ids = [r["trade_id"] for r in await raw_btc(infra["bootstrap"], raw.name) if r.get("kind") == "trade"]  # fmt: skip
    assert len(ids) == len(set(ids)), "a trade was published twice across the restart"

    # Asked for less, it keeps running as it is: no restart, no gap, liquidations go on.
    async def liquidations() -> int:
      return sum(
        r.get("kind") == "liquidation" for r in await raw_btc(infra["bootstrap"], raw.name)
      )

    before = await liquidations()
    await host.send({"op": "run", "feeds": [{"feed": FEED, "params": PARAMS}]})
    await wait_until(lambda: _more(liquidations, before + 20), 30, "liquidations to go on")
  finally:
    if proc.returncode is None:
      proc.kill()
      await proc.wait()
    host.reader.cancel()


async def _more(count: Any, than: int) -> bool:
  return await count() > than


async def _has_liquidation(kinds: Any) -> bool:
  return "liquidation" in await kinds()


async def _grown(bootstrap: str, topic: str, at_least: int) -> bool:
  return await raw_end(bootstrap, topic) >= at_least


async def _settled_end(bootstrap: str, topic: str) -> int:
  """Return the topic's end once two reads 0.5 s apart agree (bounded)."""
  last = await raw_end(bootstrap, topic)
  for _ in range(20):
    await asyncio.sleep(0.5)
    now = await raw_end(bootstrap, topic)
    if now == last:
      return now
    last = now
  raise AssertionError("the raw topic kept growing after the mute")


def test_dies_with_its_parent(isolated_env, tmp_path):
  """kill -9 of the worker takes its feed host with it (the kernel, not a clean-up)."""
  pid_file = tmp_path / "host.pid"
  parent_code = (
    "import subprocess, sys, time, pathlib\n"
    "import os\n"
    "p = subprocess.Popen([sys.executable, '-m', 'bond.agents.feedhost', '--parent',"
    " str(os.getpid())], stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
    # Its first line comes after it asked the kernel to kill it with its parent.
    "p.stdout.readline()\n"
    f"pathlib.Path({str(pid_file)!r}).write_text(str(p.pid))\n"
    "time.sleep(120)\n"
  )
  parent = subprocess.Popen([sys.executable, "-c", parent_code], env=isolated_env)
  try:
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
      assert time.monotonic() < deadline, "the host did not start"
      time.sleep(0.05)
    child = int(pid_file.read_text())
    assert b"feedhost" in (_cmdline(child) or b"")
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while _alive(child):
      assert time.monotonic() < deadline, "the feed host outlived its killed worker"
      time.sleep(0.05)
  finally:
    if parent.poll() is None:
      parent.kill()


def _cmdline(pid: int) -> bytes | None:
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      return f.read()
  except OSError:
    return None


def _alive(pid: int) -> bool:
  """Return whether the process runs (a zombie, killed and not yet reaped, does not)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False
