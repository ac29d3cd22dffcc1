"""The MCP server against a whole private Bond platform (sim exchange, Faust worker with feeds,
REST API, gateway) on the test session's Kafka and Redis, driven by the `mcp` SDK's own client:
over stdio (`bond mcp` as a subprocess, as an agent host runs it) and over streamable HTTP
(the /mcp app under uvicorn, behind its API-key check)."""

import asyncio
import itertools
import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated

from bond.devstack import DevStack
from tests.conftest import REDIS_URL, TEST_KAFKA_PORT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOOLS = {
  "compile_stream",
  "create_stream",
  "list_streams",
  "delete_stream",
  "get_windows",
  "wait_for_windows",
  "describe_fields",
}


@dataclass
class Platform:
  api_url: str
  api_key: str


@pytest.fixture(scope="module")
def platform(infra: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
  """Run `bond up`'s platform parts (sim market, feeds on) under a private topic prefix."""
  tag = uuid.uuid4().hex[:8]
  home = tmp_path_factory.mktemp("mcp-platform")
  key = "key-" + uuid.uuid4().hex
  stack = DevStack(
    home=home,
    kafka_port=TEST_KAFKA_PORT,
    controller_port=TEST_KAFKA_PORT + 1,
    redis_url=REDIS_URL,
    api_port=free_port(),
    ws_port=free_port(),
    sim_port=free_port(),
    worker_web_port=free_port(),
  )
  prefix = f"mcp-{tag}."
  stack.env = {
    "BOND_ENV": "dev",
    "BOND_MARKET": "sim",
    "BOND_API_KEYS": f"mcp-{tag}:{key}",
    "BOND_TOPIC_PREFIX": prefix,
    "BOND_APP_ID": f"bond-mcp-{tag}",
    "BOND_FEEDS": "on",
    "BOND_HOME": str(home),
    "WS_HOST": f"127.0.0.1:{stack.ws_port}",
  }
  asyncio.run(_create_topics(infra["bootstrap"], prefix))
  stack.up(stack.platform_parts("sim"), stack.process_env("sim"), lambda name, state, sec: None)
  api_url = f"http://127.0.0.1:{stack.api_port}"
  try:
    # The API lists the exchanges' markets once (cached), slowly on a loaded machine.
    httpx.post(
      f"{api_url}/v1/compile",
      json={"natural_language": "BTC, ETH and SOL price every 1s"},
      headers={"Authorization": f"Bearer {key}"},
      timeout=120,
    ).raise_for_status()
    yield Platform(api_url, key)
  finally:
    stack.down()
    _drop_topics(infra["bootstrap"], prefix)


async def _create_topics(bootstrap: str, prefix: str) -> None:
  import dataclasses

  from bond.topics import CATALOG
  from bond.topics.admin import TopicAdmin

  async with TopicAdmin(bootstrap) as admin:
    await admin.ensure([dataclasses.replace(t, name=prefix + t.name) for t in CATALOG])


def _drop_topics(bootstrap: str, prefix: str) -> None:
  from bond.topics.admin import drop_topics

  asyncio.run(drop_topics(bootstrap, (prefix,)))


def _json(result: Any) -> dict[str, Any]:
  """Return the JSON answer of a successful tool call."""
  assert not result.is_error, result.content[0].text
  return json.loads(result.content[0].text)


def _error(result: Any) -> str:
  assert result.is_error, "the call should have failed"
  return str(result.content[0].text)


def _seqs(table: dict[str, Any]) -> list[int]:
  seq = table["columns"].index("seq")
  return sorted({row[seq] for row in table["rows"]})


async def scenario(client: Client, sentence: str) -> None:
  """What an agent does: check a sentence, create the stream, listen, read, subscribe, delete."""
  names = {t.name for t in (await client.list_tools()).tools}
  assert names >= TOOLS
  fields = _json(await client.call_tool("describe_fields", {}))
  documented = {f["name"] for f in fields["fields"]}
  assert {"seq", "price_avg", "vwap", "volume_sum", "trades"} <= documented
  assert all(f["unit"] and f["null_means"] for f in fields["fields"])

  preview = _json(await client.call_tool("compile_stream", {"sentence": sentence}))
  assert preview["exists"] is False and preview["interval_sec"] == 1
  refused = _error(await client.call_tool("compile_stream", {"sentence": "BTC zorblax every 2s"}))
  assert "zorblax" in refused

  created = _json(await client.call_tool("create_stream", {"sentence": sentence}))
  sid = created["stream_id"]
  assert sid == preview["stream_id"] and created["ws_url"].startswith("ws://127.0.0.1:")
  assert "price_avg" in created["fields"]
  listed = _json(await client.call_tool("list_streams", {}))
  assert sid in [s["stream_id"] for s in listed["streams"]]

  # Listen: three new windows, then on after the last seq (no gap) until the sim market's
  # trades show up in a window (a new stream's feeds take a moment to start).
  waited = _json(
    await client.call_tool("wait_for_windows", {"stream_id": sid, "count": 3, "timeout_sec": 90})
  )
  assert waited["timed_out"] is False and waited["windows"] == 3
  first = _seqs(waited)
  assert all(b - a == 1000 for a, b in itertools.pairwise(first)), first
  price = waited["columns"].index("price_avg")
  more = waited
  async with asyncio.timeout(120):
    while not any(row[price] is not None for row in more["rows"]):
      last = more["last_seq"]
      more = _json(
        await client.call_tool(
          "wait_for_windows",
          {"stream_id": sid, "count": 2, "timeout_sec": 60, "after_seq": last},
        )
      )
      assert _seqs(more) == [last + 1000, last + 2000], "a gap or a duplicate after after_seq"
  assert more["sim"] is True

  # Read back: the five windows up to the last one waited for, with the same values, and
  # the latest ones (up to now).
  upto = _json(
    await client.call_tool(
      "get_windows", {"stream_id": sid, "limit": 5, "to_time": str(more["last_seq"])}
    )
  )
  got = _seqs(upto)  # the stream may be younger than five windows
  assert got == list(range(got[0], more["last_seq"] + 1, 1000))
  assert len(got) <= 5 and got[0] <= max(more["last_seq"] - 4000, first[0])
  by_seq = {row[0]: row for row in upto["rows"]}
  for row in more["rows"]:
    assert by_seq[row[0]] == row
  latest = _json(await client.call_tool("get_windows", {"stream_id": sid, "limit": 3}))
  assert latest["windows"] == 3 and latest["last_seq"] >= more["last_seq"]  # up to now
  assert _seqs(latest) == list(range(latest["last_seq"] - 2000, latest["last_seq"] + 1, 1000))
  ranged = _json(
    await client.call_tool(
      "get_windows",
      {"stream_id": sid, "from_time": str(first[0] - 1), "to_time": str(first[-1]), "limit": 10},
    )
  )
  assert _seqs(ranged) == first

  # Subscribe to the latest-window resource: one notification per new window.
  uri = f"bond://streams/{sid}/latest"
  seen: list[str] = []
  async with client.listen(resource_subscriptions=[uri]) as sub:
    async with asyncio.timeout(60):
      async for event in sub:
        assert isinstance(event, ResourceUpdated)
        seen.append(event.uri)
        if len(seen) == 2:
          break
  assert seen == [uri, uri]
  body = json.loads((await client.read_resource(uri)).contents[0].text)  # type: ignore[union-attr]
  assert body["stream_id"] == sid and body["window"]["seq"] > more["last_seq"]

  # Errors a model can act on.
  unknown = "bond://streams/0123456789abcdef/latest"
  with pytest.raises(MCPError, match="no stream"):
    async with client.listen(resource_subscriptions=[unknown]):
      pass
  with pytest.raises(MCPError, match="no stream"):
    await client.read_resource(unknown)
  assert "no stream" in _error(
    await client.call_tool("get_windows", {"stream_id": "0123456789abcdef"})
  )
  assert "stream_id" in _error(await client.call_tool("get_windows", {"stream_id": "BTC"}))
  assert "count" in _error(
    await client.call_tool("wait_for_windows", {"stream_id": sid, "count": 5000})
  )
  assert "exactly one" in _error(await client.call_tool("create_stream", {}))

  # A stream that did not exist a moment ago, with its past: backfilled from the raw topics
  # the first stream's feeds have been filling, then live with no gap.
  pair = created["spec"]["symbols"][0]
  spec = {"sources": ["ccxt"], "symbols": [pair], "interval_sec": 2}
  asked_ms = int(time.time() * 1000)
  past = _json(await client.call_tool("create_stream", {"spec": spec, "backfill": "20s"}))
  assert past["backfill_sec"] == 20
  live = _json(
    await client.call_tool(
      "wait_for_windows", {"stream_id": past["stream_id"], "count": 1, "timeout_sec": 90}
    )
  )
  assert live["timed_out"] is False
  history = _json(
    await client.call_tool(
      "get_windows",
      {"stream_id": past["stream_id"], "from_time": str(asked_ms - 30_000), "limit": 50},
    )
  )
  seqs = _seqs(history)
  assert seqs[0] < asked_ms - 10_000, "no window from before the stream was created"
  assert all(b - a == 2000 for a, b in itertools.pairwise(seqs)), seqs
  price = history["columns"].index("price_avg")
  assert any(row[price] is not None for row in history["rows"] if row[0] < asked_ms)
  assert _json(await client.call_tool("delete_stream", {"stream_id": past["stream_id"]}))["deleted"]

  assert _json(await client.call_tool("delete_stream", {"stream_id": sid}))["deleted"] is True
  listed = _json(await client.call_tool("list_streams", {}))
  assert sid not in [s["stream_id"] for s in listed["streams"]]


async def test_stdio_agent_creates_listens_reads_and_subscribes(platform: Platform) -> None:
  bond = str(Path(sys.executable).parent / "bond")
  params = StdioServerParameters(
    command=bond,
    args=["mcp"],
    env={"BOND_API_URL": platform.api_url, "BOND_API_KEY": platform.api_key},
  )
  async with Client(params, read_timeout_seconds=150) as client:
    await scenario(client, "ETH price every 1s")


@pytest.fixture
def mcp_url(platform: Platform) -> str:
  """The API's own /mcp endpoint (streamable HTTP; the API key is required)."""
  return f"{platform.api_url}/mcp"


async def test_http_requires_a_key_then_serves_an_agent(platform: Platform, mcp_url: str) -> None:
  async with httpx.AsyncClient(timeout=10) as http:
    hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
      resp = await http.post(mcp_url, json=hello, headers=headers)
      assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
    # The DNS-rebinding guard: a foreign Host header is refused even with a key.
    resp = await http.post(
      mcp_url,
      json=hello,
      headers={"Authorization": f"Bearer {platform.api_key}", "Host": "evil.example:80"},
    )
    assert resp.status_code == 421

  def transport() -> Any:
    http = httpx2.AsyncClient(
      headers={"Authorization": f"Bearer {platform.api_key}"},
      timeout=httpx2.Timeout(30, read=300),
    )
    return streamable_http_client(mcp_url, http_client=http)

  # A handshake-era host (2025 protocol) lists and calls tools too.
  async with Client(transport(), mode="legacy") as old:
    assert {t.name for t in (await old.list_tools()).tools} >= TOOLS
    assert _json(await old.call_tool("list_streams", {}))["streams"] == []
  async with Client(transport(), read_timeout_seconds=150) as client:
    await scenario(client, "BTC price every 1s")


async def test_bond_mcp_without_a_reachable_api_says_so() -> None:
  """`bond mcp` starts without Bond; its tools then say that Bond cannot be reached."""
  params = StdioServerParameters(
    command=str(Path(sys.executable).parent / "bond"),
    args=["mcp"],
    env={"BOND_API_URL": f"http://127.0.0.1:{free_port()}"},
  )
  async with Client(params) as client:
    assert "cannot reach the Bond API" in _error(await client.call_tool("list_streams", {}))
