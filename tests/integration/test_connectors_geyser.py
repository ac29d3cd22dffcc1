"""The Geyser connector over real gRPC (grpc.aio) against the local Yellowstone peer."""

import asyncio
from typing import Any

from bond.connectors.backoff import Backoff
from bond.connectors.geyser import GeyserFeed, channel_target
from bond.schemas import Heartbeat, OnchainEvent
from tests.integration.peers import collect


def blocks(events: list[Any]) -> list[int]:
  return [e.slot for e in events if isinstance(e, OnchainEvent) and e.type == "block"]


def test_channel_target_picks_tls_for_https():
  assert channel_target("https://geyser.example.com") == ("geyser.example.com:443", True)
  assert channel_target("http://127.0.0.1:10000") == ("127.0.0.1:10000", False)
  assert channel_target("chi1.cracknode.com:10000") == ("chi1.cracknode.com:10000", False)


async def test_grpc_feed_maps_transactions_transfers_and_blocks(geyser_peer_factory):
  peer = await geyser_peer_factory(slot_ms=40, txs_per_slot=4, x_token="sekret", seed=3)
  feed = GeyserFeed(
    mode="grpc", endpoint=peer.endpoint, x_token="sekret", event_types=["tx", "transfer", "block"]
  )
  async with feed:
    events = await collect(feed, lambda ev: len(blocks(ev)) >= 5)
  onchain = [e for e in events if isinstance(e, OnchainEvent)]
  types = {e.type for e in onchain}
  assert {"tx", "transfer", "block"} <= types
  transfers = [e for e in onchain if e.type == "transfer"]
  assert all(e.amount and e.amount > 0 for e in transfers)
  assert all(e.signature and len(e.signature) > 80 for e in onchain if e.type != "block")
  assert all(not e.sim and e.chain == "sol" for e in onchain)
  slots = [e.slot for e in onchain]
  assert slots == sorted(slots)


async def test_grpc_feed_resumes_from_slot_after_stream_killed(geyser_peer_factory):
  peer = await geyser_peer_factory(slot_ms=30, txs_per_slot=3, seed=4)
  feed = GeyserFeed(
    mode="grpc",
    endpoint=peer.endpoint,
    event_types=["tx", "transfer", "block"],
    backoff=Backoff(base_sec=0.2, max_sec=0.5, jitter=0),
  )
  async with feed:
    events = await collect(feed, lambda ev: len(blocks(ev)) >= 3)
    for _ in range(2):
      assert peer.kill_streams() == 1
      events += await collect(feed, lambda ev: len(blocks(ev)) >= 8)
  slots = blocks(events)
  assert slots == list(range(slots[0], slots[0] + len(slots))), "a slot was skipped or repeated"
  txs = [e.signature for e in events if isinstance(e, OnchainEvent) and e.type != "block"]
  assert len(txs) == len(set(txs)), "duplicate transaction"
  assert len(txs) == 3 * len(slots) or len(txs) >= 3 * (len(slots) - 1)
  assert feed.stats["resumes"] >= 2 and feed.stats["disconnects"] >= 2
  assert peer.stats["from_slots"], "the client did not ask to resume"


async def test_grpc_feed_answers_server_pings(geyser_peer_factory):
  peer = await geyser_peer_factory(slot_ms=1000, ping_sec=0.2, seed=5)
  feed = GeyserFeed(mode="grpc", endpoint=peer.endpoint, event_types=["block"], heartbeat_sec=0.5)
  async with feed:
    events = await collect(feed, lambda ev: any(isinstance(e, Heartbeat) for e in ev))
    await asyncio.sleep(0.6)
  assert feed.stats["pings"] >= 1 and peer.stats["pongs"] >= 1
  beat = next(e for e in events if isinstance(e, Heartbeat))
  assert beat.source == "onchain" and beat.exchange == "sol"


async def test_grpc_feed_wrong_token_counts_errors(geyser_peer_factory):
  peer = await geyser_peer_factory(slot_ms=50, x_token="right")
  feed = GeyserFeed(
    mode="grpc", endpoint=peer.endpoint, x_token="wrong", backoff=Backoff(base_sec=0.1, max_sec=0.2)
  )
  async with feed:
    await asyncio.sleep(0.5)
  assert feed.stats["errors"] >= 1 and feed.stats["events"] == 0


async def test_mock_mode_yields_seeded_events_with_rising_slots():
  feed = GeyserFeed(
    mode="mock", rate=200, seed=7, event_types=["tx", "transfer", "block", "account", "metric"]
  )
  async with feed:
    events = await collect(feed, lambda ev: len(ev) >= 100)
  onchain = [e for e in events if isinstance(e, OnchainEvent)]
  assert {e.type for e in onchain} == {"tx", "transfer", "block", "account", "metric"}
  assert all(e.sim for e in onchain)
  slots = [e.slot for e in onchain]
  assert slots == sorted(slots)
