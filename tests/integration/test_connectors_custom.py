"""The custom WebSocket connector (websockets client) against the local JSON feed peer."""

import json
from typing import Any

from bond.connectors.backoff import Backoff
from bond.connectors.custom_ws import CustomWsFeed
from bond.schemas import CustomEvent, CustomMapping, CustomSource, Heartbeat
from tests.integration.peers import collect

MAPPING = CustomMapping(
  ts="data.T", price="data.p", amount="data.q", symbol="data.s", filter={"type": "trade"}
)
FAST = Backoff(base_sec=0.05, max_sec=0.2, jitter=0)


def customs(events: list[Any]) -> list[CustomEvent]:
  return [e for e in events if isinstance(e, CustomEvent)]


async def test_mapping_subscribe_and_filter(feed_peer_factory):
  peer = await feed_peer_factory(rate=100, require_subscribe=True)
  spec = CustomSource(
    url=peer.url, mapping=MAPPING, subscribe={"op": "subscribe", "args": ["trades"]}
  )
  feed = CustomWsFeed.from_source(spec, backoff=FAST)
  async with feed:
    events = await collect(feed, lambda ev: len(customs(ev)) >= 20)
  assert peer.received == [{"op": "subscribe", "args": ["trades"]}]
  got = customs(events)
  assert all(e.source == spec.source_id and e.symbol in ("BTCUSDT", "ETHUSDT") for e in got)
  assert all(e.price and e.price > 0 and e.amount is not None and e.ts > 1.7e12 for e in got)
  assert all(e.payload["type"] == "trade" for e in got)
  assert feed.stats["filtered"] >= 3  # status messages skipped by the filter
  same = CustomWsFeed(spec)  # a CustomSource is accepted directly too
  assert (same.url, same.source_id, same.subscribe, same.mapping) == (
    feed.url,
    feed.source_id,
    feed.subscribe,
    feed.mapping,
  )


async def test_bad_payloads_are_counted_and_skipped(feed_peer_factory):
  peer = await feed_peer_factory(rate=50)
  feed = CustomWsFeed(
    peer.url, mapping=MAPPING, source="bad", backoff=FAST, max_message_bytes=1 << 20
  )
  async with feed:
    await collect(feed, lambda ev: len(customs(ev)) >= 2)
    for text in [
      "{not json",
      json.dumps({"type": "trade", "data": {"s": "X", "p": "NaN", "q": "1", "T": 1761053405012}}),
      json.dumps({"type": "trade", "data": {"s": "X", "p": "-5", "q": "1", "T": 1761053405012}}),
      json.dumps({"type": "trade", "data": {"s": "X", "q": "1", "T": 1761053405012}}),
      json.dumps([1, 2, 3]),
    ]:
      await peer.inject(text)
    await peer.inject("x" * (10 * 1024 * 1024))  # 10 MB: the client closes (1009) and reconnects
    events = await collect(feed, lambda ev: len(customs(ev)) >= 10)
  assert feed.stats["invalid"] >= 7
  assert feed.stats["disconnects"] >= 1 and feed.stats["connects"] >= 2
  assert all(e.symbol != "X" for e in customs(events))


async def test_reconnects_after_drop_and_python_mapper(feed_peer_factory):
  peer = await feed_peer_factory(rate=100)

  def mapper(msg: dict[str, Any]) -> CustomEvent | None:
    if msg["type"] != "trade":
      return None
    return CustomEvent(
      ts=msg["data"]["T"], ts_ingest=0, source="sdk", price=float(msg["data"]["p"]) * 2
    )

  feed = CustomWsFeed(peer.url, mapper=mapper, source="sdk", backoff=FAST)
  async with feed:
    await collect(feed, lambda ev: len(customs(ev)) >= 5)
    assert await peer.drop_connections() == 1
    events = await collect(feed, lambda ev: len(customs(ev)) >= 5)
  assert feed.stats["disconnects"] >= 1 and peer.stats["connections"] >= 2
  assert all(e.source == "sdk" and e.price and e.price > 150 for e in customs(events))


async def test_heartbeats_while_feed_is_down():
  feed = CustomWsFeed(
    "ws://127.0.0.1:9/nothing", mapping=MAPPING, source="dead", backoff=FAST, heartbeat_sec=0.2
  )
  async with feed:
    events = await collect(feed, lambda ev: any(isinstance(e, Heartbeat) for e in ev), wait_sec=3)
  beat = next(e for e in events if isinstance(e, Heartbeat))
  assert beat.source == "custom" and beat.symbol == "dead"
  assert feed.stats["disconnects"] >= 1
