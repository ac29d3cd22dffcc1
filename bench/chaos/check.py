"""Verdicts of the chaos run: continuity of every client's `seq`, values against the stream's own
Kafka and Redis copies, and trade counts recomputed from the raw topic `bond.raw.ccxt`."""

import itertools
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bench.chaos.clients import digest
from bond.windowing.audit import RawIndex, Recount, classify, classify_empty
from bond.wire import stream_key

__all__ = ["RawIndex", "Recount", "classify", "classify_empty"]

RAW_RECOMPUTE_LIMIT = 3_000_000  # records of bond.raw.ccxt beyond which recomputing is not cheap


@dataclass
class Received:
  """One event as a client got it."""

  seq: int
  recv_ms: int
  digest: str


@dataclass
class ClientLog:
  """Every client's events, read incrementally from the client processes' files."""

  paths: list[Path]
  events: dict[int, list[Received]] = field(default_factory=lambda: defaultdict(list))
  _offsets: dict[Path, int] = field(default_factory=dict)

  def poll(self) -> None:
    """Read what the client processes wrote since the last poll."""
    for path in self.paths:
      if not path.exists():
        continue
      with path.open() as fh:
        fh.seek(self._offsets.get(path, 0))
        data = fh.read()
        cut = data.rfind("\n") + 1
        self._offsets[path] = self._offsets.get(path, 0) + len(data[:cut].encode())
      for line in data[:cut].splitlines():
        cid, seq, recv, dig = line.split()
        self.events[int(cid)].append(Received(int(seq), int(recv), dig))

  def last_recv(self, cid: int) -> Received | None:
    got = self.events.get(cid)
    return got[-1] if got else None


def phase_of(seq: int, phases: list[tuple[str, int]]) -> str:
  """Return the name of the phase (name, start_ms; sorted) a window end falls in."""
  name = phases[0][0]
  for pname, start in phases:
    if seq >= start:
      name = pname
  return name


def continuity(
  events: list[Received], interval_ms: int, expected_last: int, phases: list[tuple[str, int]]
) -> dict[str, Any]:
  """Return lost and duplicated windows of one client, each attributed to a phase."""
  lost: Counter[str] = Counter()
  dup: Counter[str] = Counter()
  lost_seqs: list[int] = []
  if not events:
    return {
      "lost": {"(no event at all)": 1},
      "dup": {},
      "lost_seqs": [],
      "first": None,
      "last": None,
    }
  seqs = [e.seq for e in events]
  seen: set[int] = set()
  for s in seqs:
    if s in seen:
      dup[phase_of(s, phases)] += 1
    seen.add(s)
  first, last = seqs[0], max(seqs)
  for s in range(first, max(last, expected_last) + 1, interval_ms):
    if s not in seen:
      lost[phase_of(s, phases)] += 1
      lost_seqs.append(s)
  order = [b - a for a, b in itertools.pairwise(seqs)]
  backwards = sum(1 for d in order if d <= 0)
  misaligned = sum(1 for s in seqs if (s - first) % interval_ms)
  return {"lost": dict(lost), "dup": dict(dup), "lost_seqs": lost_seqs[:50], "first": first, "last": last,
          "backwards": backwards, "misaligned": misaligned}  # fmt: skip


async def read_topic(bootstrap: str, topic: str) -> list[tuple[int, bytes | None]]:
  """Return (offset, value) of every record of partition 0 of a topic."""
  from aiokafka import AIOKafkaConsumer, TopicPartition

  consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
  await consumer.start()
  out: list[tuple[int, bytes | None]] = []
  try:
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    end = (await consumer.end_offsets([tp]))[tp]
    while await consumer.position(tp) < end:
      batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
      out += [(m.offset, m.value) for m in batch.get(tp, []) if m.offset < end]
  finally:
    await consumer.stop()
  return out


async def kafka_copies(bootstrap: str, stream_ids: list[str]) -> dict[str, dict[str, Any]]:
  """Return per stream: first Kafka copy of each window, and re-sent windows (equal or not)."""
  result: dict[str, dict[str, Any]] = {}
  for sid in stream_ids:
    first: dict[int, dict[str, Any]] = {}
    resent, differing = 0, []
    for _off, value in await read_topic(bootstrap, f"bond.stream.{sid}"):
      if value is None:
        continue
      event = json.loads(value)
      seq = event["seq"]
      if seq in first:
        resent += 1
        if digest(event) != digest(first[seq]):
          differing.append(seq)
      else:
        first[seq] = event
    result[sid] = {"first": first, "resent": resent, "differing": differing}
  return result


async def redis_copies(
  redis_url: str, stream_ids: list[str]
) -> dict[str, dict[int, dict[str, Any]]]:
  """Return per stream the windows still in its Redis ring."""
  import redis.asyncio as aioredis

  client = aioredis.from_url(redis_url, decode_responses=True)
  out: dict[str, dict[int, dict[str, Any]]] = {}
  try:
    for sid in stream_ids:
      entries = cast(list[tuple[str, dict[str, str]]], await client.xrange(stream_key(sid)))
      out[sid] = {int(eid.split("-")[0]): json.loads(f["e"]) for eid, f in entries}
  finally:
    await client.aclose()
  return out


Trades = dict[tuple[str, str], list[tuple[int, float, str | None, int]]]


async def raw_trades(bootstrap: str) -> tuple[Trades, int, str]:
  """Return trades of bond.raw.ccxt by (exchange, symbol), the record count, and a note.

  Each trade is (ts, amount, trade_id, ts_ingest): ts_ingest, when the feed received it,
  tells a trade that came on time from one backfilled after its window was due.
  """
  from aiokafka import AIOKafkaConsumer, TopicPartition

  consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
  await consumer.start()
  trades: Trades = defaultdict(list)
  total = 0
  try:
    from bond.topics import RAW_TOPICS

    tps = [TopicPartition("bond.raw.ccxt", p) for p in range(RAW_TOPICS["ccxt"].partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    ends = await consumer.end_offsets(tps)
    starts = await consumer.beginning_offsets(tps)
    size = sum(ends[tp] - starts[tp] for tp in tps)
    if size > RAW_RECOMPUTE_LIMIT:
      return {}, size, f"not cheap: {size} raw records (limit {RAW_RECOMPUTE_LIMIT}); skipped"
    pending = {tp for tp in tps if ends[tp] > starts[tp]}
    while pending:
      batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=20000)
      for tp, msgs in batch.items():
        for m in msgs:
          if m.offset >= ends[tp]:
            continue
          total += 1
          raw = json.loads(m.value)
          if raw.get("kind") == "trade" and raw.get("price") is not None:
            trades[(raw["exchange"], raw["symbol"])].append(
              (
                int(raw["ts"]),
                float(raw.get("amount") or 0.0),
                raw.get("trade_id"),
                int(raw.get("ts_ingest") or 0),
              )
            )
      for tp in list(pending):
        if await consumer.position(tp) >= ends[tp]:
          pending.discard(tp)
  finally:
    await consumer.stop()
  return trades, total, f"recomputed from {total} raw records"


SIM_RESTART_JUMP = 1_000_000


def trade_id_gaps(trades: Trades, phases: list[tuple[str, int]]) -> dict[str, int]:
  """Return, per phase, sim trades never ingested: gaps in each feed's increasing trade ids."""
  out: Counter[str] = Counter()
  for rows in trades.values():
    by_id = sorted(
      {int(tid): ts for ts, _a, tid, _i in rows if tid is not None and tid.isdigit()}.items()
    )
    for (a, _ta), (b, tb) in itertools.pairwise(by_id):
      # A restarted sim numbers trades from its microsecond clock: such a jump is not trades
      # that existed and were missed (a few hundred thousand at most are made between).
      if b > a + 1 and b - a < SIM_RESTART_JUMP:
        out[phase_of(tb, phases)] += b - a - 1
  return dict(out)


def raw_duplicates(trades: Trades) -> dict[str, int]:
  """Return, per feed, how many trades appear more than once in the raw topic (same trade id)."""
  out: dict[str, int] = {}
  for (ex, sym), rows in trades.items():
    # The same id, time and amount twice is one trade published twice.
    ids = Counter((tid, ts, a) for ts, a, tid, _i in rows if tid is not None)
    extra = sum(c - 1 for c in ids.values() if c > 1)
    if extra:
      out[f"{ex}|{sym}"] = extra
  return out
