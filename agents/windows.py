"""Stage 2: compose each stream's windows from its feeds' panes and emit them on time.

A window is emitted as soon as every feed of the stream has progressed past its end, and
at the latest `BOND_LATENESS_MS` after its end by the wall clock (DESIGN.md "Windows and
time"). Emission is driven by the stream of panes and by a 20 ms timer, not by Faust's
window-close callback, which fires up to 30 s late. State per stream (pending panes,
feed progress, next window end, last pane offset) is a changelog-backed table.
"""

import json
import logging
import time
from typing import Any

from bond.agents.app import app, settings
from bond.agents.panes import PANE_MS, settled
from bond.agents.sink import sink
from bond.agents.state import partition_for, state
from bond.aggregate import compose_window, first_window_end, pane_merge
from bond.topics import PANES

log = logging.getLogger(__name__)

LATENESS_MS = settings.bond_lateness_ms
MAX_CATCH_UP = 720  # windows emitted per stream per pass when catching up after downtime
# After partitions are (re)assigned, the worker first replays what it had not committed
# and its feeds restart and backfill the gap; for this long only complete windows are
# emitted, so a restart does not emit windows before the replayed events reach them.
RECOVERY_GRACE_MS = max(15_000, 2 * LATENESS_MS)
# A feed whose panes keep arriving is alive, only behind: its windows wait for it (up to
# this long) instead of going out incomplete. A feed silent for the lateness is dead.
MAX_WAIT_MS = 30_000
_settled_since: list[int | None] = [None]
# When the last pane of any feed reached this worker: every live feed sends one a second,
# so a long silence means the worker's own input is stalled (Kafka down, a rebalance),
# not that the feeds died; windows then wait (up to MAX_WAIT_MS) rather than go out empty.
_last_input_ms = [0]
# When panes flowed again after such a stall: every feed's backlog is then still on its way
# (producers reconnect, stage 1 reads what piled up), so for this long no feed is judged dead.
# A stall is input silent for two panes (every live feed closes one a second).
RESUME_GRACE_MS = max(5_000, 2 * LATENESS_MS)
STALL_MS = max(LATENESS_MS, 2 * PANE_MS)
_resumed_ms = [0]

panes_in = app.topic(
  PANES.name, key_type=bytes, value_serializer="raw", partitions=PANES.partitions
)
table = app.Table(
  "windows",
  default=None,
  partitions=PANES.partitions,
  use_partitioner=True,
  key_type=bytes,  # raw keys: changelog partitions match bond.panes'
)


def _new_state(created_ms: int, size_ms: int) -> dict[str, Any]:
  # The first window starts at the first boundary a full pane after creation: panes that
  # closed before the workers learnt of the stream were never sent to it.
  return {
    "off": -1,
    "next": first_window_end(created_ms + PANE_MS, size_ms),
    "prog": {},
    "panes": {},
  }


def _owned(stream_id: str) -> bool:
  assigned = app.assignor.assigned_actives()
  return any(
    tp.topic == PANES.name and tp.partition == partition_for(stream_id, PANES.partitions)
    for tp in assigned
  )


def _apply_pane(sid: str, st: dict[str, Any], pane: dict[str, Any], size_ms: int) -> None:
  feed_id = pane["f"]
  if pane.get("partial"):
    # What an open pane of a quiet feed holds so far: kept aside, replaced by each newer
    # partial and by the closed pane; used only if the window must go out before that.
    closed = str(pane["s"]) in st["panes"].get(feed_id, {})
    if pane["s"] >= st["next"] - size_ms and pane["a"] and not closed:
      st.setdefault("prov", {}).setdefault(feed_id, {})[str(pane["s"])] = pane["a"]
    return
  st["prog"][feed_id] = max(st["prog"].get(feed_id, 0), pane["p"])
  now_ms = int(time.time() * 1000)
  if _last_input_ms[0] and now_ms - _last_input_ms[0] >= STALL_MS:
    _resumed_ms[0] = now_ms
  st.setdefault("seen", {})[feed_id] = _last_input_ms[0] = now_ms
  agg = pane["a"]
  if not agg:
    return
  lat = agg.get("lat")
  if lat:
    sink.latency(sid, lat)
    agg = {k: v for k, v in agg.items() if k != "lat"}  # the record is shared by its streams
  used = st.get("used", {}).pop(f"{feed_id}|{pane['s']}", 0)
  if pane["s"] < st["next"] - size_ms:
    # Its window is already out: what it did not hold (as a partial) is counted, not merged.
    if agg.get("in", 0) > used:
      sink.count(sid, "late", agg.get("in", 0) - used)
    return
  st.get("prov", {}).get(feed_id, {}).pop(str(pane["s"]), None)
  feed_panes = st["panes"].setdefault(feed_id, {})
  into = feed_panes.setdefault(str(pane["s"]), {})
  pane_merge(into, agg)


def _due(st: dict[str, Any], behind: list[str], end: int, now_ms: int) -> bool:
  """Return whether a window still missing feeds `behind` must go out now, incomplete."""
  if now_ms < end + LATENESS_MS:
    return False
  if _settled_since[0] is None:
    return False
  if st.get("seen") and now_ms < _settled_since[0] + RECOVERY_GRACE_MS:
    return False  # just (re)started: the replay and the feeds' backfill come first
  if now_ms >= end + MAX_WAIT_MS:
    return True
  if _last_input_ms[0] and now_ms - _last_input_ms[0] >= LATENESS_MS:
    return False  # nothing at all is arriving: our input is stalled, not every feed dead
  if now_ms < _resumed_ms[0] + RESUME_GRACE_MS:
    return False  # input just resumed after a stall: the feeds' backlogs are still coming
  seen = st.get("seen", {})
  # Alive feeds (a pane arrived within the lateness) are waited for; silent ones are not.
  since = max(_settled_since[0], end)
  return all(now_ms - max(seen.get(fid, 0), since) >= LATENESS_MS for fid in behind)


USED_KEEP_MS = 600_000  # how long a window remembers the partials it went out with


def _take_partials(
  st: dict[str, Any], window: dict[str, dict[str, Any]], start: int, end: int
) -> int:
  """Merge the partial panes of [start, end) into `window`; return the events they add.

  A partial is there only while its pane has not closed (the closed pane replaces it), so
  these are the quiet feeds' trades that would otherwise miss the window. What each one
  held is remembered, so the closed pane, if it comes later, counts only the rest as late.
  """
  prov = st.get("prov")
  if not prov:
    return 0
  added = 0
  used = st.setdefault("used", {})
  for feed_id, feed_prov in prov.items():
    for pane_start in [k for k in feed_prov if start <= int(k) < end]:
      agg = feed_prov.pop(pane_start)
      pane_merge(window.setdefault(feed_id, {}), agg)
      added += agg.get("in", 0)
      used[f"{feed_id}|{pane_start}"] = agg.get("in", 0)
  for feed_id in [k for k, v in prov.items() if not v]:
    del prov[feed_id]
  for key in [k for k in used if int(k.rsplit("|", 1)[1]) < end - USED_KEEP_MS]:
    del used[key]
  return added


def try_emit(sid: str, st: dict[str, Any], now_ms: int) -> bool:
  """Emit every window of the stream that is complete or due; return whether any was."""
  entry = state.streams.get(sid)
  if entry is None:
    return False
  record, feeds = entry
  spec = record.spec
  size_ms = spec.interval_sec * 1000
  emitted = 0
  while emitted < MAX_CATCH_UP:
    end = st["next"]
    behind = [f.id for f in feeds if st["prog"].get(f.id, 0) < end]
    if behind and not _due(st, behind, end, now_ms):
      break
    start = end - size_ms
    window: dict[str, dict[str, Any]] = {}
    msgs_in = 0
    for feed_id, feed_panes in st["panes"].items():
      merged: dict[str, Any] = {}
      for pane_start in [k for k in feed_panes if start <= int(k) < end]:
        pane = feed_panes.pop(pane_start)
        msgs_in += pane.get("in", 0)
        pane_merge(merged, pane)
      if merged:
        window[feed_id] = merged
    for feed_id in [k for k, v in st["panes"].items() if not v]:
      del st["panes"][feed_id]
    msgs_in += _take_partials(st, window, start, end)
    event = compose_window(sid, spec, feeds, end, window)
    sink.emit(sid, event, msgs_in=msgs_in, lag_ms=now_ms - end)
    st["next"] = end + size_ms
    emitted += 1
  return emitted > 0


@app.agent(panes_in, name="bond.stage2")
async def stage2(stream) -> None:  # type: ignore[no-untyped-def]
  """Merge closed panes into their streams' pending windows and emit what is complete."""
  await state.ready.wait()
  async for batch in stream.take_events(2000, within=0.005):
    dirty: dict[str, dict[str, Any]] = {}
    for event in batch:
      msg = event.message
      try:
        pane = json.loads(msg.value)
        sids = pane.pop("sids")
      except (ValueError, KeyError, TypeError) as err:
        log.warning("panes: skipping malformed record at offset %d: %s", msg.offset, err)
        continue
      for sid in sids:
        entry = state.streams.get(sid)
        if entry is None:
          continue  # deleted stream: its panes are dropped
        record = entry[0]
        size_ms = record.spec.interval_sec * 1000
        st = dirty.get(sid) or table.get(sid.encode()) or _new_state(record.created_at_ms, size_ms)
        dirty[sid] = st
        if msg.offset <= st["off"]:
          continue  # already applied before a restart
        st["off"] = msg.offset
        _apply_pane(sid, st, pane, size_ms)
    now_ms = int(time.time() * 1000)
    for sid, st in dirty.items():
      try_emit(sid, st, now_ms)
      table[sid.encode()] = st


@app.timer(0.02)
async def deadline_timer() -> None:
  """Emit windows whose lateness has run out, for quiet or dead feeds."""
  now_ms = int(time.time() * 1000)
  if not settled():
    _settled_since[0] = None
    return
  if _settled_since[0] is None:
    _settled_since[0] = now_ms
  for sid, (record, _feeds) in list(state.streams.items()):
    if not _owned(sid):
      continue
    st = table.get(sid.encode())
    fresh = st is None
    if st is None:
      st = _new_state(record.created_at_ms, record.spec.interval_sec * 1000)
    if now_ms < st["next"] + LATENESS_MS and not fresh:
      continue
    if try_emit(sid, st, now_ms) or fresh:
      table[sid.encode()] = st


@app.timer(1.0)
async def forget_deleted() -> None:
  """Drop the state of deleted streams this worker owns."""
  if not settled():
    return
  for key in [
    k for k in list(table.keys()) if k.decode() not in state.streams and _owned(k.decode())
  ]:
    del table[key]
    sink.forget(key.decode())
