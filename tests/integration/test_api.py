"""The REST control plane under a real uvicorn, on the test session's real Kafka and Redis.

Each API server runs in its own thread (its own event loop), so the async tests talk to
it over TCP like any client. The registry topic is shared by every test and run, so each
test works in a project (API key) of its own.
"""

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from openapi_spec_validator import validate

from bond import tokens
from bond.config import Settings
from bond.errors import UpstreamError
from bond.gateway.api import MarketLoader, create_api_app
from bond.sim.exchange import SimExchange
from bond.topics import stream_topic
from bond.topics.admin import TopicAdmin
from tests.conftest import free_port, nested
from tests.integration.gateways import tampered

pytestmark = pytest.mark.integration

SECRET = "api-test-secret-" + uuid.uuid4().hex
WS_HOST = "ws.bond.test:8080"


class LoopThread:
  """An event loop running in a daemon thread, for servers the tests talk to over TCP."""

  def __init__(self) -> None:
    self.loop = asyncio.new_event_loop()
    self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
    self.thread.start()

  def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
    """Run a coroutine on the thread's loop and return its result."""
    return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

  def close(self) -> None:
    """Stop the loop and join the thread."""
    self.loop.call_soon_threadsafe(self.loop.stop)
    self.thread.join(10)
    self.loop.close()


class ApiServer:
  """The REST API under a real uvicorn in a background thread."""

  def __init__(self, settings: Settings, market_loader: MarketLoader | None = None) -> None:
    self.settings = settings
    self.market_loader = market_loader
    self.url = ""
    self.exit_code: int | str | None = None
    self._server: uvicorn.Server | None = None
    self._thread: threading.Thread | None = None

  def start(self, timeout_sec: float = 60) -> "ApiServer":
    """Serve on a fresh loopback port; raise if the app does not start."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_api_app(self.settings, market_loader=self.market_loader)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    self._server = uvicorn.Server(config)
    self._thread = threading.Thread(target=self._run, args=(self._server, sock), daemon=True)
    self._thread.start()
    deadline = time.monotonic() + timeout_sec
    while not self._server.started:
      if not self._thread.is_alive() or time.monotonic() > deadline:
        raise RuntimeError("the API did not start; see the log above")
      time.sleep(0.02)
    return self

  def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
    try:
      server.run(sockets=[sock])
    except SystemExit as exc:  # uvicorn exits when the lifespan startup fails
      self.exit_code = exc.code

  def stop(self) -> None:
    """Shut uvicorn down (lifespan shutdown included) and join its thread."""
    if self._server is not None and self._thread is not None:
      self._server.should_exit = True
      self._thread.join(30)
      self._server = self._thread = None


def settings_for(infra: dict[str, str], sim_port: int, **over: Any) -> Settings:
  """Return explicit Settings for a test API (nothing read from a stray environment)."""
  values: dict[str, Any] = {
    "kafka_bootstrap": infra["bootstrap"],
    "redis_url": infra["redis_url"],
    "ws_host": WS_HOST,
    "bond_secret": SECRET,
    "bond_env": "dev",
    "bond_market": "sim",
    "bond_sim_port": sim_port,
    "bond_exchanges": "binance,okx,bybit",
    "bond_max_streams": 5,
    "bond_token_ttl": 600,
    "bond_api_keys": "",
  }
  values.update(over)
  return Settings(**values)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimExchange]:
  """Serve the sim exchange (the markets unknown symbols are checked against) from its own thread."""
  loop = LoopThread()
  exchange = SimExchange(port=0, trades_per_sec=0)
  loop.run(exchange.start())
  yield exchange
  loop.run(exchange.stop())
  loop.close()


@pytest.fixture(scope="module")
def projects() -> list[tuple[str, str]]:
  """Return (project name, API key) pairs unique to this module's run."""
  tag = uuid.uuid4().hex[:8]
  return [(f"p{i}-{tag}", f"key{i}-{uuid.uuid4().hex}") for i in range(30)]


@pytest.fixture(scope="module")
def api(
  infra: dict[str, str], sim: SimExchange, projects: list[tuple[str, str]]
) -> Iterator[ApiServer]:
  """Serve one API with many projects for the module."""
  keys = ",".join(f"{name}:{key}" for name, key in projects)
  server = ApiServer(settings_for(infra, sim.port, bond_api_keys=keys)).start()
  yield server
  server.stop()


@pytest.fixture(scope="module")
def project_pool(api: ApiServer, projects: list[tuple[str, str]]) -> Callable[[], tuple[str, str]]:
  """Return a factory handing out projects no other test uses."""
  return list(projects).pop


@pytest.fixture
async def client(api: ApiServer, project_pool: Callable[[], tuple[str, str]]) -> Any:
  """Return an httpx client authenticated as a fresh project; its streams are deleted after."""
  name, key = project_pool()
  async with httpx.AsyncClient(
    base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
  ) as http:
    http.project = name  # type: ignore[attr-defined]
    yield http
    listed = await http.get("/v1/streams")
    for stream in listed.json().get("streams", []):
      await http.delete(f"/v1/streams/{stream['stream_id']}")


def spec_for(symbol: str, *sources: str, interval_sec: int = 5) -> dict[str, Any]:
  """Return a JSON spec body over one symbol."""
  return {
    "spec": {
      "sources": [{"type": s} for s in sources or ("ccxt",)],
      "symbols": [symbol],
      "interval_sec": interval_sec,
    }
  }


def assert_error(resp: httpx.Response, status: int, *needles: str) -> str:
  """Check a JSON error response and return its message."""
  assert resp.status_code == status, resp.text
  body = resp.json()
  assert set(body["error"]) == {"code", "message"}
  assert isinstance(body["error"]["code"], str) and body["error"]["code"]
  message: str = body["error"]["message"]
  for needle in needles:
    assert needle.lower() in message.lower(), message
  return message


# ---------------------------------------------------------------------- ops endpoints


async def test_health_ready_and_prometheus(api: ApiServer, client: httpx.AsyncClient) -> None:
  health = await client.get("/healthz")
  assert health.status_code == 200 and health.json() == {"status": "ok"}
  ready = await client.get("/readyz")
  assert ready.status_code == 200
  assert ready.json() == {"status": "ready", "checks": {"kafka": "ok", "redis": "ok"}}
  created = await client.post("/v1/streams", json=spec_for("BTC"))
  assert created.status_code == 201
  await client.get("/v1/streams/0000000000000000")
  metrics = await client.get("/metrics")
  assert metrics.status_code == 200
  assert metrics.headers["content-type"].startswith("text/plain")
  text = metrics.text
  assert 'bond_api_requests_total{method="POST",route="/v1/streams",status="201"}' in text
  assert 'route="/v1/streams/{stream_id}",status="404"' in text
  assert "bond_api_request_duration_seconds_bucket" in text
  assert f'bond_api_streams{{owner="{client.project}"}} 1.0' in text  # type: ignore[attr-defined]


async def test_openapi_document_is_valid_and_complete(client: httpx.AsyncClient) -> None:
  resp = await client.get("/openapi.json")
  assert resp.status_code == 200
  doc = resp.json()
  validate(doc)
  assert doc["openapi"].startswith("3.1")
  expected = {
    ("/v1/streams", "post"),
    ("/v1/streams", "get"),
    ("/v1/streams/{stream_id}", "get"),
    ("/v1/streams/{stream_id}", "delete"),
    ("/v1/streams/{stream_id}/token", "post"),
    ("/v1/streams/{stream_id}/metrics", "get"),
    ("/v1/streams/{stream_id}/windows", "get"),
    ("/v1/compile", "post"),
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/metrics", "get"),
    ("/openapi.json", "get"),
  }
  have = {(path, method) for path, ops in doc["paths"].items() for method in ops}
  assert have == expected
  schemas = doc["components"]["schemas"]
  for name in ("StreamSpec", "StreamCreated", "StreamMetrics", "ErrorBody", "CreateFromSentence"):
    assert name in schemas
  create = doc["paths"]["/v1/streams"]["post"]
  assert {"201", "200", "400", "401", "413", "422", "429"} <= set(create["responses"])


# ---------------------------------------------------------------------- create


async def test_create_from_sentence_gives_a_signed_ws_url(
  infra: dict[str, str], client: httpx.AsyncClient
) -> None:
  resp = await client.post("/v1/streams", json={"natural_language": "BTC price + tweets every 5s"})
  assert resp.status_code == 201, resp.text
  body = resp.json()
  assert set(body) >= {"stream_id", "ws_url", "token", "expires_in_sec", "spec", "created_at"}
  sid, token = body["stream_id"], body["token"]
  assert len(sid) == 16 and int(sid, 16) >= 0
  assert body["ws_url"] == f"ws://{WS_HOST}/ws/{sid}?token={token}"
  assert body["expires_in_sec"] == 600
  assert body["spec"]["interval_sec"] == 5
  assert body["spec"]["symbols"] == ["BTC/USDT"]
  assert body["spec"]["exchanges"] == ["binance", "okx", "bybit"]  # filled in from BOND_EXCHANGES
  assert sorted(s["type"] for s in body["spec"]["sources"]) == ["ccxt", "twitter"]
  # The token verifies for this stream and no other; tampering breaks it.
  tokens.verify(token, sid, secret=SECRET, previous="")
  with pytest.raises(tokens.TokenError) as wrong:
    tokens.verify(token, "0123456789abcdef", secret=SECRET, previous="")
  assert wrong.value.reason == "wrong_stream"
  head, exp, epoch, mac = token.split(".")
  for forged in (
    f"{head}.{int(exp) + 3600}.{epoch}.{mac}",
    f"{head}.{exp}.{int(epoch) + 1}.{mac}",
    tampered(token),
  ):
    with pytest.raises(tokens.TokenError) as bad:
      tokens.verify(forged, sid, secret=SECRET, previous="")
    assert bad.value.reason == "bad_signature"
  # The stream's topic exists and the registry has the record.
  async with TopicAdmin(infra["bootstrap"]) as admin:
    assert stream_topic(sid).name in await admin.existing()
  got = await client.get(f"/v1/streams/{sid}")
  assert got.status_code == 200
  assert got.json()["spec"] == body["spec"]
  assert got.json()["owner"] == client.project  # type: ignore[attr-defined]


async def test_creating_the_same_stream_twice_returns_the_same_id(
  client: httpx.AsyncClient,
) -> None:
  first = await client.post("/v1/streams", json={"natural_language": "ETH price every 10s"})
  assert first.status_code == 201, first.text
  again = await client.post("/v1/streams", json={"natural_language": "eth prices every 10 seconds"})
  assert again.status_code == 200, again.text
  same_spec = await client.post("/v1/streams", json=spec_for("ETH/USDT", interval_sec=10))
  assert same_spec.status_code == 200, same_spec.text
  ids = {r.json()["stream_id"] for r in (first, again, same_spec)}
  assert len(ids) == 1
  assert again.json()["created_at"] == first.json()["created_at"]
  tokens.verify(again.json()["token"], first.json()["stream_id"], secret=SECRET, previous="")
  listed = (await client.get("/v1/streams")).json()
  assert listed["count"] == 1


async def test_sixth_stream_answers_429_until_one_is_deleted(client: httpx.AsyncClient) -> None:
  ids = []
  for symbol in ("BTC", "ETH", "SOL", "DOGE", "XRP"):
    resp = await client.post("/v1/streams", json=spec_for(symbol))
    assert resp.status_code == 201, resp.text
    ids.append(resp.json()["stream_id"])
  sixth = await client.post("/v1/streams", json=spec_for("LINK"))
  message = assert_error(sixth, 429, "limit is 5", "BOND_MAX_STREAMS", "DELETE /v1/streams")
  assert "already has 5 streams" in message
  assert sixth.json()["error"]["code"] == "too_many_streams"
  # Asking for an existing stream is not a new one: no 429.
  again = await client.post("/v1/streams", json=spec_for("BTC"))
  assert again.status_code == 200 and again.json()["stream_id"] == ids[0]
  assert (await client.delete(f"/v1/streams/{ids[0]}")).status_code == 200
  freed = await client.post("/v1/streams", json=spec_for("LINK"))
  assert freed.status_code == 201, freed.text


# ---------------------------------------------------------------------- read, delete, token, metrics


async def test_list_get_and_other_projects(
  api: ApiServer, client: httpx.AsyncClient, project_pool
) -> None:
  a = (await client.post("/v1/streams", json=spec_for("SOL", "ccxt", "twitter"))).json()
  b = (await client.post("/v1/streams", json={"natural_language": "ADA tweets every 30s"})).json()
  listed = await client.get("/v1/streams")
  assert listed.status_code == 200
  body = listed.json()
  assert [s["stream_id"] for s in body["streams"]] == [a["stream_id"], b["stream_id"]]
  assert body["count"] == 2 and body["max_streams"] == 5
  _, other_key = project_pool()
  async with httpx.AsyncClient(
    base_url=api.url, headers={"Authorization": f"Bearer {other_key}"}
  ) as other:
    assert (await other.get("/v1/streams")).json()["streams"] == []
    for path in (f"/v1/streams/{a['stream_id']}", f"/v1/streams/{a['stream_id']}/metrics"):
      assert_error(await other.get(path), 404, a["stream_id"])
    assert_error(await other.delete(f"/v1/streams/{a['stream_id']}"), 404)
    assert_error(await other.post(f"/v1/streams/{a['stream_id']}/token"), 404)
    # The same spec in another project is another stream.
    theirs = await other.post("/v1/streams", json=spec_for("SOL", "ccxt", "twitter"))
    assert theirs.status_code == 201 and theirs.json()["stream_id"] != a["stream_id"]
    await other.delete(f"/v1/streams/{theirs.json()['stream_id']}")
  assert_error(await client.get("/v1/streams/ffffffffffffffff"), 404, "ffffffffffffffff")


async def test_delete_removes_record_topic_and_redis_keys(
  infra: dict[str, str], client: httpx.AsyncClient, redis_client: Any
) -> None:
  sid = (await client.post("/v1/streams", json=spec_for("DOT"))).json()["stream_id"]
  await redis_client.xadd(f"bond:stream:{sid}", {"e": "{}"}, id="1000-0")
  await redis_client.hset(f"bond:metrics:{sid}", mapping={"msgs_in": 3})
  resp = await client.delete(f"/v1/streams/{sid}")
  assert resp.status_code == 200
  assert resp.json() == {"stream_id": sid, "deleted": True}
  assert await redis_client.exists(f"bond:stream:{sid}", f"bond:metrics:{sid}") == 0
  async with TopicAdmin(infra["bootstrap"]) as admin:
    assert stream_topic(sid).name not in await admin.existing()
  assert_error(await client.get(f"/v1/streams/{sid}"), 404)
  assert_error(await client.delete(f"/v1/streams/{sid}"), 404)
  assert sid not in [s["stream_id"] for s in (await client.get("/v1/streams")).json()["streams"]]
  # It can be created again.
  again = await client.post("/v1/streams", json=spec_for("DOT"))
  assert again.status_code == 201 and again.json()["stream_id"] == sid


async def test_token_refresh(client: httpx.AsyncClient) -> None:
  sid = (await client.post("/v1/streams", json=spec_for("LTC"))).json()["stream_id"]
  resp = await client.post(f"/v1/streams/{sid}/token")
  assert resp.status_code == 200
  body = resp.json()
  assert set(body) >= {"token", "ws_url", "expires_in_sec"}
  assert body["ws_url"] == f"ws://{WS_HOST}/ws/{sid}?token={body['token']}"
  assert 0 < body["expires_at"] - time.time() <= 600
  tokens.verify(body["token"], sid, secret=SECRET, previous="")
  with pytest.raises(tokens.TokenError):
    tokens.verify(body["token"], sid, secret="another-secret", previous="")
  assert_error(await client.post("/v1/streams/0123456789abcdef/token"), 404)


async def test_stream_metrics_from_redis(client: httpx.AsyncClient, redis_client: Any) -> None:
  sid = (await client.post("/v1/streams", json=spec_for("TRX"))).json()["stream_id"]
  empty = await client.get(f"/v1/streams/{sid}/metrics")
  assert empty.status_code == 200
  body = empty.json()
  assert body["stream_id"] == sid and body["uptime_sec"] >= 0 and body["created_at"]
  for name in ("msgs_in", "msgs_out", "dropped", "late", "windows_out", "latency_samples"):
    assert body[name] == 0
  for name in ("latency_p50_ms", "latency_p95_ms", "emit_lag_p50_ms", "emit_lag_p95_ms"):
    assert body[name] is None
  await redis_client.hset(
    f"bond:metrics:{sid}",
    mapping={
      "msgs_in": 245,
      "windows_out": 48,
      "late": 2,
      "latency_p50_ms": 12.3,
      "latency_p95_ms": 45.7,
      "latency_samples": 245,
      "emit_lag_p50_ms": 3.5,
      "emit_lag_p95_ms": 9.25,
      "msgs_out": 96,
      "dropped": 1,
    },
  )
  await asyncio.sleep(0.2)
  full = (await client.get(f"/v1/streams/{sid}/metrics")).json()
  assert full["msgs_in"] == 245 and full["msgs_out"] == 96 and full["dropped"] == 1
  assert full["late"] == 2 and full["windows_out"] == 48 and full["latency_samples"] == 245
  assert full["latency_p50_ms"] == 12.3 and full["latency_p95_ms"] == 45.7
  assert full["emit_lag_p50_ms"] == 3.5 and full["emit_lag_p95_ms"] == 9.25
  assert full["uptime_sec"] >= body["uptime_sec"]
  assert_error(await client.get("/v1/streams/0123456789abcdef/metrics"), 404)


# ---------------------------------------------------------------------- compile


async def test_compile_is_a_dry_run(client: httpx.AsyncClient) -> None:
  resp = await client.post("/v1/compile", json={"natural_language": "SOL price every 3s"})
  assert resp.status_code == 200, resp.text
  body = resp.json()
  assert body["spec"]["symbols"] == ["SOL/USDT"] and body["spec"]["interval_sec"] == 3
  assert body["exists"] is False
  assert (await client.get("/v1/streams")).json()["count"] == 0
  created = await client.post("/v1/streams", json={"natural_language": "SOL price every 3s"})
  assert created.json()["stream_id"] == body["stream_id"]
  again = await client.post("/v1/compile", json={"spec": body["spec"]})
  assert again.json() == {**body, "exists": True}
  message = assert_error(
    await client.post("/v1/compile", json={"natural_language": "purple monkey dishwasher"}), 422
  )
  assert "purple" in message and "BTC price + tweets every 5s" in message
  # A content word Bond cannot serve is refused, not dropped (it compiled to a trades stream).
  message = assert_error(
    await client.post("/v1/compile", json={"natural_language": "BTC orderbook every 1s"}), 422
  )
  assert "'orderbook'" in message and "which Bond does not have" in message
  assert_error(await client.post("/v1/compile", json={"spec": {"sources": []}}), 422, "sources")


# ---------------------------------------------------------------------- errors


async def test_request_errors_are_json(api: ApiServer, client: httpx.AsyncClient) -> None:
  post = client.post
  assert_error(
    await post("/v1/streams", content=b"{not json", headers={"Content-Type": "application/json"}),
    400,
    "JSON",
  )
  assert_error(
    await post("/v1/streams", content=b"", headers={"Content-Type": "application/json"}),
    400,
    "empty",
  )
  assert_error(await post("/v1/streams", json=["BTC"]), 400, "object")
  assert_error(await post("/v1/streams", json="BTC price"), 400, "object")
  assert_error(
    await post("/v1/streams", content=b"\xff\xfe", headers={"Content-Type": "application/json"}),
    400,
  )
  nan = (
    b'{"spec": {"sources": [{"type": "custom", "url": "ws://feed.test", "subscribe": {"a": NaN}}]}}'
  )
  assert_error(
    await post("/v1/streams", content=nan, headers={"Content-Type": "application/json"}), 400, "NaN"
  )
  assert_error(await post("/v1/streams", json={}), 422, "exactly one")
  both = {"natural_language": "BTC price", **spec_for("BTC")}
  assert_error(await post("/v1/streams", json=both), 422, "exactly one")
  assert_error(
    await post("/v1/streams", json={"natural_language": "BTC price", "x": 1}),
    422,
    "unknown fields: x",
  )
  assert_error(await post("/v1/streams", json={"natural_language": 5}), 422, "string")
  assert_error(await post("/v1/streams", json={"natural_language": ""}), 422, "empty")
  assert_error(await post("/v1/streams", json={"natural_language": "BTC " * 400}), 422, "1000")
  assert_error(await post("/v1/streams", json=spec_for("BTC", interval_sec=0)), 422, "interval_sec")
  assert_error(
    await post(
      "/v1/streams", json={"spec": {"sources": [{"type": "carrier-pigeon"}], "symbols": ["BTC"]}}
    ),
    422,
    "carrier-pigeon",
  )
  assert_error(await post("/v1/streams", json={"spec": "BTC"}), 422, "spec")
  bad_exchange = {
    "spec": {"sources": [{"type": "ccxt"}], "symbols": ["BTC"], "exchanges": ["kraken"]}
  }
  assert_error(await post("/v1/streams", json=bad_exchange), 422, "kraken", "binance")
  assert_error(
    await post(
      "/v1/streams",
      content=b"natural_language=BTC",
      headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    415,
    "application/json",
  )
  # Over 64 KiB: refused on the declared length, and on the bytes streamed without one.
  big = b'{"natural_language": "' + b"x" * 70_000 + b'"}'
  assert_error(
    await post("/v1/streams", content=big, headers={"Content-Type": "application/json"}),
    413,
    "64 KiB",
  )

  async def chunks() -> Any:
    for _ in range(20):
      yield b" " * 8192

  assert_error(
    await post("/v1/streams", content=chunks(), headers={"Content-Type": "application/json"}), 413
  )
  assert_error(await client.get("/no/such/route"), 404, "/no/such/route")
  assert_error(await client.get("/v1/streams/a/b/c"), 404)
  wrong_method = await client.put("/v1/streams")
  assert_error(wrong_method, 405, "PUT")
  assert set(wrong_method.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
  assert_error(await client.patch("/v1/streams/0123456789abcdef"), 405)
  assert_error(await client.get("/v1/compile"), 405)


async def test_api_keys(api: ApiServer, client: httpx.AsyncClient) -> None:
  async with httpx.AsyncClient(base_url=api.url) as anon:
    for method, path in (
      ("GET", "/v1/streams"),
      ("POST", "/v1/streams"),
      ("POST", "/v1/compile"),
      ("GET", "/v1/streams/0123456789abcdef"),
    ):
      resp = await anon.request(method, path, json={"natural_language": "BTC price"})
      assert_error(resp, 401, "Authorization: Bearer")
      assert resp.headers["www-authenticate"] == "Bearer"
    assert_error(
      await anon.get("/v1/streams", headers={"Authorization": "Bearer nope"}),
      401,
      "unknown API key",
    )
    assert_error(await anon.get("/v1/streams", headers={"Authorization": "Basic abc"}), 401)
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
      assert (await anon.get(path)).status_code == 200


async def test_unknown_symbols_name_a_close_match(client: httpx.AsyncClient) -> None:
  resp = await client.post("/v1/streams", json=spec_for("BTCC/USDT"))
  message = assert_error(resp, 422, "BTCC/USDT", "not listed", "did you mean BTC/USDT")
  assert "binance" in message
  nl = await client.post("/v1/streams", json={"natural_language": "$ETHH price every 5s"})
  assert_error(nl, 422, "ETHH/USDT", "did you mean ETH/USDT")
  # X-only streams are not checked against exchange markets.
  tweets = await client.post("/v1/streams", json=spec_for("WAGMI", "twitter"))
  assert tweets.status_code == 201, tweets.text
  assert (await client.get("/v1/streams")).json()["count"] == 1


# ---------------------------------------------------------------------- restarts and degraded mode


async def test_streams_are_listed_identically_after_a_restart(
  infra: dict[str, str], sim: SimExchange
) -> None:
  name, key = f"restart-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
  settings = settings_for(infra, sim.port, bond_api_keys=f"{name}:{key}")
  headers = {"Authorization": f"Bearer {key}"}
  first = ApiServer(settings).start()
  try:
    async with httpx.AsyncClient(base_url=first.url, headers=headers, timeout=30) as http:
      for text in (
        "BTC price every 5s",
        "ETH trades + tweets every 10s",
        "SOL on-chain transfers every 2s",
      ):
        assert (await http.post("/v1/streams", json={"natural_language": text})).status_code == 201
      before = (await http.get("/v1/streams")).json()
      assert before["count"] == 3
  finally:
    first.stop()
  second = ApiServer(settings).start()
  try:
    async with httpx.AsyncClient(base_url=second.url, headers=headers, timeout=30) as http:
      assert (await http.get("/v1/streams")).json() == before
      again = await http.post("/v1/streams", json={"natural_language": "BTC price every 5s"})
      assert (
        again.status_code == 200 and again.json()["stream_id"] == before["streams"][0]["stream_id"]
      )
      for stream in before["streams"]:
        assert (await http.delete(f"/v1/streams/{stream['stream_id']}")).status_code == 200
  finally:
    second.stop()


async def test_local_project_and_degraded_dependencies(
  infra: dict[str, str], sim: SimExchange
) -> None:
  calls: list[str] = []

  async def no_markets(exchange_id: str, settings: Settings) -> set[str]:
    calls.append(exchange_id)
    raise UpstreamError("exchange unreachable")

  dead_redis = f"redis://127.0.0.1:{free_port()}/0"
  settings = settings_for(infra, sim.port, redis_url=dead_redis, bond_max_streams=10_000)
  server = ApiServer(settings, market_loader=no_markets).start()
  try:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
      # No keys configured: no Authorization needed, everything is project "local".
      symbol = f"Q{uuid.uuid4().hex[:6].upper()}"
      resp = await http.post("/v1/streams", json=spec_for(symbol))
      assert resp.status_code == 201, resp.text  # markets unavailable: accepted, with a warning
      sid = resp.json()["stream_id"]
      assert (await http.get(f"/v1/streams/{sid}")).json()["owner"] == "local"
      assert sorted(calls) == ["binance", "bybit", "okx"]
      again = await http.post("/v1/compile", json=spec_for(symbol))
      assert again.status_code == 200 and sorted(calls) == ["binance", "bybit", "okx"]  # cached
      ready = await http.get("/readyz")
      assert_error(ready, 503, "redis is down")
      assert ready.json()["checks"]["kafka"] == "ok"
      assert_error(await http.get(f"/v1/streams/{sid}/metrics"), 503, "Redis")
      assert (await http.get("/healthz")).status_code == 200
      assert (await http.delete(f"/v1/streams/{sid}")).status_code == 200
  finally:
    server.stop()


async def test_refuses_the_default_secret_outside_dev(
  infra: dict[str, str], sim: SimExchange
) -> None:
  settings = settings_for(infra, sim.port, bond_env="prod", bond_secret="dev-secret-change-me")
  server = ApiServer(settings)
  with pytest.raises(RuntimeError, match="did not start"):
    server.start(timeout_sec=10)
  assert server.exit_code == 3  # uvicorn's startup failure


# ---------------------------------------------------------------------- hostile specs (issue 13)


async def test_the_issues_hostile_specs_are_refused_422_naming_the_cap(
  client: httpx.AsyncClient,
) -> None:
  letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
  flood = [a + b + c for a in letters for b in letters for c in letters][:9000]
  body = {"spec": {"sources": [{"type": "twitter", "symbols": flood}], "symbols": ["BTC"]}}
  resp = await client.post("/v1/streams", json=body)
  assert len(resp.request.content) > 50_000  # the issue's ~54 KB body
  assert_error(resp, 422, "sources.0.symbols", "BOND_MAX_SYMBOLS")
  cases: list[tuple[dict[str, Any], str]] = [
    ({"spec": {"sources": [{"type": "twitter", "symbols": ["BTC OR THE OR A"]}]}}, "ticker"),
    (
      {
        "spec": {
          "sources": [{"type": "custom", "url": "wss://f.example", "subscribe": nested(300)}]
        }
      },
      "BOND_MAX_SUBSCRIBE_DEPTH",
    ),
    (
      {"spec": {"sources": [{"type": "custom", "url": "ws://0x7f000001:6379/"}]}},
      "BOND_CUSTOM_ALLOW",
    ),
    ({"spec": {"sources": [{"type": "custom", "url": "ws://169.254.169.254/"}]}}, "link-local"),
    ({"natural_language": "BTC price + ws://127.0.0.1:6066 every 5s"}, "BOND_CUSTOM_ALLOW"),
    ({"natural_language": "BTC price " + "and tweets " * 100}, "BOND_MAX_SENTENCE_CHARS"),
  ]
  for path in ("/v1/compile", "/v1/streams"):
    for body, needle in cases:
      assert_error(await client.post(path, json=body), 422, needle)
  assert (await client.get("/v1/streams")).json()["count"] == 0
