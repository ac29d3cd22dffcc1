"""The SDK without I/O: request bodies, error mapping, URLs, token expiry, backoff, printers."""

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bond.cli_listen import TablePrinter, json_printer, listen_main, table_rows
from bond.client import (
  BondAPIError,
  BondClient,
  BondConnectionError,
  StreamClosedError,
  _answer,
  _create_body,
  backoff_sec,
  socket_url,
  token_expiry,
)

EVENT = {
  "stream_id": "8f2a1c9d4b3e7a10",
  "seq": 1761053405000,
  "ts": "2025-10-21T13:30:05Z",
  "window_start": "2025-10-21T13:30:00Z",
  "interval_sec": 5,
  "symbol": "BTC/USDT",
  "price_avg": 68123.5,
  "price_open": 68100.0,
  "price_high": 68150.0,
  "price_low": 68090.1,
  "price_close": 68140.2,
  "vwap": 68121.9,
  "volume_sum": 134.2,
  "trades": 15,
  "tweets": 8,
  "onchain": {"tx": 3, "transfer": 1},
  "by_symbol": None,
}


def test_create_body_takes_a_sentence_a_spec_or_a_full_body():
  assert _create_body("BTC every 5s") == {"natural_language": "BTC every 5s"}
  spec = {"sources": ["ccxt"], "symbols": ["BTC"]}
  assert _create_body(spec) == {"spec": spec}
  assert _create_body({"spec": spec}) == {"spec": spec}
  assert _create_body("BTC every 5s", backfill="1h") == {
    "natural_language": "BTC every 5s",
    "backfill": "1h",
  }
  assert _create_body(spec, backfill=600) == {"spec": spec, "backfill": 600}


def test_api_errors_carry_status_code_and_message():
  resp = httpx.Response(404, json={"error": {"code": "not_found", "message": "no stream 'x'"}})
  with pytest.raises(BondAPIError) as info:
    _answer(resp)
  err = info.value
  assert (err.status, err.code, err.message, err.retriable) == (
    404,
    "not_found",
    "no stream 'x'",
    False,
  )
  with pytest.raises(BondAPIError) as info:
    _answer(httpx.Response(503, text="upstream down"))
  assert info.value.code == "http_error" and info.value.retriable


def test_socket_url_keeps_the_gateway_and_sets_token_and_from():
  url = socket_url("ws://gw:8080/ws/abc?token=old", "abc", "new", "now-60s")
  assert url == "ws://gw:8080/ws/abc?token=new&from=now-60s"
  assert (
    socket_url("ws://gw/ws/abc?token=old", "abc", "t", None, base="wss://edge/")
    == "wss://edge/ws/abc?token=t"
  )


def test_token_expiry_and_backoff():
  assert token_expiry({"expires_at": 1000}) == 1000
  assert token_expiry({"expires_in_sec": 60}, now=10.0) == 70.0
  for n, cap in ((1, 0.25), (3, 1.0), (20, 10.0)):
    assert cap / 2 <= backoff_sec(n) <= cap


async def test_client_methods_over_a_mock_transport():
  seen: list[tuple[str, str, Any, str | None]] = []

  def answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content) if request.content else None
    seen.append((request.method, request.url.path, body, request.headers.get("authorization")))
    if request.url.path == "/v1/streams" and request.method == "GET":
      return httpx.Response(200, json={"streams": [{"stream_id": "a"}], "count": 1})
    return httpx.Response(200, json={"ok": True})

  client = BondClient("http://api", api_key="k1")
  client._http = httpx.AsyncClient(
    base_url="http://api",
    transport=httpx.MockTransport(answer),
    headers={"Authorization": "Bearer k1"},
  )
  async with client:
    assert await client.list_streams() == [{"stream_id": "a"}]
    await client.create_stream("SOL price every 3s")
    await client.refresh_token("8f2a1c9d4b3e7a10")
    await client.metrics("8f2a1c9d4b3e7a10")
    await client.delete_stream("8f2a1c9d4b3e7a10")
    await client.compile("ETH every 10s")
  assert [s[:2] for s in seen] == [
    ("GET", "/v1/streams"),
    ("POST", "/v1/streams"),
    ("POST", "/v1/streams/8f2a1c9d4b3e7a10/token"),
    ("GET", "/v1/streams/8f2a1c9d4b3e7a10/metrics"),
    ("DELETE", "/v1/streams/8f2a1c9d4b3e7a10"),
    ("POST", "/v1/compile"),
  ]
  assert seen[1][2] == {"natural_language": "SOL price every 3s"}
  assert all(s[3] == "Bearer k1" for s in seen)
  with pytest.raises(ValueError):
    await BondClient().get_stream("../etc")


def test_unreachable_api_is_a_bond_error():
  def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)

  with BondClient("http://api").sync() as client:
    client._http = httpx.Client(base_url="http://api", transport=httpx.MockTransport(refuse))
    with pytest.raises(BondConnectionError) as info:
      client.list_streams()
  assert info.value.retriable and "http://api" in info.value.message


def test_stream_closed_error_names_the_close_code():
  err = StreamClosedError("abc", 4404, "stream abc was deleted")
  assert err.close_code == 4404 and "deleted" in str(err)


def test_table_and_json_printers():
  assert table_rows(EVENT)[0][:3] == ["13:30:05", "BTC/USDT", "68,123.50"]
  assert table_rows(EVENT)[0][-1] == "4"
  multi = {**EVENT, "by_symbol": {"BTC/USDT": {"price_avg": 1.0}, "ETH/USDT": {"price_avg": None}}}
  assert [r[1] for r in table_rows(multi)] == ["BTC/USDT", "ETH/USDT"]
  out = io.StringIO()
  printer = TablePrinter(out)
  printer(EVENT)
  printer(EVENT)
  lines = out.getvalue().splitlines()
  assert len(lines) == 3 and lines[0].split()[:3] == ["time", "symbol", "avg"]
  out = io.StringIO()
  json_printer(out)(EVENT)
  assert json.loads(out.getvalue()) == EVENT


class FakeClient:
  """Stands in for BondClient: yields given events, then waits like a live stream."""

  def __init__(self, events: list[dict[str, Any]], then: BaseException | None = None) -> None:
    self.events = events
    self.then = then
    self.closed = False
    self.asked: tuple[Any, str | None] | None = None

  async def listen(self, target: Any, from_: str | None = None) -> AsyncIterator[dict[str, Any]]:
    self.asked = (target, from_)
    for e in self.events:
      yield e
    if self.then is not None:
      raise self.then

  async def aclose(self) -> None:
    self.closed = True


async def test_listen_main_prints_json_lines_and_exits_0_on_ctrl_c():
  out = io.StringIO()
  client = FakeClient([EVENT, {**EVENT, "seq": EVENT["seq"] + 5000}], then=KeyboardInterrupt())
  status = await listen_main(
    client, '{"sources": ["ccxt"], "symbols": ["BTC"]}', "now-60s", None, out=out
  )  # type: ignore[arg-type]
  assert status == 0 and client.closed
  assert client.asked == ({"sources": ["ccxt"], "symbols": ["BTC"]}, "now-60s")
  assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == [
    EVENT["seq"],
    EVENT["seq"] + 5000,
  ]


async def test_listen_main_lets_stream_errors_through():
  client = FakeClient([], then=StreamClosedError("abc", 4404, "deleted"))
  with pytest.raises(StreamClosedError):
    await listen_main(client, "abc", None, "table", out=io.StringIO())  # type: ignore[arg-type]
  assert client.closed


def test_a_rate_limited_answer_is_retried_after_its_retry_after() -> None:
  from bond.client import RATE_LIMIT_MAX_WAIT_SEC, _rate_limited_for

  def answer(status: int, code: str, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"error": {"code": code, "message": "m"}}
    return httpx.Response(status, json=body, headers=headers)

  wait = _rate_limited_for(answer(429, "rate_limited", "2"))
  assert wait is not None and 2.0 <= wait <= 2.4
  big = _rate_limited_for(answer(429, "rate_limited", "3600"))
  assert big is not None and big <= RATE_LIMIT_MAX_WAIT_SEC * 1.2
  assert _rate_limited_for(answer(429, "too_many_streams", "1")) is None  # waiting won't help
  assert _rate_limited_for(answer(503, "upstream_error", "1")) is None
  assert _rate_limited_for(httpx.Response(429, text="not json")) is None
