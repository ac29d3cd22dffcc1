"""Stage 1: aggregate every raw event once, per feed, into 1 s panes; send closed panes on.

State per raw-topic key lives in a changelog-backed table (so a restarted worker recovers
it) together with the offset of the last record applied: records replayed after a crash
are skipped, so nothing is counted twice. A pane closes when its feed's progress (an event
or heartbeat timestamp) passes its end; every closed pane, empty ones too, goes to
`bond.panes` once for each stream that uses the feed.
"""

import asyncio
import json
import logging
import time
from typing import Any


from bond.aggregate import feed_of_raw, pane_add, window_start
from bond.agents.app import app, settings
from bond.agents.state import state
from bond.topics import PANES, RAW_TOPICS

log = logging.getLogger(__name__)

PANE_MS = settings.bond_pane_ms
MAX_EMPTY_PANES = 3600  # after a long silence, jump ahead rather than emit hours of empty panes
LAT_SAMPLES = 8

panes_topic = app.topic(PANES.name, key_type=str, value_serializer="raw", partitions=PANES.partitions)
stats: dict[str, int] = {"events": 0, "late": 0, "replayed": 0, "panes_out": 0}
late_by_feed: dict[str, int] = {}


def _apply(source: str, st: dict[str, Any], key: str, raw: dict[str, Any], now_ms: int) -> None:
  feed = feed_of_raw(source, raw, key)
  fs = st["feeds"].get(feed.id)
  ts = int(raw["ts"])
  if fs is None:
    fs = st["feeds"][feed.id] = {"p": 0, "c": window_start(ts, PANE_MS), "panes": {}}
  if raw.get("heartbeat"):
    fs["p"] = max(fs["p"], ts)
    return
  stats["events"] += 1
  if ts < fs["c"]:
    stats["late"] += 1
    late_by_feed[feed.id] = late_by_feed.get(feed.id, 0) + 1
    return
  pane = fs["panes"].setdefault(str(window_start(ts, PANE_MS)), {})
  pane_add(pane, source, raw)
  ingest = raw.get("ts_ingest")
  if ingest:
    lat = pane.setdefault("lat", [])
    if len(lat) < LAT_SAMPLES:
      lat.append(max(0, now_ms - int(ingest)))
  fs["p"] = max(fs["p"], ts)


def _close(st: dict[str, Any]) -> list[tuple[str, bytes]]:
  """Close every pane whose feed progressed past its end; return (stream_id, record) pairs."""
  out: list[tuple[str, bytes]] = []
  for feed_id, fs in st["feeds"].items():
    upto = window_start(fs["p"], PANE_MS)  # panes ending at or before progress are complete
    if upto <= fs["c"]:
      continue
    streams = state.by_feed.get(feed_id)
    start = fs["c"]
    if (upto - start) // PANE_MS > MAX_EMPTY_PANES:
      start = max(start, upto - MAX_EMPTY_PANES * PANE_MS)
    panes = fs["panes"]
    while start < upto:
      pane = panes.pop(str(start), None)
      if streams:
        body = {"f": feed_id, "s": start, "e": start + PANE_MS, "p": upto, "a": pane or {}}
        value = json.dumps(body, separators=(",", ":")).encode()
        out += [(sid, value) for sid in streams]
      start += PANE_MS
    for stale in [k for k in panes if int(k) < upto]:
      panes.pop(stale)
    fs["c"] = upto
  return out


def _make_agent(source: str, topic_name: str) -> None:
  topic = app.topic(topic_name, key_type=str, value_serializer="raw")
  table = app.Table(
    f"panes-{source}",
    default=None,
    partitions=RAW_TOPICS[source].partitions,
    use_partitioner=True,
    key_type=bytes,  # raw keys: changelog partitions match the raw topic's
  )

  async def stage1(stream) -> None:  # type: ignore[no-untyped-def]
    await state.ready.wait()
    async for batch in stream.take_events(2000, within=0.005):
      now_ms = int(time.time() * 1000)
      dirty: dict[str, dict[str, Any]] = {}
      for event in batch:
        msg = event.message
        key = msg.key.decode() if isinstance(msg.key, bytes) else str(msg.key)
        st = dirty.get(key)
        if st is None:
          st = table.get(key.encode()) or {"off": -1, "feeds": {}}
          dirty[key] = st
        if msg.offset <= st["off"]:
          stats["replayed"] += 1
          continue
        st["off"] = msg.offset
        try:
          raw = json.loads(msg.value)
          _apply(source, st, key, raw, now_ms)
        except (ValueError, KeyError, TypeError) as err:
          log.warning("%s: skipping malformed record at offset %d: %s", topic_name, msg.offset, err)
      sends = []
      for key, st in dirty.items():
        sends += _close(st)
      # The panes must be in Kafka before the state that says they were sent.
      futures = [await panes_topic.send(key=sid, value=value) for sid, value in sends]
      if futures:
        await asyncio.gather(*futures)
      stats["panes_out"] += len(futures)
      for key, st in dirty.items():
        table[key.encode()] = st

  app.agent(topic, name=f"bond.stage1.{source}")(stage1)


for _source, _spec in RAW_TOPICS.items():
  _make_agent(_source, _spec.name)
