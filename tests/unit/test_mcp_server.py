"""The MCP server's pure parts: field docs, compact rows, time expressions, which windows exist,
URIs, and the API-key check (an ASGI call in memory)."""

import asyncio
from typing import Any

import pytest
from mcp.server.subscriptions import InMemorySubscriptionBus

from bond.mcp_server.fields import COLUMNS, FIELDS, compact_rows, parse_time_ms, table
from bond.mcp_server.http import ApiKeyMiddleware
from bond.mcp_server.server import bearer
from bond.mcp_server.watch import StreamWatchers, TooManyWatchesError, latest_uri, stream_of
from bond.mcp_server.windows import last_window_end
from bond.schemas import AggregatedEvent

NOW = 1_796_000_000_000


def test_every_window_field_is_documented_with_unit_and_null_meaning():
  documented = {f["name"] for f in FIELDS}
  assert set(AggregatedEvent.model_fields) == documented
  assert all(f["unit"] and f["null_means"] and f["description"] for f in FIELDS)
  assert set(COLUMNS) - {"seq", "ts", "symbol"} <= documented


def test_compact_rows_give_one_row_per_symbol_and_sum_onchain():
  one = {"seq": 5000, "ts": "t", "symbol": "BTC/USDT", "price_avg": 1.5, "trades": 2,
         "onchain": {"tx": 2, "transfer": 3}, "custom_count": 1, "raw_data": {"sim": True}}  # fmt: skip
  two = {
    "seq": 6000,
    "ts": "u",
    "symbol": "BTC/USDT",
    "by_symbol": {"BTC/USDT": {"price_avg": 2.0}, "ETH/USDT": {"price_avg": None, "trades": 0}},
  }
  rows = compact_rows([one, two])
  col = {name: i for i, name in enumerate(COLUMNS)}
  assert [(r[col["seq"]], r[col["symbol"]], r[col["price_avg"]]) for r in rows] == [
    (5000, "BTC/USDT", 1.5),
    (6000, "BTC/USDT", 2.0),
    (6000, "ETH/USDT", None),
  ]
  assert rows[0][col["onchain"]] == 5 and rows[0][col["custom_count"]] == 1
  answer = table("s", [one, two], timed_out=False)
  assert answer["first_seq"] == 5000 and answer["last_seq"] == 6000 and answer["sim"] is True
  assert table("s", [])["last_seq"] is None


@pytest.mark.parametrize(
  ("text", "expected"),
  [
    ("now", NOW),
    ("now-90s", NOW - 90_000),
    ("NOW - 5m", NOW - 300_000),
    ("now-2h", NOW - 7_200_000),
    ("1795999999000", 1_795_999_999_000),
    ("2026-11-30T18:00:00Z", 1_796_061_600_000),
    ("2026-11-30T19:00:00+01:00", 1_796_061_600_000),
  ],
)
def test_time_expressions(text: str, expected: int):
  assert parse_time_ms(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "now+5m", "now-5y", "", "12345678901234567890"])
def test_bad_time_expressions_say_what_is_accepted(text: str):
  with pytest.raises(ValueError, match="now-90s"):
    parse_time_ms(text, NOW)


def test_the_newest_window_that_exists_is_aligned_and_after_creation():
  assert last_window_end(NOW + 4_500, NOW + 10_000, 5_000, NOW - 60_000) == NOW
  assert last_window_end(NOW + 99_000, NOW + 7_000, 5_000, NOW - 60_000) == NOW + 5_000
  assert last_window_end(NOW + 4_000, NOW + 4_000, 5_000, NOW) is None  # created at that end
  # Created with an hour of backfill: its windows from before creation exist at once.
  assert last_window_end(NOW + 4_000, NOW + 4_000, 5_000, NOW, 3_600_000) == NOW


def test_uris_and_bearer_keys():
  assert stream_of(latest_uri("0123456789abcdef")) == "0123456789abcdef"
  assert stream_of("bond://streams/0123456789ABCDEF/latest") is None
  assert stream_of("bond://streams/0123456789abcdef/latest/x") is None
  assert bearer({"authorization": "Bearer k1 "}) == "k1"
  assert bearer({"authorization": "Basic k1"}) is None
  assert bearer({"authorization": "Bearer "}) is None
  assert bearer(None) is None


def _call(app: Any, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
  sent: list[dict[str, Any]] = []

  async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}

  async def send(message: dict[str, Any]) -> None:
    sent.append(message)

  scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers,
           "query_string": b"", "http_version": "1.1"}  # fmt: skip
  asyncio.run(app(scope, receive, send))
  return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def _ok(scope: Any, receive: Any, send: Any) -> None:
  await send({"type": "http.response.start", "status": 200, "headers": []})
  await send({"type": "http.response.body", "body": b"ok"})


def test_the_key_check_answers_401_json_unless_a_configured_key_is_sent():
  guarded = ApiKeyMiddleware(_ok, {"k1", "k2"})
  assert _call(guarded, [(b"authorization", b"Bearer k2")]) == (200, b"ok")
  status, body = _call(guarded, [])
  assert status == 401 and b"Authorization: Bearer" in body
  status, body = _call(guarded, [(b"authorization", b"Bearer k3")])
  assert status == 401 and b"unknown API key" in body
  assert _call(ApiKeyMiddleware(_ok, ()), []) == (200, b"ok")  # no keys configured: open


class _Quiet:
  """A stand-in SDK client whose stream never sends (no I/O)."""

  async def listen(self, stream_id: str) -> Any:
    await asyncio.Event().wait()
    yield {}

  async def aclose(self) -> None:
    return None


async def test_followed_streams_are_bounded_and_legacy_only_ones_make_room():
  watchers = StreamWatchers(InMemorySubscriptionBus(), max_streams=2)
  quiet: Any = _Quiet
  a, b, c, d = (ch * 16 for ch in "abcd")
  watchers.add_session(None, a, object(), quiet)  # type: ignore[arg-type]
  watchers.acquire(None, b, quiet)
  watchers.acquire(None, b, quiet)  # a second subscriber shares the listener
  assert len(watchers) == 2
  watchers.acquire(None, c, quiet)  # full: the stream only a 2025 session wanted goes
  assert watchers.latest(None, a) == (False, None) and len(watchers) == 2
  with pytest.raises(TooManyWatchesError, match="limit"):
    watchers.acquire(None, d, quiet)
  watchers.release(None, b)
  assert watchers.latest(None, b) == (True, None)  # one subscriber left
  watchers.release(None, b)
  assert watchers.latest(None, b) == (False, None)
  await watchers.aclose()
  assert len(watchers) == 0
