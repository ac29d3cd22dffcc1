"""The Bond MCP server: tools and a resource that let an AI agent create streams and read windows.

It is a client of a running Bond (REST API and WebSocket gateway) through the SDK, so the same
server runs over stdio (`bond mcp`, launched by an agent host) and over streamable HTTP
(`bond.mcp_server.http`, mounted in the API at /mcp). Over HTTP each call acts for the API key
the caller sent; over stdio for BOND_API_KEY.
"""

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Annotated, Any

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import (
  INTERNAL_ERROR,
  INVALID_PARAMS,
  EmptyResult,
  SubscribeRequestParams,
  SubscriptionsListenRequestParams,
  ToolAnnotations,
  UnsubscribeRequestParams,
)
from pydantic import Field, ValidationError

from bond import __version__
from bond.client import API_URL, BondClient
from bond.errors import BondError
from bond.mcp_server import fields
from bond.mcp_server.watch import LATEST_URI, StreamWatchers, latest_uri, stream_of
from bond.mcp_server.windows import next_windows, read_windows

log = logging.getLogger(__name__)

MAX_WINDOWS = 200  # per get_windows answer
MAX_WAIT_WINDOWS = 100  # per wait_for_windows call
MAX_WAIT_SEC = 120.0
MAX_CONCURRENT_WAITS = 8
MAX_SENTENCE_CHARS = 500
MAX_SPEC_KEYS = 20
# A REST call may check symbols against three exchanges' markets the first time.
API_TIMEOUT_SEC = 30.0

INSTRUCTIONS = """\
Bond turns a sentence such as "BTC price + tweets every 5s" into a live stream of windows
(tumbling, aligned to the epoch) computed from exchange trades, X posts and on-chain events.
Typical use: compile_stream to check a sentence (nothing is created), create_stream, then
wait_for_windows to receive the next windows as they close (pass last_seq back as after_seq
to continue with no gap), get_windows for recent ones, describe_fields for units and what
null means. Streams are shared by identical requests and limited per project (5 by default):
delete_stream what you no longer need. The resource bond://streams/{id}/latest holds a
stream's newest window and notifies subscribers on each new one."""

StreamId = Annotated[
  str,
  Field(
    pattern=r"^[0-9a-f]{16}$",
    description="A stream id: 16 lowercase hex characters, as create_stream or list_streams return.",
  ),
]
Sentence = Annotated[
  str | None,
  Field(
    max_length=MAX_SENTENCE_CHARS,
    description=(
      'What to stream, in English: symbols, sources and interval, e.g. "BTC price + tweets every 5s",'
      ' "ETH and SOL trades on binance every 10 seconds". Give this or spec, not both.'
    ),
  ),
]
Backfill = Annotated[
  str | None,
  Field(
    max_length=32,
    description=(
      'Also compute the new stream\'s past windows, e.g. "1h", "30m", "90s" (at most '
      "BOND_MAX_BACKFILL_SEC, 6 h by default, and what the raw topics still hold). Backfilled "
      'windows carry "backfilled": true and come before the first live one, with no gap. '
      'A sentence ending "for the last hour" asks for the same.'
    ),
  ),
]
Spec = Annotated[
  dict[str, Any] | None,
  Field(
    description=(
      'A stream spec instead of a sentence: {"sources": ["ccxt"], "symbols": ["BTC/USDT"],'
      ' "interval_sec": 5} (sources: ccxt, twitter, onchain, custom; interval_sec 1 to 3600;'
      ' optional exchanges such as ["binance"]). Give this or sentence, not both.'
    ),
  ),
]


def bearer(headers: Mapping[str, str] | None) -> str | None:
  """Return the API key of an `Authorization: Bearer` header, if any."""
  if not headers:
    return None
  scheme, _, key = (headers.get("authorization") or "").partition(" ")
  return key.strip() or None if scheme.lower() == "bearer" else None


def _body(sentence: str | None, spec: dict[str, Any] | None) -> str | dict[str, Any]:
  if (sentence is None) == (spec is None):
    raise ToolError("give exactly one of sentence (a string) or spec (an object)")
  if spec is not None:
    if len(spec) > MAX_SPEC_KEYS:
      raise ToolError(f"spec has {len(spec)} keys; a stream spec has at most {MAX_SPEC_KEYS}")
    return spec
  assert sentence is not None
  if not sentence.strip():
    raise ToolError('sentence is empty; say what to stream, e.g. "BTC price every 5s"')
  return sentence


@contextlib.contextmanager
def _as_tool_errors() -> Iterator[None]:
  """Turn Bond's errors into tool errors whose message a model can act on."""
  try:
    yield
  except BondError as err:
    raise ToolError(err.message) from err
  except ValueError as err:
    raise ToolError(str(err)) from err


def _summary(info: Mapping[str, Any]) -> dict[str, Any]:
  spec = info.get("spec") or {}
  return {
    "stream_id": info.get("stream_id"),
    "symbols": spec.get("symbols", []),
    "sources": [s.get("type") for s in spec.get("sources", []) if isinstance(s, Mapping)],
    "interval_sec": spec.get("interval_sec"),
    "exchanges": spec.get("exchanges"),
    **({"created_at": info["created_at"]} if "created_at" in info else {}),
  }


class BondMCP:
  """The MCP server of one Bond deployment: `server` (an MCPServer) plus its stream listeners."""

  def __init__(
    self,
    api_url: str = API_URL,
    api_key: str | None = None,
    ws_url: str | None = None,
    *,
    max_watched_streams: int = 16,
    max_concurrent_waits: int = MAX_CONCURRENT_WAITS,
    timeout_sec: float = API_TIMEOUT_SEC,
  ) -> None:
    self.api_url = api_url
    self.timeout_sec = timeout_sec
    self.api_key = api_key
    self.ws_url = ws_url
    self.max_concurrent_waits = max_concurrent_waits
    self.waits = 0
    self.bus = InMemorySubscriptionBus()
    self.watchers = StreamWatchers(self.bus, max_watched_streams)
    self.server: MCPServer[Any] = MCPServer(
      "bond",
      title="Bond real-time market data",
      instructions=INSTRUCTIONS,
      version=__version__,
      subscriptions=self.bus,
      middleware=[self._subscriptions_middleware],
    )
    self._register()
    # Handshake-era hosts (protocol 2025) subscribe with resources/subscribe, which MCPServer
    # does not serve; the low-level server advertises `resources.subscribe` once it is there.
    lowlevel = self.server._lowlevel_server
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, self._subscribe)
    lowlevel.add_request_handler(
      "resources/unsubscribe", UnsubscribeRequestParams, self._unsubscribe
    )

  # ------------------------------------------------------------------ plumbing

  def _key(self, headers: Mapping[str, str] | None) -> str | None:
    """Return the API key a call acts for: the caller's over HTTP, else the configured one."""
    return bearer(headers) or self.api_key

  def _client(self, key: str | None) -> BondClient:
    return BondClient(self.api_url, key, self.ws_url, timeout_sec=self.timeout_sec)

  @contextlib.asynccontextmanager
  async def _bond(self, ctx: Context[Any, Any]) -> AsyncIterator[BondClient]:
    async with self._client(self._key(ctx.headers)) as client:
      with _as_tool_errors():
        yield client

  async def aclose(self) -> None:
    """Stop every stream listener (on shutdown)."""
    await self.watchers.aclose()

  async def _subscriptions_middleware(
    self, ctx: ServerRequestContext[Any, Any], call_next: Any
  ) -> Any:
    """Follow the streams a `subscriptions/listen` request names for as long as it lasts."""
    if ctx.method != "subscriptions/listen" or ctx.request_id is None:
      return await call_next(ctx)
    try:
      params = SubscriptionsListenRequestParams.model_validate(ctx.params or {})
    except ValidationError:
      return await call_next(ctx)  # the handler answers the malformed request
    uris = params.notifications.resource_subscriptions or []
    if len(uris) > self.watchers.max_streams:
      raise MCPError(INVALID_PARAMS, f"at most {self.watchers.max_streams} resources per listen")
    key = self._key(getattr(ctx.request, "headers", None))
    held: list[str] = []
    try:
      for uri in dict.fromkeys(uris):
        sid = await self._own_stream(key, uri)
        try:
          self.watchers.acquire(key, sid, lambda: self._client(key))
        except BondError as err:
          raise MCPError(INTERNAL_ERROR, err.message) from err
        held.append(sid)
      return await call_next(ctx)
    finally:
      for sid in held:
        self.watchers.release(key, sid)

  async def _own_stream(self, key: str | None, uri: str) -> str:
    """Return the stream id of a latest-window URI of the caller's, or raise an MCP error."""
    sid = stream_of(uri)
    if sid is None:
      raise MCPError(INVALID_PARAMS, f"{uri[:100]!r} is not {LATEST_URI}")
    async with self._client(key) as client:
      try:
        await client.get_stream(sid)
      except BondError as err:
        raise MCPError(INVALID_PARAMS, f"{latest_uri(sid)}: {err.message}") from err
    return sid

  async def _subscribe(
    self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams
  ) -> EmptyResult:
    key = self._key(getattr(ctx.request, "headers", None))
    sid = await self._own_stream(key, params.uri)
    try:
      self.watchers.add_session(key, sid, ctx.session, lambda: self._client(key))
    except BondError as err:
      raise MCPError(INTERNAL_ERROR, err.message) from err
    return EmptyResult()

  async def _unsubscribe(
    self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams
  ) -> EmptyResult:
    sid = stream_of(params.uri)
    if sid is not None:
      self.watchers.remove_session(
        self._key(getattr(ctx.request, "headers", None)), sid, ctx.session
      )
    return EmptyResult()

  # ------------------------------------------------------------------ tools

  def _register(self) -> None:
    mcp = self.server
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @mcp.tool(
      description=(
        "Check what a sentence or spec would stream, creating nothing (a dry run). Returns the "
        "stream_id it would get, the normalized spec (symbols as exchange pairs like BTC/USDT, "
        "sources, interval_sec, exchanges) and exists=true when you already have that stream. "
        "A sentence Bond cannot read fully is refused with an error naming the words it did "
        "not understand: rephrase, or send a spec."
      ),
      annotations=read_only,
    )
    async def compile_stream(
      ctx: Context[Any, Any], sentence: Sentence = None, spec: Spec = None
    ) -> dict[str, Any]:
      body = _body(sentence, spec)
      async with self._bond(ctx) as client:
        answer = await client.compile(body)
      return {**_summary(answer), "exists": answer.get("exists", False), "spec": answer.get("spec")}

    @mcp.tool(
      description=(
        "Create a stream from a sentence or a spec, or return the existing one with the same "
        "spec (idempotent). Returns stream_id, ws_url (a signed WebSocket URL, valid "
        "expires_in_sec seconds), the spec, and the columns of the rows that get_windows and "
        "wait_for_windows return. The first window arrives one interval after creation at the "
        "earliest. A project has at most a few streams (5 by default): over the limit you get "
        "an error; delete_stream frees one."
      ),
    )
    async def create_stream(
      ctx: Context[Any, Any],
      sentence: Sentence = None,
      spec: Spec = None,
      backfill: Backfill = None,
    ) -> dict[str, Any]:
      body = _body(sentence, spec)
      async with self._bond(ctx) as client:
        info = await client.create_stream(body, backfill=backfill)
      return {
        **_summary(info),
        "ws_url": info.get("ws_url"),
        "expires_in_sec": info.get("expires_in_sec"),
        "spec": info.get("spec"),
        "backfill_sec": info.get("backfill_sec"),
        "fields": list(fields.COLUMNS),
      }

    @mcp.tool(
      description="List your streams, oldest first: stream_id, symbols, sources, interval_sec.",
      annotations=read_only,
    )
    async def list_streams(ctx: Context[Any, Any]) -> dict[str, Any]:
      async with self._bond(ctx) as client:
        streams = await client.list_streams()
      return {"streams": [_summary(s) for s in streams]}

    @mcp.tool(
      description=(
        "Delete one of your streams. Its listeners are closed and its windows stop; creating "
        "the same spec again later gives the same stream_id."
      ),
      annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True),
    )
    async def delete_stream(ctx: Context[Any, Any], stream_id: StreamId) -> dict[str, Any]:
      async with self._bond(ctx) as client:
        return await client.delete_stream(stream_id)

    @mcp.tool(
      description=(
        "Return a stream's latest windows as compact rows, oldest first: `columns` names the "
        "fields, each row is one window of one symbol (several symbols: one row each). Only "
        "windows with from_time < seq <= to_time; at most `limit` (1 to 200), the newest ones. "
        "Times: " + fields.TIME_HELP + ". Today the past reaches back 60 s (the gateway's "
        "replay ring): older windows are not returned. Prices are null in windows without "
        "trades; sim=true marks the offline simulated market. See describe_fields."
      ),
      annotations=read_only,
    )
    async def get_windows(
      ctx: Context[Any, Any],
      stream_id: StreamId,
      limit: Annotated[
        int, Field(ge=1, le=MAX_WINDOWS, description="How many windows (1-200).")
      ] = 20,
      from_time: Annotated[
        str, Field(max_length=40, description="Only windows ending after this. " + fields.TIME_HELP)
      ] = "now-60s",
      to_time: Annotated[
        str, Field(max_length=40, description="Only windows ending at or before this.")
      ] = "now",
    ) -> dict[str, Any]:
      with _as_tool_errors():
        from_ms, to_ms = fields.parse_time_ms(from_time), fields.parse_time_ms(to_time)
      if from_ms >= to_ms:
        raise ToolError(
          f"from_time ({fields.iso(from_ms)}) must be before to_time ({fields.iso(to_ms)})"
        )
      async with self._bond(ctx) as client:
        events = await read_windows(client, stream_id, from_ms, to_ms, limit)
      return fields.table(
        stream_id, events, from_time=fields.iso(from_ms), to_time=fields.iso(to_ms)
      )

    @mcp.tool(
      description=(
        "Block until `count` new windows of a stream have closed (1 to 100), or until "
        "timeout_sec (1 to 120) has passed, and return them as compact rows (like get_windows) "
        "with timed_out and last_seq. This is how you listen: call it again with "
        "after_seq=last_seq to get the windows that follow, with no gap and no duplicate (as "
        "long as you come back within 60 s). A stream of interval_sec I yields a window every "
        "I seconds, so set timeout_sec above count*I. At most 8 waits run at once."
      ),
      annotations=read_only,
    )
    async def wait_for_windows(
      ctx: Context[Any, Any],
      stream_id: StreamId,
      count: Annotated[
        int, Field(ge=1, le=MAX_WAIT_WINDOWS, description="Windows to wait for (1-100).")
      ] = 1,
      timeout_sec: Annotated[
        float, Field(ge=1, le=MAX_WAIT_SEC, description="Give up after this many seconds (1-120).")
      ] = 30.0,
      after_seq: Annotated[
        int | None,
        Field(
          ge=0, description="Return windows after this seq (a last_seq you got); default: from now."
        ),
      ] = None,
    ) -> dict[str, Any]:
      if self.waits >= self.max_concurrent_waits:
        raise ToolError(
          f"{self.max_concurrent_waits} waits are already running (the limit); wait for one to end"
        )
      self.waits += 1
      try:

        async def progress(done: int) -> None:
          await ctx.report_progress(done, count)

        async with self._bond(ctx) as client:
          events, timed_out = await next_windows(
            client, stream_id, count, timeout_sec, after_seq, progress
          )
      finally:
        self.waits -= 1
      return fields.table(stream_id, events, timed_out=timed_out)

    @mcp.tool(
      description=(
        "Explain every field of a window: type, unit, what null means, and how windows are "
        "timed. Call it once before reading rows."
      ),
      annotations=read_only,
    )
    async def describe_fields() -> dict[str, Any]:
      return {
        "fields": list(fields.FIELDS),
        "compact_columns": list(fields.COLUMNS),
        "notes": list(fields.NOTES),
      }

    @mcp.resource(
      LATEST_URI,
      name="latest window",
      description=(
        "The newest window of one of your streams (an AggregatedEvent as JSON, see "
        'describe_fields), or {"window": null} before the first. Subscribe to be notified '
        "on each new window."
      ),
      mime_type="application/json",
    )
    async def latest(stream_id: str, ctx: Context[Any, Any]) -> dict[str, Any]:
      if stream_of(LATEST_URI.format(stream_id=stream_id)) is None:
        raise ResourceError(f"{stream_id[:40]!r} is not a stream id (16 lowercase hex characters)")
      key = self._key(ctx.headers)
      try:
        followed, window = self.watchers.latest(key, stream_id)
        if not followed:
          async with self._client(key) as client:
            now = fields.parse_time_ms("now")
            found = await read_windows(client, stream_id, now - 60_000, now, 1)
          window = found[-1] if found else None
      except BondError as err:
        raise ResourceError(err.message) from err
      return {"stream_id": stream_id, "window": window}


def build_server(
  api_url: str | None = None,
  api_key: str | None = None,
  ws_url: str | None = None,
  **limits: Any,
) -> BondMCP:
  """Return the Bond MCP server for a deployment (default: BOND_API_URL, BOND_API_KEY)."""
  return BondMCP(
    api_url or os.environ.get("BOND_API_URL", API_URL),
    api_key if api_key is not None else (os.environ.get("BOND_API_KEY") or None),
    ws_url,
    **limits,
  )
