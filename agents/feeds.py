"""Run each feed exactly once across the workers and publish its raw events.

A feed (source, exchange, symbol) runs on the worker that owns the partition of its raw
topic key, the same worker that aggregates its panes; when partitions move, feeds move.
"""

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from bond.agents.app import app, settings
from bond.agents.panes import reader, settled
from bond.agents.state import partition_for, state
from bond.schemas import CcxtSource, CustomSource, OnchainSource
from bond.topics import RAW_TOPICS
from bond.windowing import Feed

log = logging.getLogger(__name__)

ENABLED = settings.bond_feeds
HEARTBEAT_SEC = 0.25


def _source_params(feed: Feed) -> dict[str, Any]:
  """Return what the streams using `feed` ask of it (liquidations, event types, custom source)."""
  params: dict[str, Any] = {"liquidations": False, "event_types": set(), "custom": None}
  for sid in state.by_feed.get(feed.id, ()):
    spec = state.streams[sid][0].spec
    for src in spec.sources:
      if isinstance(src, CcxtSource) and feed.source == "ccxt":
        params["liquidations"] |= src.liquidations
      elif isinstance(src, OnchainSource) and feed.source == "onchain":
        params["event_types"] |= set(src.event_types)
      elif (
        isinstance(src, CustomSource) and feed.source == "custom" and src.source_id == feed.exchange
      ):
        params["custom"] = src
  return params


def make_connector(feed: Feed) -> Any:
  """Return the connector that produces `feed`'s raw events."""
  params = _source_params(feed)
  if feed.source == "ccxt":
    if settings.bond_ccxt_mode == "ws":
      from bond.connectors.ccxt_ws import CcxtWsFeed

      return CcxtWsFeed([feed.exchange], [feed.symbol], settings=settings,
                        liquidations=params["liquidations"], heartbeat_sec=HEARTBEAT_SEC)  # fmt: skip
    from bond.connectors.ccxt_poll import CcxtPoller

    return CcxtPoller([feed.exchange], [feed.symbol], settings=settings)
  if feed.source == "twitter":
    from bond.connectors.x_stream import XStream

    return XStream([feed.symbol], settings=settings, heartbeat_sec=HEARTBEAT_SEC)
  if feed.source == "onchain":
    from bond.connectors.geyser import GeyserFeed

    return GeyserFeed(
      settings=settings, event_types=sorted(params["event_types"]), heartbeat_sec=HEARTBEAT_SEC
    )
  from bond.connectors.custom_ws import CustomWsFeed

  return CustomWsFeed(params["custom"], heartbeat_sec=HEARTBEAT_SEC)


async def last_published_trade(feed: Feed, scan: int = 20_000) -> tuple[str, int] | None:
  """Return (trade_id, ts) of the feed's last trade in its raw partition, if any is recent."""
  topic = RAW_TOPICS[feed.source]
  tp = TopicPartition(topic.name, partition_for(feed.raw_key, topic.partitions))
  consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
  await consumer.start()
  try:
    consumer.assign([tp])
    end = (await consumer.end_offsets([tp]))[tp]
    consumer.seek(tp, max(0, end - scan))
    last: tuple[str, int] | None = None
    while await consumer.position(tp) < end:
      batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
      for msg in batch.get(tp, []):
        if msg.key != feed.raw_key.encode() or b'"trade"' not in msg.value:
          continue
        raw = json.loads(msg.value)
        if (
          raw.get("exchange") == feed.exchange
          and raw.get("kind") == "trade"
          and raw.get("trade_id")
        ):
          last = (str(raw["trade_id"]), int(raw["ts"]))
      if not batch:
        break
    return last
  finally:
    await consumer.stop()


STOP_TIMEOUT_SEC = 5.0


@dataclass(eq=False)
class Running:
  """One started feed: its connector, the task publishing its events, and whether it may."""

  feed: Feed
  connector: Any
  task: asyncio.Task[None] | None = None
  live: bool = True  # cleared the moment the feed must stop: nothing is published after


class FeedRunner:
  """Runs the feeds this worker owns and publishes their events to the raw topics."""

  def __init__(self) -> None:
    self.running: dict[str, Running] = {}
    self.producer: AIOKafkaProducer | None = None
    self.stats: dict[str, int] = {"published": 0, "errors": 0, "muted": 0}

  async def producer_started(self) -> AIOKafkaProducer:
    if self.producer is None:
      self.producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=2, enable_idempotence=True
      )
      await self.producer.start()
    return self.producer

  async def reconcile(self) -> None:
    """Start the feeds this worker should run and stop the others."""
    owned = {(tp.topic, tp.partition) for tp in reader.wanted()}

    def mine(feed: Feed) -> bool:
      topic = RAW_TOPICS[feed.source]
      return (topic.name, partition_for(feed.raw_key, topic.partitions)) in owned

    wanted = {fid: f for fid, f in state.all_feeds().items() if mine(f)}
    await self.stop_feeds([f for f in self.running if f not in wanted])
    for fid, feed in wanted.items():
      if fid not in self.running:
        await self._start(feed)

  async def _start(self, feed: Feed) -> None:
    try:
      connector = make_connector(feed)
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
    run = Running(feed, connector)
    run.task = asyncio.create_task(self._pump(run), name=f"feed {feed.id}")
    self.running[feed.id] = run
    log.info("feed %s started", feed.id)

  def mute(self) -> None:
    """Stop every running feed from publishing, at once (a rebalance may move them)."""
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
    if run.task is not None:
      run.task.cancel()
      done, _ = await asyncio.wait({run.task}, timeout=STOP_TIMEOUT_SEC)
      if not done:
        log.warning(
          "feed %s: publisher still busy after %.0fs (muted)", run.feed.id, STOP_TIMEOUT_SEC
        )
    try:
      await asyncio.wait_for(run.connector.stop(), STOP_TIMEOUT_SEC)
    except TimeoutError:
      log.warning(
        "feed %s: connector did not close within %.0fs (muted)", run.feed.id, STOP_TIMEOUT_SEC
      )
    except Exception as err:  # a connector failing to close must not keep the others running
      log.warning("feed %s: closing failed: %r", run.feed.id, err)
    log.info("feed %s stopped", run.feed.id)

  async def _pump(self, run: Running) -> None:
    feed, connector = run.feed, run.connector
    producer = await self.producer_started()
    topic = RAW_TOPICS[feed.source].name
    key = feed.raw_key.encode()
    async for event in connector:
      if not run.live:
        self.stats["muted"] += 1
        return
      if getattr(event, "heartbeat", False) and feed.source == "ccxt":
        event.exchange, event.symbol = feed.exchange, feed.symbol
      body = event.model_dump_json(exclude_none=True).encode()
      while run.live:
        try:
          await producer.send(topic, body, key=key)
          self.stats["published"] += 1
          break
        except KafkaError as err:
          self.stats["errors"] += 1
          log.warning("feed %s: publishing failed (%s); retrying", feed.id, err)
          await asyncio.sleep(0.5)

  async def stop(self) -> None:
    await self.stop_feeds(list(self.running))
    if self.producer is not None:
      await self.producer.stop()
      self.producer = None


runner = FeedRunner()


@app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types receivers narrowly
async def mute_on_revoke(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
  """A rebalance begins: no feed of this worker publishes until ownership is settled again.

  This runs inside the revocation, before any other worker can be given our partitions,
  so two workers never publish one feed; whoever owns it next resumes after its last trade.
  """
  runner.mute()


@app.timer(0.25)
async def reconcile_feeds() -> None:
  """Keep exactly the owned feeds running (streams come and go, partitions move)."""
  if not ENABLED:
    return
  if settled():
    await runner.reconcile()
  elif runner.running:
    await runner.stop_feeds(list(runner.running))  # muted at once, then closed
