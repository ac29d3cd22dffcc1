"""The custom WebSocket connector (websockets client) against the local JSON feed peer.

The peer listens on 127.0.0.1, an address custom feeds may reach only when the operator
allows it: these tests pass BOND_CUSTOM_ALLOW=127.0.0.1/32 explicitly (LOCAL), and check
that without it the connector refuses to connect.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import Request, Response, ServerConnection, serve

from bond.config import Settings
from bond.connectors.backoff import Backoff
from bond.connectors.custom_ws import CustomWsFeed
from bond.schemas import CustomEvent, CustomMapping, CustomSource, Heartbeat
from tests.conftest import nested
from tests.integration.peers import collect

MAPPING = CustomMapping(
  ts="data.T", price="data.p", amount="data.q", symbol="data.s", filter={"type": "trade"}
)
FAST = Backoff(base_sec=0.05, max_sec=0.2, jitter=0)
LOCAL = Settings(bond_custom_allow="127.0.0.1/32")
PUBLIC_ONLY = Settings(bond_custom_allow="")


def customs(events: list[Any]) -> list[CustomEvent]:
  return [e for e in events if isinstance(e, CustomEvent)]


async def test_mapping_subscribe_and_filter(feed_peer_factory):
  peer = await feed_peer_factory(rate=100, require_subscribe=True)
  spec = CustomSource(
    url=peer.url, mapping=MAPPING, subscribe={"op": "subscribe", "args": ["trades"]}
  )
  feed = CustomWsFeed.from_source(spec, backoff=FAST, settings=LOCAL)
  async with feed:
    events = await collect(feed, lambda ev: len(customs(ev)) >= 20)
  assert peer.received == [{"op": "subscribe", "args": ["trades"]}]
  got = customs(events)
  assert all(e.source == spec.source_id and e.symbol in ("BTCUSDT", "ETHUSDT") for e in got)
  assert all(e.price and e.price > 0 and e.amount is not None and e.ts > 1.7e12 for e in got)
  assert all(e.payload["type"] == "trade" for e in got)
  assert feed.stats["filtered"] >= 3  # status messages skipped by the filter
  same = CustomWsFeed(spec, settings=LOCAL)  # a CustomSource is accepted directly too
  assert (same.url, same.source_id, same.subscribe, same.mapping) == (
    feed.url,
    feed.source_id,
    feed.subscribe,
    feed.mapping,
  )


async def test_bad_payloads_are_counted_and_skipped(feed_peer_factory):
  peer = await feed_peer_factory(rate=50)
  feed = CustomWsFeed(
    peer.url,
    mapping=MAPPING,
    source="bad",
    backoff=FAST,
    max_message_bytes=1 << 20,
    settings=LOCAL,
  )
  async with feed:
    await collect(feed, lambda ev: len(customs(ev)) >= 2)
    for text in [
      "[" * 100_000 + "]" * 100_000,  # too deep for json.loads
      json.dumps({"type": "trade", "data": {"s": "X"}, "deep": nested(300)}),  # for pydantic
      "{not json",
      json.dumps({"type": "trade", "data": {"s": "X", "p": "NaN", "q": "1", "T": 1761053405012}}),
      json.dumps({"type": "trade", "data": {"s": "X", "p": "-5", "q": "1", "T": 1761053405012}}),
      json.dumps({"type": "trade", "data": {"s": "X", "q": "1", "T": 1761053405012}}),
      json.dumps([1, 2, 3]),
    ]:
      await peer.inject(text)
    await peer.inject("x" * (10 * 1024 * 1024))  # 10 MB: the client closes (1009) and reconnects
    events = await collect(feed, lambda ev: len(customs(ev)) >= 10)
  assert feed.stats["invalid"] >= 9
  assert feed.stats["disconnects"] >= 1 and feed.stats["connects"] >= 2
  assert all(e.symbol != "X" for e in customs(events))
  assert all(e.model_dump_json() for e in customs(events))  # every event can be published


async def test_reconnects_after_drop_and_python_mapper(feed_peer_factory):
  peer = await feed_peer_factory(rate=100)

  def mapper(msg: dict[str, Any]) -> CustomEvent | None:
    if msg["type"] != "trade":
      return None
    return CustomEvent(
      ts=msg["data"]["T"], ts_ingest=0, source="sdk", price=float(msg["data"]["p"]) * 2
    )

  feed = CustomWsFeed(peer.url, mapper=mapper, source="sdk", backoff=FAST, settings=LOCAL)
  async with feed:
    await collect(feed, lambda ev: len(customs(ev)) >= 5)
    assert await peer.drop_connections() == 1
    events = await collect(feed, lambda ev: len(customs(ev)) >= 5)
  assert feed.stats["disconnects"] >= 1 and peer.stats["connections"] >= 2
  assert all(e.source == "sdk" and e.price and e.price > 150 for e in customs(events))


async def test_heartbeats_while_feed_is_down():
  feed = CustomWsFeed(
    "ws://127.0.0.1:9/nothing",
    mapping=MAPPING,
    source="dead",
    backoff=FAST,
    heartbeat_sec=0.2,
    settings=LOCAL,
  )
  async with feed:
    events = await collect(feed, lambda ev: any(isinstance(e, Heartbeat) for e in ev), wait_sec=3)
  beat = next(e for e in events if isinstance(e, Heartbeat))
  assert beat.source == "custom" and beat.symbol == "dead"
  assert feed.stats["disconnects"] >= 1


# ---------------------------------------------------------------------- fenced in (issue 13)


async def until(check: Callable[[], bool], wait_sec: float = 10.0) -> None:
  """Wait for `check()` to hold, polling the connector's counters."""
  async with asyncio.timeout(wait_sec):
    while not check():  # noqa: ASYNC110 - plain counters, nothing to wait on
      await asyncio.sleep(0.02)


async def test_a_host_resolving_inside_is_refused_on_every_connect(feed_peer_factory):
  # `localhost` passes no literal-address test: only resolving it shows it is 127.0.0.1.
  peer = await feed_peer_factory(rate=50)
  feed = CustomWsFeed(
    f"ws://localhost:{peer.port}/feed",
    mapping=MAPPING,
    source="inside",
    backoff=FAST,
    heartbeat_sec=0.2,
    settings=PUBLIC_ONLY,
  )
  async with feed:
    events = await collect(feed, lambda ev: any(isinstance(e, Heartbeat) for e in ev))
    await until(lambda: feed.stats["refused"] >= 3)  # checked again on each reconnect
  assert peer.stats["connections"] == 0 and not customs(events)
  assert feed.stats["connects"] == 0


async def test_an_allow_listed_host_name_works_end_to_end(feed_peer_factory):
  peer = await feed_peer_factory(rate=100, require_subscribe=True)
  feed = CustomWsFeed(
    f"ws://localhost:{peer.port}/feed",
    mapping=MAPPING,
    subscribe={"op": "subscribe"},
    source="allowed",
    backoff=FAST,
    settings=Settings(bond_custom_allow="localhost"),
  )
  async with feed:
    events = await collect(feed, lambda ev: len(customs(ev)) >= 5)
  assert peer.received == [{"op": "subscribe"}] and feed.stats["refused"] == 0
  assert all(e.source == "allowed" and e.price for e in customs(events))


@pytest.fixture
async def redirector() -> AsyncIterator[Callable[[str], Awaitable[int]]]:
  """Return a factory of local WebSocket servers answering every handshake with a 302."""
  servers: list[Any] = []

  async def make(location: str) -> int:
    def redirect(connection: ServerConnection, request: Request) -> Response:
      response = connection.respond(302, "moved\n")
      response.headers["Location"] = location
      return response

    server = await serve(lambda ws: ws.close(), "127.0.0.1", 0, process_request=redirect)
    servers.append(server)
    return int(next(iter(server.sockets)).getsockname()[1])

  yield make
  for server in servers:
    server.close()
    await server.wait_closed()


async def test_a_redirect_is_refused(feed_peer_factory, redirector):
  peer = await feed_peer_factory(rate=50)
  port = await redirector(peer.url)  # same host: even a same-origin redirect is refused
  feed = CustomWsFeed(
    f"ws://127.0.0.1:{port}/feed", mapping=MAPPING, source="moved", backoff=FAST, settings=LOCAL
  )
  async with feed:
    await until(lambda: feed.stats["refused"] >= 2)
  assert peer.stats["connections"] == 0 and feed.stats["connects"] == 0


async def test_messages_over_the_rate_cap_are_dropped_and_counted(feed_peer_factory):
  peer = await feed_peer_factory(rate=2000, status_every=0)
  feed = CustomWsFeed(
    peer.url, mapping=MAPPING, source="flood", backoff=FAST, settings=LOCAL, max_msgs_per_sec=50
  )
  started = time.monotonic()
  async with feed:
    await collect(feed, lambda ev: feed.stats["dropped"] >= 200)
    elapsed = time.monotonic() - started
    kept = feed.stats["mapped"] + feed.stats["filtered"] + feed.stats["invalid"]
  assert kept <= 50 * elapsed + 50 + 1  # the rate plus one burst
  assert kept + feed.stats["dropped"] <= feed.stats["messages"] + 1


async def test_a_message_over_the_size_cap_closes_and_reconnects(feed_peer_factory):
  peer = await feed_peer_factory(rate=50)
  settings = Settings(bond_custom_allow="127.0.0.1/32", bond_custom_max_message_bytes=4096)
  feed = CustomWsFeed(peer.url, mapping=MAPPING, source="big", backoff=FAST, settings=settings)
  assert feed.max_message_bytes == 4096
  async with feed:
    await collect(feed, lambda ev: len(customs(ev)) >= 2)
    await peer.inject(json.dumps({"type": "trade", "pad": "x" * 5000}))
    await until(lambda: feed.stats["connects"] >= 2)
    events = await collect(feed, lambda ev: len(customs(ev)) >= 2)
  assert feed.stats["disconnects"] >= 1 and peer.stats["connections"] >= 2
  assert all("pad" not in e.payload for e in customs(events))


@pytest.mark.parametrize("offset_ms", [86_400_000, -86_400_000, 10**15])
async def test_event_times_far_from_now_are_clamped(feed_peer_factory, offset_ms):
  peer = await feed_peer_factory(rate=20)
  feed = CustomWsFeed(peer.url, mapping=MAPPING, source="clock", backoff=FAST, settings=LOCAL)
  stamp = int(time.time() * 1000) + offset_ms
  odd = {"type": "trade", "seq": -1, "data": {"s": "BTCUSDT", "p": "1", "q": "1", "T": stamp}}
  async with feed:
    await collect(feed, lambda ev: len(customs(ev)) >= 1)
    await peer.inject(json.dumps(odd))
    events = await collect(
      feed,
      lambda ev: (
        any(e.payload.get("seq") == -1 for e in customs(ev))
        and any(e.payload.get("seq") != -1 for e in customs(ev))
      ),
    )
  ev = next(e for e in customs(events) if e.payload.get("seq") == -1)
  assert abs(ev.ts - ev.ts_ingest) < 1000  # re-stamped with the receive time
  assert feed.stats["clamped"] >= 1
  normal = [e for e in customs(events) if e.payload.get("seq") != -1]
  assert normal and all(abs(e.ts - e.ts_ingest) < 60_000 for e in normal)


@pytest.fixture
async def host_peer() -> AsyncIterator[tuple[int, list[str]]]:
  """Serve a JSON feed on 127.0.0.1 that records each handshake's Host header."""
  hosts: list[str] = []

  async def handler(ws: ServerConnection) -> None:
    hosts.append(ws.request.headers["Host"] if ws.request else "")
    stamp = int(time.time() * 1000)
    while True:
      msg = {"type": "trade", "data": {"s": "BTCUSDT", "p": "1", "q": "1", "T": stamp}}
      await ws.send(json.dumps(msg))
      await asyncio.sleep(0.02)

  server = await serve(handler, "127.0.0.1", 0)
  yield int(next(iter(server.sockets)).getsockname()[1]), hosts
  server.close()
  await server.wait_closed()


async def test_the_feed_connects_to_the_address_it_checked(host_peer, monkeypatch):
  # `rebind.test` exists in no DNS: only the resolver the connector consults (stood in for
  # here, as no DNS server is at hand) knows it. The connection must go to the address that
  # lookup gave and that was checked, with no second lookup a rebinding DNS could answer
  # differently (asyncio's create_connection would call the same loop.getaddrinfo).
  port, hosts = host_peer
  loop = asyncio.get_running_loop()
  real = loop.getaddrinfo
  asked: list[str] = []

  def resolving_to(address: str) -> Callable[..., Awaitable[Any]]:
    async def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
      asked.append(str(host))
      return await real(address, *args, **kwargs)

    return resolve

  url = f"ws://rebind.test:{port}/feed"
  monkeypatch.setattr(loop, "getaddrinfo", resolving_to("127.0.0.1"))
  feed = CustomWsFeed(url, mapping=MAPPING, source="rebind", backoff=FAST, settings=LOCAL)
  async with feed:
    await collect(feed, lambda ev: len(customs(ev)) >= 3)
  assert asked == ["rebind.test"] and feed.stats["connects"] == 1  # one lookup per connect
  assert hosts == [f"rebind.test:{port}"]  # the URL's Host header, kept

  monkeypatch.setattr(loop, "getaddrinfo", resolving_to("127.0.0.2"))  # not allowed
  blocked = CustomWsFeed(url, mapping=MAPPING, source="rebind", backoff=FAST, settings=LOCAL)
  async with blocked:
    await until(lambda: blocked.stats["refused"] >= 2)
  assert hosts == [f"rebind.test:{port}"] and blocked.stats["connects"] == 0
