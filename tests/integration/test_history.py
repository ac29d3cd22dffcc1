"""History in Kafka (issue 14): a WebSocket `from` older than the Redis ring, the windows
endpoint in its three formats, the SDK's `history` and `bond export`, on the real Kafka,
Redis, REST API and gateway.

The stream's 5 s windows of the last two hours (and a few from four hours back) are written
to its Kafka topic with record timestamps in the past, as the worker would have written
them; only the last ~50 s also sit in the Redis ring; more windows are written "live"
(Kafka, then Redis) while clients read.
"""

import asyncio
import csv
import io
import itertools
import json
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uvicorn
import websockets
from aiokafka import AIOKafkaProducer

from bond import cli
from bond.client import BondAPIError, BondClient
from bond.config import Settings
from bond.gateway.api import create_api_app
from bond.registry import RegistryWriter, new_record
from bond.schemas import StreamSpec
from bond.tokens import sign
from bond.topics import stream_topic
from bond.topics.admin import TopicAdmin
from bond.topics.catalog import STREAM_INDEX_BYTES
from bond.wire import iso_ms, metrics_key, stream_key
from tests.conftest import ROOT, free_port
from tests.integration.gateways import GatewayServer, event, wait_until

pytestmark = pytest.mark.integration

STEP_MS = 5000
HISTORY_HOURS = 3  # the test deployment's BOND_HISTORY_HOURS
HOUR_MS = 3_600_000
RING_MS = 50_000  # the windows also in the ring: the last 50 s (the ring keeps 60 s)
OLD_WINDOWS = 4  # windows 4 h back: older than BOND_HISTORY_HOURS, never served


def iso(ms: int) -> str:
  return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


async def _markets(exchange_id: str, settings: Settings) -> set[str]:
  return {"BTC/USDT"}


class History:
  """The REST API (in a thread), a gateway, and one registered 5 s stream with 2 h of history."""

  def __init__(self, infra: dict[str, str], redis: Any) -> None:
    self.bootstrap = infra["bootstrap"]
    self.redis = redis
    self.project = f"hist-{uuid.uuid4().hex[:8]}"
    self.api_key = "key-" + uuid.uuid4().hex
    self.settings = Settings(
      bond_api_keys=f"{self.project}:{self.api_key}",
      bond_history_hours=HISTORY_HOURS,
      bond_history_limit=400,
    )
    self.gateway = GatewayServer(self.settings)
    port = free_port()
    self.api_url = f"http://127.0.0.1:{port}"
    self.settings.ws_host = f"127.0.0.1:{self.gateway.port}"
    app = create_api_app(self.settings, market_loader=_markets)
    self.server = uvicorn.Server(
      uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    )
    self.thread = threading.Thread(target=self.server.run, daemon=True)
    self.sid = uuid.uuid4().hex[:16]
    self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
    self.written: list[int] = []
    self.first = 0  # the first window of the two hours
    self.ring_from = 0

  async def start(self) -> None:
    """Start everything, register the stream, write its history."""
    self.thread.start()
    await self.gateway.start()
    await wait_until(lambda: self.server.started, 30)
    await self.producer.start()
    spec = StreamSpec.model_validate(
      {"sources": ["ccxt"], "symbols": ["BTC/USDT"], "interval_sec": STEP_MS // 1000}
    )
    async with TopicAdmin(self.bootstrap, stream_retention_ms=HISTORY_HOURS * HOUR_MS) as admin:
      await admin.create_stream_topic(self.sid)
    writer = RegistryWriter(self.bootstrap)
    await writer.start()
    await writer.put(new_record(self.sid, self.project, spec, token_epoch=0))
    await writer.stop()
    now = int(time.time() * 1000) // STEP_MS * STEP_MS
    old = [now - 4 * HOUR_MS + i * STEP_MS for i in range(OLD_WINDOWS)]
    self.first = now - 2 * HOUR_MS - 60_000  # a minute more than two hours
    recent = list(range(self.first, now + 1, STEP_MS))
    self.ring_from = now - RING_MS
    await self.write(old, redis=False)
    await self.write(recent, redis=False, past=True)
    await self.write([s for s in recent if s >= self.ring_from], kafka=False)
    self.written = recent  # the old ones are out of BOND_HISTORY_HOURS

  def body(self, seq: int) -> str:
    ev = event(self.sid, seq)
    ev.update(window_start=iso_ms(seq - STEP_MS), interval_sec=STEP_MS // 1000)
    return json.dumps(ev, separators=(",", ":"))

  async def write(
    self, seqs: list[int], *, kafka: bool = True, redis: bool = True, past: bool = True
  ) -> None:
    """Write windows to Kafka (record time = window end + 300 ms), then to the ring."""
    topic = stream_topic(self.sid).name
    if kafka:
      futures = [
        await self.producer.send(
          topic,
          self.body(s).encode(),
          key=self.sid.encode(),
          timestamp_ms=s + 300 if past else None,
        )
        for s in seqs
      ]
      await asyncio.gather(*futures)
    if redis:
      pipe = self.redis.pipeline(transaction=False)
      for s in seqs:
        pipe.xadd(stream_key(self.sid), {"e": self.body(s)}, id=f"{s}-0")
      await pipe.execute()

  async def live(self, stop: asyncio.Event, count: int) -> None:
    """Write `count` more windows, Kafka then Redis, a few at a time, as the worker does."""
    seq = self.written[-1]
    for _ in range(count):
      if stop.is_set():
        return
      seq += STEP_MS
      await self.write([seq], past=False)
      self.written.append(seq)
      await asyncio.sleep(0.02)

  def client(self) -> BondClient:
    return BondClient(self.api_url, api_key=self.api_key)

  def url(self, from_: str) -> str:
    return self.gateway.url(self.sid, sign(self.sid, 3600 + len(from_)), from_)

  async def stop(self) -> None:
    await self.gateway.stop()
    await self.producer.stop()
    writer = RegistryWriter(self.bootstrap)
    await writer.start()
    await writer.delete(self.sid)
    await writer.stop()
    await self.redis.delete(stream_key(self.sid), metrics_key(self.sid))
    async with TopicAdmin(self.bootstrap) as admin:
      await admin.delete_stream_topic(self.sid)
    self.server.should_exit = True
    await asyncio.to_thread(self.thread.join, 15)


@pytest.fixture
async def history(infra: dict[str, str], redis_client: Any) -> AsyncIterator[History]:
  made = History(infra, redis_client)
  await made.start()
  yield made
  await made.stop()


def gaps(seqs: list[int]) -> list[tuple[int, int]]:
  return [(a, b) for a, b in itertools.pairwise(seqs) if b - a != STEP_MS]


# ---------------------------------------------------------------------- WebSocket


async def read_until(url: str, target: int, timing: dict[str, float] | None = None) -> list[int]:
  seqs: list[int] = []
  started = time.monotonic()
  async with websockets.connect(url, max_queue=None) as ws:
    while not seqs or seqs[-1] < target:
      seqs.append(json.loads(await asyncio.wait_for(ws.recv(), 30))["seq"])
  if timing is not None:
    timing["sec"] = time.monotonic() - started
  return seqs


async def test_replay_from_two_hours_back_reaches_live_without_gap_or_duplicate(history):
  live_count = 60
  target = history.written[-1] + live_count * STEP_MS
  stop = asyncio.Event()
  producer = asyncio.create_task(history.live(stop, live_count))
  asked = int(time.time() * 1000)
  one_hour = history.written[-1] - HOUR_MS + 2 * STEP_MS
  half_hour = history.written[-1] - HOUR_MS // 2
  timing: dict[str, float] = {}
  try:
    runs = await asyncio.gather(
      read_until(history.url("now-2h"), target, timing),
      read_until(history.url(iso(one_hour)), target),
      read_until(history.url(str(half_hour)), target),  # resume after a seq Kafka alone has
    )
  finally:
    stop.set()
    await producer
  two_hours, by_iso, by_seq = runs
  for seqs in runs:
    assert not gaps(seqs), f"gap or duplicate at {gaps(seqs)[:3]}"
    assert seqs[-1] == target
  # now-2h: the first window ending at or after (connect time - 2 h), none before.
  assert asked - 2 * HOUR_MS <= two_hours[0] < asked - 2 * HOUR_MS + STEP_MS + 1000
  # Every window from there (two hours back, bounded above) to live, none missing.
  assert len(two_hours) == (target - two_hours[0]) // STEP_MS + 1
  assert by_iso[0] == one_hour
  assert by_seq[0] == half_hour + STEP_MS
  assert history.gateway.gateway.history_replays == 3
  async with httpx.AsyncClient() as http:
    text = (await http.get(f"http://127.0.0.1:{history.gateway.port}/metrics")).text
  assert "bond_gateway_history_replays_total 3.0" in text
  print(
    f"\nfrom=now-2h: {len(two_hours)} windows ({live_count} live) in {timing['sec']:.2f} s "
    f"with two more replays running"
  )


async def test_from_older_than_history_hours_is_clamped(history):
  # from=now-5h with BOND_HISTORY_HOURS=3: the windows 4 h back are not sent.
  seqs = await read_until(history.url("now-5h"), history.written[-1])
  assert seqs[0] == history.first
  assert not gaps(seqs)


async def test_recent_from_is_served_by_the_ring_alone(history):
  seqs = await read_until(history.url("now-30s"), history.written[-1])
  assert not gaps(seqs) and seqs[0] >= history.ring_from
  assert history.gateway.gateway.history_replays == 0


# ---------------------------------------------------------------------- REST


async def get_pages(history: History, **params: str) -> tuple[list[httpx.Response], int]:
  """Follow X-Next-Cursor from a first request; return the answers and the page count."""
  answers = []
  headers = {"Authorization": f"Bearer {history.api_key}"}
  async with httpx.AsyncClient(base_url=history.api_url, headers=headers, timeout=30) as http:
    query = dict(params)
    while True:
      resp = await http.get(f"/v1/streams/{history.sid}/windows", params=query)
      assert resp.status_code == 200, resp.text
      answers.append(resp)
      cursor = resp.headers.get("x-next-cursor")
      if cursor is None:
        return answers, len(answers)
      assert 'rel="next"' in resp.headers["link"] and f"cursor={cursor}" in resp.headers["link"]
      query = {k: v for k, v in params.items() if k != "from"} | {"cursor": cursor}


async def test_windows_jsonl_pages_cross_the_ring_boundary_once(history):
  answers, pages = await get_pages(history, **{"from": iso(history.first), "limit": "500"})
  seqs = [json.loads(line)["seq"] for r in answers for line in r.text.splitlines()]
  assert seqs == history.written  # Kafka, then the ring's part: each window once
  assert pages == len(history.written) // 500 + 1
  assert all(r.headers["content-type"].startswith("application/x-ndjson") for r in answers)
  # A bounded range: `to` is inclusive, a seq or a time.
  lo, hi = history.written[10], history.written[-3]
  answers, _ = await get_pages(history, **{"from": str(lo), "to": iso(hi), "limit": "10000"})
  seqs = [json.loads(line)["seq"] for line in answers[0].text.splitlines()]
  assert seqs == [s for s in history.written if lo < s <= hi]
  # Recent: the ring alone.
  asked = int(time.time() * 1000)
  answers, _ = await get_pages(history, **{"from": "now-20s"})
  seqs = [json.loads(line)["seq"] for line in answers[0].text.splitlines()]
  assert seqs == [s for s in history.written if s >= seqs[0]]
  assert asked - 20_000 <= seqs[0] < asked - 20_000 + STEP_MS + 1000


async def test_windows_csv_has_flat_columns(history):
  answers, pages = await get_pages(history, **{"from": "now-1h", "format": "csv", "limit": "300"})
  rows = []
  for resp in answers:
    assert resp.headers["content-type"].startswith("text/csv")
    rows += list(csv.DictReader(io.StringIO(resp.text)))
  seqs = [int(r["seq"]) for r in rows]
  assert not gaps(seqs) and seqs[-1] == history.written[-1]
  assert len(seqs) >= HOUR_MS // STEP_MS - 2 and pages == -(-len(seqs) // 300)
  first = rows[0]
  assert first["ts"] == iso_ms(seqs[0]) and first["window_start"] == iso_ms(seqs[0] - STEP_MS)
  assert float(first["price_avg"]) == pytest.approx(68000 + seqs[0] % 1000 / 10)
  assert first["onchain.tx"] == "2" and first["onchain.transfer"] == "1"
  assert json.loads(first["raw_data"]) == {"sim": True}


async def test_windows_parquet_reads_back_with_timestamps(history):
  answers, _ = await get_pages(history, **{"from": "now-2h", "format": "parquet", "limit": "1000"})
  tables = [pq.read_table(pa.BufferReader(r.content)) for r in answers]
  assert all(t.schema.field("ts").type == pa.timestamp("ms", tz="UTC") for t in tables)
  table = pa.concat_tables(tables)
  seqs = table.column("seq").to_pylist()
  assert not gaps(seqs) and seqs[-1] == history.written[-1] and len(answers) == 2
  ts = table.column("ts").to_pylist()
  assert [int(t.timestamp() * 1000) for t in ts] == seqs
  assert table.schema.field("price_avg").type == pa.float64()
  assert table.schema.field("trades").type == pa.int64()


async def test_windows_refuses_bad_queries(history):
  headers = {"Authorization": f"Bearer {history.api_key}"}
  async with httpx.AsyncClient(base_url=history.api_url, headers=headers) as http:
    path = f"/v1/streams/{history.sid}/windows"
    cases = {
      "": "from is required",
      "from=yesterday": "is not now-60s",
      "from=now-1h&limit=0": "limit='0'",
      "from=now-1h&limit=10001": "BOND_HISTORY_MAX_LIMIT",
      "from=now-1h&format=xlsx": "format='xlsx'",
      "from=now-1h&size=3": "unknown query parameter(s) size",
      "from=now-1h&to=now-2h": "is before from",
      "cursor=abc": "cursor='abc'",
      "from=now-1h&from=now-2h": "more than once",
    }
    for query, message in cases.items():
      resp = await http.get(f"{path}?{query}")
      assert resp.status_code == 400, (query, resp.text)
      assert message in resp.json()["error"]["message"], (query, resp.text)
    resp = await http.get("/v1/streams/00000000000000ff/windows?from=now-1h")
    assert resp.status_code == 404
    resp = await http.get(f"{path}?from=now-1h", headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401
    spec = (await http.get("/openapi.json")).json()
    names = {
      p["name"] for p in spec["paths"]["/v1/streams/{stream_id}/windows"]["get"]["parameters"]
    }
    assert names == {"stream_id", "from", "to", "limit", "format", "cursor"}


# ---------------------------------------------------------------------- SDK and CLI


async def test_sdk_history_follows_cursors(history):
  async with history.client() as client:
    rows = await client.history(history.sid, "now-2h")
    assert [r["seq"] for r in rows] == [s for s in history.written if s >= rows[0]["seq"]]
    assert len(rows) > 1000  # more than one page (the API's default page is 400 here)
    some = await client.history(history.sid, str(history.first), to=str(history.written[20]))
    assert [r["seq"] for r in some] == history.written[1:21]
    capped = await client.history(history.sid, iso(history.first), limit=450)
    assert [r["seq"] for r in capped] == history.written[:450]
    frame = await client.history(history.sid, "now-10m", as_frame=True)
    assert len(frame) >= 10 * 60_000 // STEP_MS - 1
    assert str(frame["ts"].dtype).startswith("datetime64") and str(frame["ts"].dt.tz) == "UTC"
    assert frame["seq"].tolist() == [r["seq"] for r in rows][-len(frame) :]
    with pytest.raises(BondAPIError) as err:
      await client.history(history.sid, "last tuesday")
    assert err.value.status == 400
  with history.client().sync() as sync:
    rows = await asyncio.to_thread(sync.history, history.sid, str(history.written[-6]))
    assert [r["seq"] for r in rows] == history.written[-5:]


async def test_sdk_and_cli_listen_from_two_hours_back(history):
  seqs: list[int] = []
  asked = int(time.time() * 1000)
  async with history.client() as client:
    async for ev in client.listen(history.sid, from_="now-2h"):
      seqs.append(ev["seq"])
      if ev["seq"] >= history.written[-1]:
        break
  assert not gaps(seqs) and seqs[-1] == history.written[-1]
  assert asked - 2 * HOUR_MS <= seqs[0] < asked - 2 * HOUR_MS + STEP_MS + 2000

  cmd = [
    sys.executable, "-m", "bond.cli", "--api-url", history.api_url, "--api-key", history.api_key,
    "listen", history.sid, "--from", "now-2h", "--format", "json",
  ]  # fmt: skip
  asked = int(time.time() * 1000)
  proc = await asyncio.create_subprocess_exec(
    *cmd, cwd=ROOT, stdout=asyncio.subprocess.PIPE, limit=1 << 20,
    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
  )  # fmt: skip
  assert proc.stdout is not None
  seqs = []
  try:
    while not seqs or seqs[-1] < history.written[-1]:
      seqs.append(json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))["seq"])
  finally:
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 15) == 0
  assert not gaps(seqs) and seqs[-1] == history.written[-1]
  assert asked - 2 * HOUR_MS <= seqs[0] < asked - 2 * HOUR_MS + STEP_MS + 2000


@pytest.mark.parametrize("suffix", ["parquet", "csv", "jsonl"])
async def test_bond_export_writes_a_file_that_reads_back(history, tmp_path, suffix):
  out = tmp_path / f"btc.{suffix}"
  argv = ["--api-url", history.api_url, "--api-key", history.api_key, "export", history.sid]
  argv += ["--from", "now-2h", "-o", str(out)]
  assert await asyncio.to_thread(cli.main, argv) == 0
  if suffix == "parquet":
    seqs = pq.read_table(out).column("seq").to_pylist()
  elif suffix == "csv":
    seqs = [int(r["seq"]) for r in csv.DictReader(out.open())]
  else:
    seqs = [json.loads(line)["seq"] for line in out.read_text().splitlines()]
  assert not gaps(seqs) and seqs[-1] == history.written[-1]
  assert len(seqs) >= 2 * HOUR_MS // STEP_MS - 10
  assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


async def test_stream_topics_get_small_index_files_and_old_ones_are_moved(infra, unique):
  # Kafka's index files are sparse and mmapped: at its 10 MiB default, a stream topic's first
  # index entry faulted in up to the disk's read-ahead of zeroed pages, and a produce request
  # naming hundreds of new stream topics was held for seconds (bench.streams at 500 streams).
  sid = unique("idx")
  spec = stream_topic(sid)
  keys = ("segment.index.bytes", "retention.ms")
  async with TopicAdmin(infra["bootstrap"]) as admin:
    try:
      await admin.ensure([replace(spec, extra={})])  # a topic made before the setting
      before = (await admin.configs_of([spec.name], keys))[spec.name]
      assert before["segment.index.bytes"] == "262144"  # the dev stack broker's default
      assert await admin.ensure([spec]) == []  # there already: aligned, not created
      after = (await admin.configs_of([spec.name], keys))[spec.name]
      assert after == {"segment.index.bytes": str(STREAM_INDEX_BYTES),
                       "retention.ms": before["retention.ms"]}  # fmt: skip
    finally:
      await admin.delete_stream_topic(sid)


async def test_topic_retention_follows_the_settings(history, infra, unique):
  async with TopicAdmin(infra["bootstrap"]) as admin:
    found = await admin.retention_of([stream_topic(history.sid).name])
    assert found == {stream_topic(history.sid).name: HISTORY_HOURS * HOUR_MS}
    # A stream created through the API keeps BOND_HISTORY_HOURS.
    async with history.client() as client:
      made = await client.create_stream(
        {"sources": ["ccxt"], "symbols": ["BTC/USDT"], "interval_sec": 2}
      )
      name = stream_topic(made["stream_id"]).name
      assert await admin.retention_of([name]) == {name: HISTORY_HOURS * HOUR_MS}
      await client.delete_stream(made["stream_id"])
    # An existing topic whose retention differs is moved to the asked one.
    spec = stream_topic(unique("ret"), 2 * HOUR_MS)
    await admin.ensure([spec])
    longer = stream_topic(spec.name.removeprefix(stream_topic("").name), 5 * HOUR_MS)
    assert await admin.ensure([longer]) == []
    assert await admin.retention_of([spec.name]) == {spec.name: 5 * HOUR_MS}
    # What the API does at start: its streams' topics move to BOND_HISTORY_HOURS (a stream
    # without a topic is skipped).
    async with TopicAdmin(infra["bootstrap"], stream_retention_ms=HOUR_MS) as one_hour:
      moved = await one_hour.align_stream_topics([history.sid, "00000000000000ab"])
    assert moved == [stream_topic(history.sid).name]
    assert await admin.retention_of(moved) == {moved[0]: HOUR_MS}
    await admin.delete_stream_topic(spec.name.removeprefix(stream_topic("").name))
