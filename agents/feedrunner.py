"""Run feeds and publish their raw events: the connectors, one bounded queue per feed, and
Kafka (ARCHITECTURE.md "Feeds"). This runs in the feed host, the worker's child process
(`agents/feedhost.py`); which feeds run is the worker's decision (`agents/feeds.py`).
"""

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from bond.agents.outbox import FeedQueue, is_poison
from bond.agents.state import partition_for
from bond.config import get_settings
from bond.connectors.backoff import Backoff
from bond.schemas import CustomSource
from bond.topics import RAW_TOPICS
from bond.windowing import Feed

log = logging.getLogger(__name__)

settings = get_settings()
HEARTBEAT_SEC = 0.25


@dataclass(frozen=True)
class FeedParams:
  """What the streams using a feed ask of it: liquidations, on-chain event types, the custom
  source's settings. Sent from the worker to its feed host as JSON."""

  liquidations: bool = False
  event_types: tuple[str, ...] = ()
  custom: CustomSource | None = None

  def to_wire(self) -> dict[str, Any]:
    return {"liquidations": self.liquidations, "event_types": list(self.event_types),
            "custom": self.custom.model_dump(mode="json") if self.custom else None}  # fmt: skip

  def covers(self, asked: "FeedParams") -> bool:
    """Return whether a feed started with these parameters gives all that `asked` asks for
    (more than asked is harmless: no stream reads it)."""
    return (
      (self.liquidations or not asked.liquidations)
      and set(asked.event_types) <= set(self.event_types)
      and self.custom == asked.custom
    )

  @classmethod
  def from_wire(cls, raw: dict[str, Any]) -> "FeedParams":
    custom = raw.get("custom")
    return cls(bool(raw.get("liquidations")), tuple(raw.get("event_types") or ()),
               CustomSource.model_validate(custom) if custom else None)  # fmt: skip


def make_connector(feed: Feed, params: FeedParams) -> Any:
  """Return the connector that produces `feed`'s raw events, as its streams ask (`params`)."""
  if feed.source == "ccxt":
    if settings.bond_ccxt_mode == "ws":
      from bond.connectors.ccxt_ws import CcxtWsFeed

      return CcxtWsFeed([feed.exchange], [feed.symbol], settings=settings,
                        liquidations=params.liquidations, heartbeat_sec=HEARTBEAT_SEC)  # fmt: skip
    from bond.connectors.ccxt_poll import CcxtPoller

    return CcxtPoller([feed.exchange], [feed.symbol], settings=settings)
  if feed.source == "twitter":
    from bond.connectors.x_stream import XStream

    return XStream([feed.symbol], settings=settings, heartbeat_sec=HEARTBEAT_SEC)
  if feed.source == "onchain":
    from bond.connectors.geyser import GeyserFeed

    return GeyserFeed(
      settings=settings, event_types=list(params.event_types), heartbeat_sec=HEARTBEAT_SEC
    )
  from bond.connectors.custom_ws import CustomWsFeed

  if params.custom is None:
    raise ValueError(f"no stream names the custom source of {feed.id}")
  return CustomWsFeed(params.custom, heartbeat_sec=HEARTBEAT_SEC)


async def last_published_trade(
  feed: Feed, scan: int = 20_000, chunk: int = 2_000, timeout_sec: float = 30.0
) -> tuple[str, int] | None:
  """Return (trade_id, ts) of the feed's last trade in its raw partition, if any is recent.

  The partition is read backwards, `chunk` records at a time, up to `scan` records from its
  end; each chunk is read to its last record. A resume point from a partly read chunk would
  be an older trade, and every trade after it would be published twice: a read that cannot
  finish within `timeout_sec` raises TimeoutError instead (the feed is started again later).
  """
  topic = RAW_TOPICS[feed.source]
  tp = TopicPartition(topic.name, partition_for(feed.raw_key, topic.partitions))
  key = feed.raw_key.encode()
  consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
  await consumer.start()
  loop = asyncio.get_running_loop()
  deadline = loop.time() + timeout_sec
  try:
    consumer.assign([tp])
    end = (await consumer.end_offsets([tp]))[tp]
    first = (await consumer.beginning_offsets([tp]))[tp]
    floor = max(first, end - scan)
    upper = end
    while upper > floor:
      lower = max(floor, upper - chunk)
      consumer.seek(tp, lower)
      last: tuple[str, int] | None = None
      while await consumer.position(tp) < upper:
        if loop.time() > deadline:
          raise TimeoutError(f"reading {tp.topic}[{tp.partition}] for the last trade of {feed.id}")
        batch = await consumer.getmany(tp, timeout_ms=1000, max_records=chunk)
        for msg in batch.get(tp, []):
          if msg.offset >= upper or msg.key != key or b'"trade"' not in msg.value:
            continue
          raw = json.loads(msg.value)
          if (
            raw.get("exchange") == feed.exchange
            and raw.get("kind") == "trade"
            and raw.get("trade_id")
          ):
            last = (str(raw["trade_id"]), int(raw["ts"]))
      if last is not None:
        return last
      upper = lower
    return None
  finally:
    await consumer.stop()


STOP_TIMEOUT_SEC = 5.0
START_CONCURRENCY = 8  # feeds started at once (each may scan its raw partition first)
# What one feed may hold while Kafka does not take its events: beyond this the oldest go,
# heartbeats first (a later one says the same), each counted in `dropped`.
FEED_QUEUE_MAX = 20_000
FEED_QUEUE_BYTES = 4 * 1024 * 1024
PUBLISH_BATCH = 500
PUBLISH_RETRY = Backoff(base_sec=0.1, max_sec=5.0, jitter=0.2)


@dataclass(eq=False)
class Running:
  """One started feed: its connector, its publishing queue and tasks, and whether it may publish."""

  feed: Feed
  params: "FeedParams"
  connector: Any
  task: asyncio.Task[None] | None = None  # reads the connector into `queue`
  publisher: asyncio.Task[None] | None = None  # sends `queue` to Kafka
  live: bool = True  # cleared the moment the feed must stop: nothing is published after
  queue: FeedQueue = field(
    default_factory=lambda: FeedQueue(max_records=FEED_QUEUE_MAX, max_bytes=FEED_QUEUE_BYTES)
  )
  ready: asyncio.Event = field(default_factory=asyncio.Event)


class FeedRunner:
  """Runs a set of feeds and publishes their events to the raw topics (in the feed host)."""

  def __init__(self) -> None:
    self.running: dict[str, Running] = {}
    self.producer: AIOKafkaProducer | None = None
    self.stats: dict[str, int] = {"published": 0, "errors": 0, "muted": 0, "dropped": 0}
    self.muted = False

  async def producer_started(self) -> AIOKafkaProducer:
    if self.producer is None:
      self.producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=2, enable_idempotence=True
      )
      await self.producer.start()
    return self.producer

  async def apply(self, wanted: dict[str, tuple[Feed, "FeedParams"]]) -> None:
    """Run exactly these feeds (by id): stop the others, start the missing ones.

    A muted feed is started again, and so is a feed whose streams now ask for more than it
    started with (a new stream wanting its liquidations, other on-chain event types, changed
    custom settings): both resume after the last trade in their raw partition. A feed asked
    for less keeps running as it is; a restart would cost its streams a gap for nothing.
    """
    self.muted = False
    stale = []
    for fid, run in self.running.items():
      if fid in wanted and run.live and not run.params.covers(wanted[fid][1]):
        log.info("feed %s restarts: its streams ask for %s", fid, wanted[fid][1].to_wire())
      elif fid in wanted and run.live:
        continue
      stale.append(fid)
    await self.stop_feeds(stale)
    new = [(feed, params) for fid, (feed, params) in wanted.items() if fid not in self.running]
    # A few at a time: a stream over many symbols must not wait for each feed in turn.
    for i in range(0, len(new), START_CONCURRENCY):
      await asyncio.gather(*(self._start(f, p) for f, p in new[i : i + START_CONCURRENCY]))

  async def _start(self, feed: Feed, params: FeedParams) -> None:
    try:
      connector = make_connector(feed, params)
      if feed.source == "ccxt" and hasattr(connector, "resume_from"):
        last = await last_published_trade(feed)
        if last is not None:
          connector.resume_from(feed.exchange, feed.symbol, *last)
          log.info("feed %s resumes after trade %s", feed.id, last[0])
      if getattr(connector, "mode", None) == "mock":
        # A local generator stamps events with the current time: nothing older can follow.
        connector.heartbeat_sec, connector.heartbeat_lag_ms = 0.05, 0
      await connector.start()
    except (ImportError, ValueError, OSError, KafkaError) as err:
      self.stats["errors"] += 1
      log.error("feed %s cannot start: %s", feed.id, err)
      return
    if self.muted:  # muted while it started: it must not publish
      await self._close(connector, feed.id)
      return
    run = Running(feed, params, connector)
    run.task = asyncio.create_task(self._pump(run), name=f"feed {feed.id}")
    run.publisher = asyncio.create_task(self._publish(run), name=f"publish {feed.id}")
    self.running[feed.id] = run
    log.info("feed %s started", feed.id)

  def mute(self) -> None:
    """Stop every running feed from publishing, at once (a rebalance may move them), and
    any feed still starting from ever publishing, until the next `apply`."""
    self.muted = True
    for run in self.running.values():
      run.live = False

  async def stop_feeds(self, fids: list[str]) -> None:
    """Stop these feeds: muted first, all together, then closed (each within a time limit).

    Muting is what matters for exactly-once publishing: the next owner resumes after the
    last trade in the raw topic, so nothing may be published once the decision is taken,
    however long a connector takes to close.
    """
    runs = [self.running.pop(fid) for fid in fids if fid in self.running]
    for run in runs:
      run.live = False
    if runs:
      await asyncio.gather(*(self._stop(run) for run in runs))

  async def _stop(self, run: Running) -> None:
    tasks = {t for t in (run.task, run.publisher) if t is not None}
    for task in tasks:
      task.cancel()
    if tasks:
      _done, busy = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_SEC)
      if busy:
        log.warning(
          "feed %s: publisher still busy after %.0fs (muted)", run.feed.id, STOP_TIMEOUT_SEC
        )
    await self._close(run.connector, run.feed.id)
    log.info("feed %s stopped", run.feed.id)

  async def _close(self, connector: Any, fid: str) -> None:
    try:
      await asyncio.wait_for(connector.stop(), STOP_TIMEOUT_SEC)
    except TimeoutError:
      log.warning("feed %s: connector did not close within %.0fs (muted)", fid, STOP_TIMEOUT_SEC)
    except Exception as err:  # a connector failing to close must not keep the others running
      log.warning("feed %s: closing failed: %r", fid, err)

  async def _pump(self, run: Running) -> None:
    """Read the connector into the feed's bounded queue; never wait for Kafka."""
    feed, connector = run.feed, run.connector
    async for event in connector:
      if not run.live:
        self.stats["muted"] += 1
        return
      heartbeat = bool(getattr(event, "heartbeat", False))
      if heartbeat and feed.source == "ccxt":
        event.exchange, event.symbol = feed.exchange, feed.symbol
      dropped = run.queue.put(event.model_dump_json(exclude_none=True).encode(), heartbeat)
      run.ready.set()
      if dropped:
        if run.queue.dropped == dropped:
          log.warning("feed %s: Kafka is not taking its events; dropping the oldest "
                      "(heartbeats first; counted in /bond/stats feeds.dropped)", feed.id)  # fmt: skip
        self.stats["dropped"] += dropped

  async def _publish(self, run: Running) -> None:
    """Send the feed's queue to its raw topic in order, retrying with backoff."""
    producer = await self.producer_started()
    topic = RAW_TOPICS[run.feed.source].name
    key = run.feed.raw_key.encode()
    attempt = 0
    while run.live:
      if not run.queue:
        run.ready.clear()
        await run.ready.wait()
        continue
      batch = run.queue.take(PUBLISH_BATCH)
      sent, unsent, err = await self._send(run, producer, topic, key, batch)
      self.stats["published"] += sent
      if err is None:
        attempt = 0
        continue
      run.queue.give_back(unsent)
      self.stats["errors"] += 1
      attempt += 1
      delay = PUBLISH_RETRY.delay(attempt)
      log.warning("feed %s: publishing failed (%r); %d waiting, retrying in %.1fs",
                  run.feed.id, err, len(run.queue), delay)  # fmt: skip
      await asyncio.sleep(delay)

  async def _send(
    self,
    run: Running,
    producer: AIOKafkaProducer,
    topic: str,
    key: bytes,
    batch: list[tuple[bytes, bool]],
  ) -> tuple[int, list[tuple[bytes, bool]], BaseException | None]:
    """Send records in order; return how many are in Kafka, those to send again, and why.

    Only the records that failed are sent again (a record in Kafka twice would be a trade
    counted twice); one that can never be sent (too large) is dropped and counted.
    """
    futures: list[tuple[tuple[bytes, bool], asyncio.Future[Any]]] = []
    unsent: list[tuple[bytes, bool]] = []
    failed: BaseException | None = None
    for i, record in enumerate(batch):
      if not run.live:
        break  # muted: nothing more may go out, and nothing is kept
      try:
        futures.append((record, await producer.send(topic, record[0], key=key)))
      except (KafkaError, OSError) as err:
        if is_poison(err):
          run.queue.dropped += 1
          self.stats["dropped"] += 1
          continue
        failed, unsent = err, batch[i:]
        break
    results = await asyncio.gather(*(f for _, f in futures), return_exceptions=True)
    again: list[tuple[bytes, bool]] = []
    delivered = 0
    for (record, _), result in zip(futures, results, strict=True):
      if not isinstance(result, BaseException):
        delivered += 1
      elif is_poison(result):
        run.queue.dropped += 1
        self.stats["dropped"] += 1
      else:
        again.append(record)
        failed = failed or result
    return delivered, again + unsent, failed
