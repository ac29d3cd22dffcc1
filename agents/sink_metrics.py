"""The sink's metrics: each stream's counters and percentiles to its Redis hash, once a
second, one script call per `METRICS_CHUNK` streams (`Sink` inherits it; ARCHITECTURE.md
"Output")."""

import json
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from bond.agents.outbox import Outbox, Recent, Window
from bond.agents.state import partition_for, state
from bond.topics import PANES
from bond.windowing.stage2_state import TrackId
from bond.wire import metrics_key

log = logging.getLogger(__name__)

METRICS_CHUNK = 200  # streams per metrics command


class MetricsOut:
  """Writes the metrics `Sink` gathers (whose attributes these are)."""

  counts: dict[str, dict[str, int]]
  latency_ms: dict[TrackId, Recent]
  lag_ms: dict[str, Recent]
  stats: dict[str, int]
  outbox: Outbox
  redis_queue: deque[tuple[str, Window]]
  _fresh: set[str]
  _partition: dict[str, int]

  async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
    raise NotImplementedError

  def _stream_latency(
    self, sid: str, cache: dict[tuple[TrackId, ...], Recent | None]
  ) -> Recent | None:
    """Return the samples of the stream's feeds (shared by streams of the same feeds)."""
    d = state.stream_defs().get(sid)
    if d is None:
      return None
    tracks = tuple((d.partition, f.id) for f in d.feeds)
    if tracks not in cache:
      found = [r for t in tracks if (r := self.latency_ms.get(t)) is not None and len(r)]
      cache[tracks] = None if not found else found[0] if len(found) == 1 else Recent.union(found)
    return cache[tracks]

  def owned(self) -> Callable[[str], bool]:
    """Return a test of whether this worker owns a stream (its bond.panes partition)."""
    from bond.agents.windows import owned_partitions  # (windows.py imports this module)

    assigned = owned_partitions()

    def test(sid: str) -> bool:
      part = self._partition.get(sid)
      if part is None:
        part = self._partition[sid] = partition_for(sid, PANES.partitions)
      return part in assigned

    return test

  async def flush_metrics(self) -> None:
    """Add counters to each stream's metrics hash and replace its percentiles: one command
    per `METRICS_CHUNK` streams (a command for a thousand streams held the loop for ~20 ms)."""
    self.stats["kafka_waiting"] = self.outbox.waiting()  # shown in the worker's /bond/stats
    self.stats["kafka_in_flight"] = len(self.outbox.inflight)
    self.stats["kafka_resent_skipped"] = self.outbox.skipped
    self.stats["redis_waiting"] = len(self.redis_queue)
    counts, self.counts = self.counts, defaultdict(lambda: defaultdict(int))
    owned = self.owned()
    fresh, self._fresh = self._fresh, set()
    now_ms = int(time.time() * 1000)
    latencies: dict[tuple[TrackId, ...], Recent | None] = {}
    sids = list(counts.keys() | fresh)
    for first in range(0, len(sids), METRICS_CHUNK):
      chunk = sids[first : first + METRICS_CHUNK]
      keys: list[str] = []
      entries: list[tuple[list[str], list[str]]] = []
      for sid in chunk:
        incr = [x for field, n in counts.get(sid, {}).items() if n for x in (field, str(n))]
        values: list[str] = []
        if sid in fresh and owned(sid):
          lat = self._stream_latency(sid, latencies)
          values += ["latency_samples", str(len(lat or ())), "updated_ms", str(now_ms)]
          for name, recent in (("latency", lat), ("emit_lag", self.lag_ms.get(sid))):
            for q in (50, 95, 99):
              value = recent.quantile(q / 100) if recent is not None else None
              if value is not None:
                values += [f"{name}_p{q}_ms", repr(round(value, 3))]
        if incr or values:
          keys.append(metrics_key(sid))
          entries.append((incr, values))
      if not keys:
        continue
      try:
        await self._script("metrics", keys, [json.dumps(entries, separators=(",", ":"))])
      except (RedisError, OSError) as err:
        log.warning("metrics: %s", err)
        # Counters are added again next time rather than lost (percentiles are replaced).
        for sid in chunk:
          for field, n in counts.get(sid, {}).items():
            self.counts[sid][field] += n
