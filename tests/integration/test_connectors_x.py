"""The X connector (httpx streaming) against the local X API v2 filtered-stream peer."""

import asyncio
import time
from typing import Any

import httpx

from bond.connectors.backoff import Backoff
from bond.connectors.x_stream import XStream
from bond.schemas import Heartbeat, Tweet
from tests.integration.peers import collect

FAST = {
  "network_backoff": Backoff(base_sec=0.05, max_sec=0.2, linear=True, jitter=0),
  "http_backoff": Backoff(base_sec=0.1, max_sec=0.4, jitter=0),
  "rate_limit_backoff": Backoff(base_sec=0.3, max_sec=1.0, jitter=0),
}


def tweets(events: list[Any]) -> list[Tweet]:
  return [e for e in events if isinstance(e, Tweet)]


async def test_real_mode_manages_rules_and_streams_tweets(x_peer_factory):
  peer = await x_peer_factory(bearer="tok", tweets_per_sec=50, keepalive_sec=0.05, seed=1)
  # A stale rule of ours and a foreign rule: ours is replaced, the foreign one kept.
  async with httpx.AsyncClient(
    base_url=peer.base_url, headers={"Authorization": "Bearer tok"}
  ) as http:
    await http.post(
      "/2/tweets/search/stream/rules",
      json={"add": [{"value": "$DOGE", "tag": "bond:DOGE"}, {"value": "cats", "tag": "other"}]},
    )
  feed = XStream(["BTC/USDT", "eth"], mode="real", bearer="tok", api_url=peer.base_url, **FAST)
  async with feed:
    events = await collect(feed, lambda ev: len(tweets(ev)) >= 20)
  values = sorted(r["value"] for r in peer.rules.values())
  assert values == ["$BTC OR #BTC", "$ETH OR #ETH", "cats"]
  got = tweets(events)
  assert all(set(t.symbols) <= {"BTC", "ETH"} and t.symbols for t in got)
  assert all(t.id and t.text and t.author and not t.sim for t in got)
  assert abs(got[0].ts - time.time() * 1000) < 5000
  assert feed.stats["connects"] == 1


async def test_wrong_bearer_is_refused_with_401(x_peer_factory):
  peer = await x_peer_factory(bearer="right")
  feed = XStream(["BTC"], mode="real", bearer="wrong", api_url=peer.base_url, **FAST)
  async with feed:
    await asyncio.sleep(0.5)
  assert feed.stats["http_errors"] >= 2 and feed.stats["tweets"] == 0
  assert peer.stats["unauthorized"] >= 2


async def test_backs_off_on_429_and_503_then_streams(x_peer_factory):
  peer = await x_peer_factory(bearer="tok", tweets_per_sec=50, seed=2)
  peer.fail_next(429, times=2)
  peer.fail_next(503, times=2)
  feed = XStream(["SOL"], mode="real", bearer="tok", api_url=peer.base_url, **FAST)
  began = time.monotonic()
  async with feed:
    events = await collect(feed, lambda ev: len(tweets(ev)) >= 3)
  elapsed = time.monotonic() - began
  assert feed.stats["rate_limited"] == 2 and feed.stats["http_errors"] == 4
  # 429 waits 0.3 + 0.6, then 503 waits 0.1 + 0.2 (exponential per kind).
  assert elapsed >= 1.1
  assert peer.stats["rejected"] == 4 and peer.stats["connections"] >= 1
  assert all(t.symbols == ["SOL"] for t in tweets(events))


async def test_reconnects_after_the_stream_is_dropped(x_peer_factory):
  peer = await x_peer_factory(bearer="tok", tweets_per_sec=50, seed=3)
  feed = XStream(["BTC"], mode="real", bearer="tok", api_url=peer.base_url, **FAST)
  async with feed:
    await collect(feed, lambda ev: len(tweets(ev)) >= 3)
    peer.drop_streams()
    await collect(feed, lambda ev: len(tweets(ev)) >= 3)
  assert feed.stats["disconnects"] >= 1 and feed.stats["connects"] >= 2


async def test_mock_mode_is_seeded_and_mentions_symbols():
  async def run(seed: int) -> list[Tweet]:
    feed = XStream(["BTC", "ETH", "SOL"], mode="mock", rate=200, seed=seed, heartbeat_sec=0)
    async with feed:
      return tweets(await collect(feed, lambda ev: len(tweets(ev)) >= 30))

  first, again = await run(9), await run(9)
  assert [t.text for t in first] == [t.text for t in again]
  assert len({t.text for t in first}) > 5
  for t in first:
    assert t.sim and t.symbols and all(f"${s}" in t.text or f"#{s}" in t.text for s in t.symbols)


async def test_heartbeat_per_symbol_when_quiet(x_peer_factory):
  peer = await x_peer_factory(bearer="tok", tweets_per_sec=0, keepalive_sec=0.2)
  feed = XStream(
    ["BTC", "ETH"], mode="real", bearer="tok", api_url=peer.base_url, heartbeat_sec=0.3, **FAST
  )
  async with feed:
    events = await collect(
      feed,
      lambda ev: (
        len({e.symbol for e in ev if isinstance(e, Heartbeat)}) == 2
        and feed.stats["keepalives"] >= 1
      ),  # under load the first keep-alive may come later
    )
  assert {e.source for e in events if isinstance(e, Heartbeat)} == {"twitter"}
  assert feed.stats["keepalives"] >= 1  # the peer's \r\n keep-alives are read, not parsed


async def test_only_ticker_rules_reach_x_whatever_the_symbols(x_peer_factory):
  # A stream stored before symbols were checked could still name "BTC OR THE OR A".
  peer = await x_peer_factory(bearer="tok", tweets_per_sec=50, keepalive_sec=0.05, seed=2)
  hostile = ["BTC OR THE OR A", "ETH", '"x" OR lang:en', "(SOL", "$DOGE -is:retweet"]
  feed = XStream(hostile, mode="real", bearer="tok", api_url=peer.base_url, **FAST)
  async with feed:
    events = await collect(feed, lambda ev: len(tweets(ev)) >= 5)
  assert [r["value"] for r in peer.rules.values()] == ["$ETH OR #ETH"]
  assert all(t.symbols == ["ETH"] for t in tweets(events))
