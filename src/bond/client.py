"""The Bond SDK: create and manage streams over REST, and listen to them over WebSocket.

    from bond import listen

    async for event in listen("BTC price + tweets every 5s"):
      print(event["seq"], event["price_avg"])

`listen` reconnects by itself (exponential backoff with jitter) and resumes after the last
`seq` it yielded, so a gateway restart costs neither a gap nor a duplicate. Before the
stream token expires it fetches a fresh one over REST and hands it to the open socket
(`{"type": "refresh", "token": ...}`), so a long listen is never cut at the expiry; if
that fails, the gateway's 4401 at expiry makes it reconnect with a fresh token. It needs
only httpx and websockets.
"""

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import Any, cast

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from bond import tables, wire

log = logging.getLogger(__name__)

API_URL = "http://localhost:8000"
RATE_LIMIT_RETRIES = 3
HISTORY_PAGE = 1000  # windows asked per request (the API's default BOND_HISTORY_MAX_LIMIT is 10000)


from bond.client_support import (  # noqa: F401,E402 - one SDK in two files; re-exported
  BACKOFF_BASE_SEC,
  BACKOFF_MAX_SEC,
  FINAL_CLOSE_CODES,
  RATE_LIMIT_MAX_WAIT_SEC,
  STREAM_ID_RE,
  TOKEN_MARGIN_SEC,
  BondAPIError,
  BondConnectionError,
  BondEvent,
  StreamClosedError,
  SymbolFields,
  _answer,
  _create_body,
  _headers,
  _history_args,
  _history_page,
  _history_query,
  _path,
  _rate_limited_for,
  _Token,
  backoff_sec,
  socket_url,
  token_expiry,
)


class BondClient:
  """The REST API and WebSocket gateway of one Bond deployment, for one project (API key)."""

  def __init__(
    self,
    api_url: str = API_URL,
    api_key: str | None = None,
    ws_url: str | None = None,
    *,
    timeout_sec: float = 10.0,
  ) -> None:
    self.api_url = api_url.rstrip("/")
    self.api_key = api_key
    self.ws_url = ws_url
    self.timeout_sec = timeout_sec
    self.reconnects = 0
    self.token_refreshes = 0
    self._http: httpx.AsyncClient | None = None

  async def _request(
    self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None
  ) -> httpx.Response:
    if self._http is None:
      self._http = httpx.AsyncClient(
        base_url=self.api_url, headers=_headers(self.api_key), timeout=self.timeout_sec
      )
    for attempt in range(RATE_LIMIT_RETRIES + 1):
      try:
        resp = await self._http.request(method, path, json=body, params=params)
      except httpx.TransportError as err:
        raise BondConnectionError(self.api_url, err) from err
      wait = _rate_limited_for(resp)
      if wait is None or attempt == RATE_LIMIT_RETRIES:
        break
      await asyncio.sleep(wait)  # the project is over its request rate: as the API asks
    return resp

  async def _call(self, method: str, path: str, body: Any = None) -> Any:
    return _answer(await self._request(method, path, body))

  async def aclose(self) -> None:
    """Close the HTTP connection pool; safe to call twice."""
    http, self._http = self._http, None
    if http is not None:
      await http.aclose()

  async def __aenter__(self) -> "BondClient":
    return self

  async def __aexit__(self, *exc: object) -> None:
    await self.aclose()

  def sync(self) -> "SyncBondClient":
    """Return a blocking client with the same settings (a context manager)."""
    return SyncBondClient(self.api_url, self.api_key, self.ws_url, timeout_sec=self.timeout_sec)

  async def create_stream(
    self, sentence_or_spec: str | Mapping[str, Any], backfill: str | int | None = None
  ) -> dict[str, Any]:
    """Create a stream from a sentence or a spec; return its id, token, ws_url and spec.

    `backfill` ("1h", "30m" or seconds) also computes the new stream's past windows.
    """
    body = _create_body(sentence_or_spec, backfill)
    return cast(dict[str, Any], await self._call("POST", "/v1/streams", body))

  async def list_streams(self) -> list[dict[str, Any]]:
    """Return this project's streams, oldest first."""
    return cast(list[dict[str, Any]], (await self._call("GET", "/v1/streams"))["streams"])

  async def get_stream(self, stream_id: str) -> dict[str, Any]:
    """Return one stream."""
    return cast(dict[str, Any], await self._call("GET", _path(stream_id)))

  async def delete_stream(self, stream_id: str) -> dict[str, Any]:
    """Delete a stream (its listeners are closed with 4404)."""
    return cast(dict[str, Any], await self._call("DELETE", _path(stream_id)))

  async def refresh_token(self, stream_id: str, revoke_previous: bool = False) -> dict[str, Any]:
    """Return a fresh token, ws_url and expiry; `revoke_previous` invalidates earlier tokens."""
    body = {"revoke_previous": True} if revoke_previous else None
    return cast(dict[str, Any], await self._call("POST", _path(stream_id, "/token"), body))

  async def metrics(self, stream_id: str) -> dict[str, Any]:
    """Return a stream's counters and latency percentiles."""
    return cast(dict[str, Any], await self._call("GET", _path(stream_id, "/metrics")))

  async def compile(self, sentence: str | Mapping[str, Any]) -> dict[str, Any]:
    """Return the spec and stream id a sentence would create, creating nothing."""
    return cast(dict[str, Any], await self._call("POST", "/v1/compile", _create_body(sentence)))

  async def history_pages(
    self,
    stream_id: str,
    from_: str,
    to: str | None = None,
    limit: int | None = None,
    *,
    page_size: int = HISTORY_PAGE,
  ) -> AsyncIterator[list[dict[str, Any]]]:
    """Yield a stream's past windows page by page, oldest first (GET .../windows)."""
    _history_args(from_, limit, page_size)
    got, cursor = 0, None
    while (query := _history_query(from_, to, limit, got, cursor, page_size)) is not None:
      rows, cursor = _history_page(
        await self._request("GET", _path(stream_id, "/windows"), None, query)
      )
      if rows:
        got += len(rows)
        yield rows
      if cursor is None:
        return

  async def history(
    self,
    stream_id: str,
    from_: str,
    to: str | None = None,
    limit: int | None = None,
    *,
    as_frame: bool = False,
  ) -> Any:
    """Return a stream's windows from `from_` (now-6h, ISO-8601, a seq) to `to` (inclusive;
    default: now), at most `limit`, oldest first: a list of dicts, or a pandas DataFrame
    of flat rows with `as_frame=True` (needs `bond-streams[pandas]`)."""
    rows: list[dict[str, Any]] = []
    async for page in self.history_pages(stream_id, from_, to, limit):
      rows += page
    return tables.to_frame(rows) if as_frame else rows

  async def _open(self, target: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(target, str) and STREAM_ID_RE.fullmatch(target.strip()):
      return await self.refresh_token(target.strip())
    return await self.create_stream(target)

  async def listen(
    self, target: str | Mapping[str, Any], from_: str | None = None
  ) -> AsyncIterator[BondEvent]:
    """Yield a stream's events (a sentence, a spec or a stream id), reconnecting as needed."""
    info = await self._open(target)
    sid = str(info["stream_id"])
    token = _Token(info)
    last: int | None = None
    started_ms: int | None = None
    failures = 0
    must_refresh = False
    while True:
      if must_refresh or token.due_in() < 0:
        try:
          token = _Token(await self._fresh(sid))
          must_refresh = False
        except BondAPIError as err:
          # A deleted stream or a refused key ends the listen; an API hiccup does not
          # while the token in hand still works.
          if not err.retriable:
            raise
          if must_refresh or time.time() >= token.expires:
            failures += 1
            await asyncio.sleep(backoff_sec(failures))
            continue
      # Resume after the last event; before any, from the first connect (or the caller's from).
      start = (
        str(last)
        if last is not None
        else from_ or (wire.iso_ms(started_ms) if started_ms else None)
      )
      url = socket_url(str(token.info["ws_url"]), sid, token.value, start, self.ws_url)
      code, reason = 1006, ""
      try:
        async with connect(
          url, open_timeout=10, close_timeout=2, compression=None, max_size=1 << 24
        ) as ws:
          started_ms = started_ms or int(time.time() * 1000)
          holder = [token]
          keeper = asyncio.create_task(self._keep_fresh(ws, sid, holder))
          try:
            async for raw in ws:
              event = json.loads(raw)
              seq = event.get("seq") if isinstance(event, dict) else None
              if isinstance(seq, int):
                if last is not None and seq <= last:
                  continue
                last = seq
              failures = 0
              yield cast(BondEvent, event)
          finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            token = holder[0]
          code, reason = ws.close_code or 1000, ws.close_reason or ""
      except ConnectionClosed as closed:
        if closed.rcvd is not None:
          code, reason = closed.rcvd.code, closed.rcvd.reason
      except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as err:
        reason = str(err) or err.__class__.__name__
      if code in FINAL_CLOSE_CODES:
        raise StreamClosedError(sid, code, reason)
      failures += 1
      if code == wire.BAD_TOKEN:
        if failures > 3:
          raise StreamClosedError(sid, code, reason)
        must_refresh = True
      delay = 0.0 if code == wire.BAD_TOKEN and failures == 1 else backoff_sec(failures)
      log.info("bond: stream %s closed (%d %s); reconnecting in %.2fs", sid, code, reason, delay)
      self.reconnects += 1
      await asyncio.sleep(delay)

  async def _keep_fresh(self, ws: Any, sid: str, holder: list[_Token]) -> None:
    """Before the token expires, fetch a fresh one and hand it to the open socket."""
    while True:
      await asyncio.sleep(max(0.0, holder[0].due_in()))
      try:
        fresh = _Token(await self._fresh(sid))
      except BondAPIError as err:
        log.info("bond: token refresh for %s failed (%s); retrying", sid, err)
        await asyncio.sleep(min(5.0, max(0.5, holder[0].expires - time.time()) / 4))
        continue
      # The refresh message is well under the gateway's 4 KiB limit on client frames.
      await ws.send(json.dumps({"type": wire.REFRESH, "token": fresh.value}))
      holder[0] = fresh

  async def _fresh(self, sid: str) -> dict[str, Any]:
    info = await self.refresh_token(sid)
    self.token_refreshes += 1
    return info


class SyncBondClient:
  """The blocking face of BondClient for scripts and the CLI: the same REST methods."""

  def __init__(
    self,
    api_url: str = API_URL,
    api_key: str | None = None,
    ws_url: str | None = None,
    *,
    timeout_sec: float = 10.0,
  ) -> None:
    self.api_url = api_url.rstrip("/")
    self.ws_url = ws_url
    self._http = httpx.Client(base_url=self.api_url, headers=_headers(api_key), timeout=timeout_sec)

  def _request(
    self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None
  ) -> httpx.Response:
    for attempt in range(RATE_LIMIT_RETRIES + 1):
      try:
        resp = self._http.request(method, path, json=body, params=params)
      except httpx.TransportError as err:
        raise BondConnectionError(self.api_url, err) from err
      wait = _rate_limited_for(resp)
      if wait is None or attempt == RATE_LIMIT_RETRIES:
        break
      time.sleep(wait)  # the project is over its request rate: as the API asks
    return resp

  def _call(self, method: str, path: str, body: Any = None) -> Any:
    return _answer(self._request(method, path, body))

  def history_pages(
    self,
    stream_id: str,
    from_: str,
    to: str | None = None,
    limit: int | None = None,
    *,
    page_size: int = HISTORY_PAGE,
  ) -> Iterator[list[dict[str, Any]]]:
    """Yield a stream's past windows page by page, oldest first (GET .../windows)."""
    _history_args(from_, limit, page_size)
    got, cursor = 0, None
    while (query := _history_query(from_, to, limit, got, cursor, page_size)) is not None:
      rows, cursor = _history_page(self._request("GET", _path(stream_id, "/windows"), None, query))
      if rows:
        got += len(rows)
        yield rows
      if cursor is None:
        return

  def history(
    self,
    stream_id: str,
    from_: str,
    to: str | None = None,
    limit: int | None = None,
    *,
    as_frame: bool = False,
  ) -> Any:
    """Return a stream's windows from `from_` to `to`, at most `limit` (see BondClient.history)."""
    rows: list[dict[str, Any]] = []
    for page in self.history_pages(stream_id, from_, to, limit):
      rows += page
    return tables.to_frame(rows) if as_frame else rows

  def close(self) -> None:
    """Close the HTTP connection pool."""
    self._http.close()

  def __enter__(self) -> "SyncBondClient":
    return self

  def __exit__(
    self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
  ) -> None:
    self.close()

  def create_stream(
    self, sentence_or_spec: str | Mapping[str, Any], backfill: str | int | None = None
  ) -> dict[str, Any]:
    """Create a stream from a sentence or a spec (and its past windows with `backfill`)."""
    body = _create_body(sentence_or_spec, backfill)
    return cast(dict[str, Any], self._call("POST", "/v1/streams", body))

  def list_streams(self) -> list[dict[str, Any]]:
    """Return this project's streams, oldest first."""
    return cast(list[dict[str, Any]], self._call("GET", "/v1/streams")["streams"])

  def get_stream(self, stream_id: str) -> dict[str, Any]:
    """Return one stream."""
    return cast(dict[str, Any], self._call("GET", _path(stream_id)))

  def delete_stream(self, stream_id: str) -> dict[str, Any]:
    """Delete a stream (its listeners are closed with 4404)."""
    return cast(dict[str, Any], self._call("DELETE", _path(stream_id)))

  def refresh_token(self, stream_id: str, revoke_previous: bool = False) -> dict[str, Any]:
    """Return a fresh token, ws_url and expiry; `revoke_previous` invalidates earlier tokens."""
    body = {"revoke_previous": True} if revoke_previous else None
    return cast(dict[str, Any], self._call("POST", _path(stream_id, "/token"), body))

  def metrics(self, stream_id: str) -> dict[str, Any]:
    """Return a stream's counters and latency percentiles."""
    return cast(dict[str, Any], self._call("GET", _path(stream_id, "/metrics")))

  def compile(self, sentence: str | Mapping[str, Any]) -> dict[str, Any]:
    """Return the spec and stream id a sentence would create, creating nothing."""
    return cast(dict[str, Any], self._call("POST", "/v1/compile", _create_body(sentence)))


async def listen(
  target: str | Mapping[str, Any],
  from_: str | None = None,
  api_url: str | None = None,
  api_key: str | None = None,
  ws_url: str | None = None,
) -> AsyncIterator[BondEvent]:
  """Yield a stream's events: `async for event in listen("BTC price every 5s")`."""
  url = api_url or os.environ.get("BOND_API_URL", API_URL)
  key = api_key or os.environ.get("BOND_API_KEY") or None
  async with BondClient(url, key, ws_url) as client:
    async for event in client.listen(target, from_=from_):
      yield event
