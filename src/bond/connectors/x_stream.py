"""Posts on X mentioning symbols: API v2 filtered stream (real) or seeded synthetic tweets (mock).

Real mode keeps one rule per symbol (`$BTC OR #BTC`, tag `bond:BTC`) and reads the
stream with httpx. Reconnects follow X's guidance: linear backoff for network errors
(250 ms steps up to 16 s), exponential for HTTP errors (from 5 s up to 320 s) and
for 429 (from 60 s); the bases are parameters so tests can run fast.
"""

import asyncio
import json
import logging
import random
from collections.abc import Coroutine, Iterable
from datetime import datetime
from typing import Any, Literal

import httpx

from bond.config import Settings, get_settings
from bond.connectors.backoff import Backoff
from bond.connectors.base import Connector, now_ms
from bond.errors import UpstreamError
from bond.schemas import Tweet, ticker

log = logging.getLogger(__name__)

RULE_TAG = "bond:"
STREAM_PATH = "/2/tweets/search/stream"
RULES_PATH = "/2/tweets/search/stream/rules"

_TEMPLATES = [
  "${s} holding the level nicely, bids stacked below",
  "${s} breaking out on volume, next leg up? #{s}",
  "Took profit on ${s} here. Will re-enter lower.",
  "#{s} funding is getting spicy, careful longs",
  "${s} and ${t} both ripping, risk-on day",
  "Whale alert: large ${s} transfer to an exchange",
  "${s} chart looks like a textbook bull flag",
  "Not selling my ${s}. #crypto #{s}",
  "${s} dumped 3% in ten minutes, who sold?",
  "Rotating from ${t} into ${s}",
]


class XHttpError(UpstreamError):
  """The X API answered with an HTTP error status."""

  def __init__(self, status: int, body: str) -> None:
    super().__init__(f"X API answered {status}: {body[:200]}", status=status)
    self.status = status


def rule_for(base: str) -> dict[str, str]:
  """Return the filtered-stream rule for one base asset; raise ValueError if not a ticker.

  The base is re-checked here (letters and digits only), so whatever reaches this function
  cannot add operators, quotes or groups to the rule: `BTC OR THE` is refused, not sent.
  """
  checked = ticker(base)
  if checked != base:
    raise ValueError(f"rule_for takes a normalised base asset like BTC, not {base[:40]!r}")
  return {"value": f"${checked} OR #{checked}", "tag": f"{RULE_TAG}{checked}"}


def _tickers(symbols: list[str]) -> list[str]:
  """Return the distinct checked bases of `symbols`, skipping (and logging) any other."""
  bases: list[str] = []
  for symbol in symbols:
    try:
      base = ticker(symbol)
    except ValueError as exc:
      log.warning("X stream ignores symbol %r: %s", str(symbol)[:40], exc)
      continue
    if base not in bases:
      bases.append(base)
  return bases


def _parse_time(text: str | None) -> int:
  if not text:
    return now_ms()
  try:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
  except ValueError:
    return now_ms()


def parse_tweet(line: dict[str, Any], bases: list[str], sim: bool = False) -> Tweet | None:
  """Return a Tweet from one filtered-stream message, or None when unusable.

  Sample (one line of GET /2/tweets/search/stream?tweet.fields=created_at,author_id):
  {"data": {"id": "1850000000000000123", "text": "$BTC breakout confirmed on the 4h",
   "author_id": "100000000000012345", "created_at": "2025-10-21T13:30:05.000Z",
   "edit_history_tweet_ids": ["1850000000000000123"]},
   "matching_rules": [{"id": "1700000000000000001", "tag": "bond:BTC"}]}
  """
  data = line.get("data")
  if not isinstance(data, dict) or not data.get("id") or not isinstance(data.get("text"), str):
    return None
  text: str = data["text"]
  found = [
    str(r.get("tag", ""))[len(RULE_TAG) :]
    for r in line.get("matching_rules") or []
    if isinstance(r, dict) and str(r.get("tag", "")).startswith(RULE_TAG)
  ]
  upper = text.upper()
  found += [b for b in bases if f"${b}" in upper or f"#{b}" in upper]
  symbols = [b for b in dict.fromkeys(found) if b in bases]
  if not symbols:
    return None
  return Tweet(
    ts=_parse_time(data.get("created_at")),
    ts_ingest=now_ms(),
    sim=sim,
    id=str(data["id"]),
    text=text,
    author=str(data.get("author_id", "")),
    symbols=symbols,
  )


class XStream(Connector):
  """Tweets mentioning `symbols`, from X (`mode="real"`) or a seeded generator (`mode="mock"`).

  `async with XStream(["BTC", "ETH"], mode="real", bearer=..., api_url=peer.base_url)
  as feed: async for tweet in feed: ...` yields Tweet (and Heartbeat per symbol).
  `stats`: events, tweets, connects, disconnects, errors, http_errors, rate_limited,
  keepalives, invalid.
  """

  source = "twitter"

  def __init__(
    self,
    symbols: list[str],
    mode: Literal["mock", "real"] | None = None,
    bearer: str | None = None,
    api_url: str | None = None,
    rate: float | None = None,
    seed: int = 42,
    settings: Settings | None = None,
    network_backoff: Backoff | None = None,
    http_backoff: Backoff | None = None,
    rate_limit_backoff: Backoff | None = None,
    stall_sec: float = 30.0,
    heartbeat_sec: float = 1.0,
  ) -> None:
    super().__init__(heartbeat_sec=heartbeat_sec)
    self.settings = settings or get_settings()
    self.bases = _tickers(symbols)
    self.bearer = bearer if bearer is not None else self.settings.x_bearer
    self.mode = mode or ("real" if self.bearer else "mock")
    self.api_url = (api_url or self.settings.x_api_url).rstrip("/")
    self.rate = rate if rate is not None else self.settings.bond_x_rate
    self.seed = seed
    self.sim = self.mode == "mock"
    self.network_backoff = network_backoff or Backoff(
      base_sec=0.25, max_sec=16.0, linear=True, jitter=0
    )
    self.http_backoff = http_backoff or Backoff(base_sec=5.0, max_sec=320.0)
    self.rate_limit_backoff = rate_limit_backoff or Backoff(base_sec=60.0, max_sec=960.0)
    self.stall_sec = stall_sec
    self.stats.update(
      tweets=0, connects=0, disconnects=0, http_errors=0, rate_limited=0, keepalives=0, invalid=0
    )
    self._client: httpx.AsyncClient | None = None

  def feeds(self) -> Iterable[tuple[str, str]]:
    return [("", b) for b in self.bases]

  def workers(self) -> Iterable[Coroutine[Any, Any, None]]:
    return [self._mock_loop() if self.mode == "mock" else self._stream_loop()]

  async def _open(self) -> None:
    if self.mode != "real":
      return
    if not self.bearer:
      raise UpstreamError("X_BEARER is not set; use mode='mock' or give a bearer token")
    self._client = httpx.AsyncClient(
      base_url=self.api_url,
      headers={"Authorization": f"Bearer {self.bearer}", "User-Agent": "bond-streams"},
      timeout=httpx.Timeout(10.0, read=self.stall_sec),
    )

  async def _close(self) -> None:
    client, self._client = self._client, None
    if client is not None:
      await client.aclose()

  async def _emit_tweet(self, tweet: Tweet) -> None:
    self.stats["tweets"] += 1
    await self.emit(tweet)
    for base in tweet.symbols:
      self.touch(("", base))

  # ------------------------------------------------------------------ rules

  async def sync_rules(self) -> dict[str, str]:
    """Make the stream's rules one per symbol (tag bond:<BASE>); return tag -> rule id."""
    assert self._client is not None
    resp = await self._client.get(RULES_PATH)
    self._check(resp)
    current = resp.json().get("data") or []
    wanted = {rule_for(b)["tag"]: rule_for(b) for b in self.bases}
    have: dict[str, str] = {}
    stale: list[str] = []
    for rule in current:
      tag = str(rule.get("tag", ""))
      if tag in wanted and wanted[tag]["value"] == rule.get("value") and tag not in have:
        have[tag] = str(rule["id"])
      elif tag.startswith(RULE_TAG):
        stale.append(str(rule["id"]))
    if stale:
      self._check(await self._client.post(RULES_PATH, json={"delete": {"ids": stale}}))
    missing = [rule for tag, rule in wanted.items() if tag not in have]
    if missing:
      resp = await self._client.post(RULES_PATH, json={"add": missing})
      self._check(resp)
      for rule in resp.json().get("data") or []:
        have[str(rule.get("tag", ""))] = str(rule["id"])
    return have

  @staticmethod
  def _check(resp: httpx.Response) -> None:
    if resp.status_code >= 400:
      raise XHttpError(resp.status_code, resp.text)

  # ------------------------------------------------------------------ stream

  async def _stream_loop(self) -> None:
    attempts = {"network": 0, "http": 0, "rate": 0}
    rules_synced = False
    while True:
      try:
        if not rules_synced:
          await self.sync_rules()
          rules_synced = True
        await self._read_stream(attempts)
        self.stats["disconnects"] += 1
        attempts["network"] += 1
        delay = self.network_backoff.delay(attempts["network"])
        log.warning("X stream closed by the server; reconnect in %.2fs", delay)
      except httpx.TransportError as exc:
        self.stats["disconnects"] += 1
        attempts["network"] += 1
        delay = self.network_backoff.delay(attempts["network"])
        log.warning("X stream network error %r; reconnect in %.2fs", exc, delay)
      except XHttpError as exc:
        self.stats["http_errors"] += 1
        self.stats["errors"] += 1
        if exc.status == 429:
          self.stats["rate_limited"] += 1
          attempts["rate"] += 1
          delay = self.rate_limit_backoff.delay(attempts["rate"])
        else:
          attempts["http"] += 1
          delay = self.http_backoff.delay(attempts["http"])
        log.warning("X API error %d; retry in %.2fs", exc.status, delay)
      await asyncio.sleep(delay)

  async def _read_stream(self, attempts: dict[str, int]) -> None:
    assert self._client is not None
    params = {"tweet.fields": "created_at,author_id"}
    async with self._client.stream("GET", STREAM_PATH, params=params) as resp:
      if resp.status_code != 200:
        body = (await resp.aread()).decode(errors="replace")
        raise XHttpError(resp.status_code, body)
      self.stats["connects"] += 1
      for key in attempts:
        attempts[key] = 0
      async for line in resp.aiter_lines():
        await self._line(line)

  async def _line(self, line: str) -> None:
    text = line.strip()
    if not text:
      self.stats["keepalives"] += 1
      return
    try:
      msg = json.loads(text)
    except ValueError:
      self.stats["invalid"] += 1
      return
    if not isinstance(msg, dict):
      self.stats["invalid"] += 1
      return
    if "errors" in msg and "data" not in msg:
      # Operational messages (e.g. operational-disconnect) come in-band.
      log.warning("X stream message: %s", str(msg["errors"])[:300])
      return
    tweet = parse_tweet(msg, self.bases)
    if tweet is None:
      self.stats["invalid"] += 1
      return
    await self._emit_tweet(tweet)

  # ------------------------------------------------------------------ mock

  async def _mock_loop(self) -> None:
    """Emit seeded synthetic tweets at `rate`/s, each mentioning one or two symbols."""
    rng = random.Random(self.seed)
    authors = [str(10**17 + rng.randrange(10**6)) for _ in range(200)]
    next_id = 1_850_000_000_000_000_000 + rng.randrange(10**12)
    while True:
      await asyncio.sleep(1.0 / self.rate if self.rate > 0 else 3600)
      if not self.bases:
        continue
      first, second = rng.choice(self.bases), rng.choice(self.bases)
      text = rng.choice(_TEMPLATES).replace("{s}", first).replace("{t}", second)
      next_id += rng.randrange(1, 10**9)
      ts = now_ms()
      symbols = [b for b in dict.fromkeys([first, second]) if f"${b}" in text or f"#{b}" in text]
      tweet = Tweet(
        ts=ts,
        ts_ingest=ts,
        sim=True,
        id=str(next_id),
        text=text,
        author=rng.choice(authors),
        symbols=symbols,
      )
      await self._emit_tweet(tweet)
