"""A local X API v2 filtered-stream server: rules, a streaming endpoint, Bearer auth.

    async with XPeer(port=0, bearer="t0ken", tweets_per_sec=20) as peer:
      peer.fail_next(429, times=2)  # the next two stream connections get 429
      url = peer.base_url           # use as x_api_url

Tweets mention cashtags and hashtags of the rules' symbols and are delivered only
when a rule matches, with `matching_rules`, as newline-delimited JSON; `\\r\\n`
keep-alives are sent every `keepalive_sec` like X does every 20 s.
"""

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Self

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bond.sim._server import LocalServer

log = logging.getLogger(__name__)

_TERM = re.compile(r"[$#][A-Za-z0-9_]+")
_PHRASES = [
  "{tag} looking strong into the close",
  "{tag} funding flipped negative, squeeze incoming?",
  "Just added more {tag}. Not financial advice.",
  "{tag} rejected at resistance again",
  "whales moving {tag} to exchanges, careful",
  "{tag} breakout confirmed on the 4h",
  "Volume on {tag} is insane today",
  "{tag} vs {tag2}: which one outperforms this week?",
  "Shorted {tag} here, stop above the high",
  "{tag} ETF flows positive for the 5th day",
]


def _now_iso() -> str:
  return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _problem(status: int, title: str) -> JSONResponse:
  body = {"title": title, "detail": title, "type": "about:blank", "status": status}
  headers = {}
  if status == 429:
    headers = {
      "x-rate-limit-limit": "50",
      "x-rate-limit-remaining": "0",
      "x-rate-limit-reset": str(int(time.time()) + 900),
    }
  return JSONResponse(body, status_code=status, headers=headers)


class XPeer:
  """An X API v2 filtered stream on 127.0.0.1 for the X connector's tests and demos."""

  def __init__(
    self,
    port: int = 0,
    bearer: str = "test-bearer",
    tweets_per_sec: float = 10.0,
    seed: int = 42,
    keepalive_sec: float = 20.0,
    host: str = "127.0.0.1",
  ) -> None:
    self.bearer = bearer
    self.tweets_per_sec = tweets_per_sec
    self.keepalive_sec = keepalive_sec
    self.rng = random.Random(seed)
    self.rules: dict[str, dict[str, str]] = {}
    self.stats: dict[str, int] = {"connections": 0, "rejected": 0, "tweets": 0, "unauthorized": 0}
    self._next_rule = 1_700_000_000_000_000_000
    self._next_tweet = 1_850_000_000_000_000_000
    self._failures: list[int] = []
    self._open: set[asyncio.Event] = set()
    self._server = LocalServer(self._app(), host=host, port=port)

  @property
  def port(self) -> int:
    """Return the bound port (after start)."""
    return self._server.port

  @property
  def base_url(self) -> str:
    """Return `http://127.0.0.1:<port>`, the value for x_api_url."""
    return f"http://{self._server.host}:{self.port}"

  async def start(self) -> None:
    """Start serving."""
    await self._server.start()

  async def stop(self) -> None:
    """Stop serving; idempotent."""
    self.drop_streams()
    await self._server.stop()

  async def __aenter__(self) -> Self:
    await self.start()
    return self

  async def __aexit__(self, *exc: object) -> None:
    await self.stop()

  def fail_next(self, status: int, times: int = 1) -> None:
    """Answer the next `times` stream connections with HTTP `status` (e.g. 429, 503)."""
    self._failures += [status] * times

  def drop_streams(self) -> None:
    """End every open stream response (clients see the stream close)."""
    for event in list(self._open):
      event.set()

  # ------------------------------------------------------------------ HTTP

  def _app(self) -> Starlette:
    return Starlette(
      routes=[
        Route("/2/tweets/search/stream/rules", self._rules, methods=["GET", "POST"]),
        Route("/2/tweets/search/stream", self._stream, methods=["GET"]),
      ]
    )

  def _authorized(self, request: Request) -> bool:
    ok = request.headers.get("authorization", "") == f"Bearer {self.bearer}"
    if not ok:
      self.stats["unauthorized"] += 1
    return ok

  async def _rules(self, request: Request) -> Response:
    if not self._authorized(request):
      return _problem(401, "Unauthorized")
    meta: dict[str, Any] = {"sent": _now_iso()}
    if request.method == "GET":
      data = list(self.rules.values())
      meta["result_count"] = len(data)
      return JSONResponse({"data": data, "meta": meta} if data else {"meta": meta})
    try:
      body = await request.json()
    except ValueError:
      return _problem(400, "Invalid Request")
    if "add" in body:
      added = []
      for rule in body["add"]:
        value = str(rule.get("value", ""))
        if not value or len(value) > 512:
          return _problem(400, "Invalid Request")
        self._next_rule += 1
        entry = {"id": str(self._next_rule), "value": value}
        if rule.get("tag"):
          entry["tag"] = str(rule["tag"])
        self.rules[entry["id"]] = entry
        added.append(entry)
      meta["summary"] = {"created": len(added), "not_created": 0, "valid": len(added), "invalid": 0}
      return JSONResponse({"data": added, "meta": meta}, status_code=201)
    if "delete" in body:
      ids = [str(i) for i in body["delete"].get("ids", [])]
      deleted = [i for i in ids if self.rules.pop(i, None) is not None]
      meta["summary"] = {"deleted": len(deleted), "not_deleted": len(ids) - len(deleted)}
      return JSONResponse({"meta": meta})
    return _problem(400, "Invalid Request")

  async def _stream(self, request: Request) -> Response:
    if not self._authorized(request):
      return _problem(401, "Unauthorized")
    if self._failures:
      status = self._failures.pop(0)
      self.stats["rejected"] += 1
      return _problem(status, "Too Many Requests" if status == 429 else "Service Unavailable")
    self.stats["connections"] += 1
    drop = asyncio.Event()
    fields = set(request.query_params.get("tweet.fields", "").split(","))
    return StreamingResponse(self._lines(drop, fields), media_type="application/json")

  async def _lines(self, drop: asyncio.Event, fields: set[str]) -> AsyncIterator[bytes]:
    self._open.add(drop)
    last_keepalive = time.monotonic()
    interval = 1.0 / self.tweets_per_sec if self.tweets_per_sec > 0 else 3600.0
    try:
      while not drop.is_set():
        try:
          await asyncio.wait_for(drop.wait(), timeout=min(interval, self.keepalive_sec))
          return
        except TimeoutError:
          pass
        if time.monotonic() - last_keepalive >= self.keepalive_sec:
          last_keepalive = time.monotonic()
          yield b"\r\n"
        line = self._tweet(fields)
        if line is not None:
          last_keepalive = time.monotonic()
          yield line
    finally:
      self._open.discard(drop)

  def _tweet(self, fields: set[str]) -> bytes | None:
    rules = list(self.rules.values())
    if not rules or self.tweets_per_sec <= 0:
      return None
    terms = sorted({t for r in rules for t in _TERM.findall(r["value"])})
    if not terms:
      return None
    first, second = self.rng.choice(terms), self.rng.choice(terms)
    text = self.rng.choice(_PHRASES).format(tag=first, tag2=second)
    words = {w.lower() for w in _TERM.findall(text)}
    matching = [
      {"id": r["id"], "tag": r.get("tag", "")}
      for r in rules
      if any(t.lower() in words for t in _TERM.findall(r["value"]))
    ]
    if not matching:
      return None
    self._next_tweet += self.rng.randrange(1, 10**6)
    data: dict[str, Any] = {
      "id": str(self._next_tweet),
      "text": text,
      "edit_history_tweet_ids": [str(self._next_tweet)],
    }
    if "author_id" in fields:
      data["author_id"] = str(10**17 + self.rng.randrange(10**6))
    if "created_at" in fields:
      data["created_at"] = _now_iso()
    self.stats["tweets"] += 1
    return json.dumps({"data": data, "matching_rules": matching}).encode() + b"\r\n"
