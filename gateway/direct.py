"""The fast path on uvicorn's sans-I/O WebSocket protocol, and the client frame cap.

Once a socket is caught up (replay and splice done, nothing queued), the fan-out writes
live frames straight to its transport rather than waking the socket's send task; a
socket that cannot take a frame at once goes back to its bounded queue.

The same access to the server's protocol object caps client messages at the gateway's
need (BOND_WS_MAX_FRAME_BYTES, 4 KiB): the protocol refuses a longer frame from its
header, with 1009, before reading its payload (not after uvicorn's 16 MiB default).
"""

import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from websockets.exceptions import WebSocketException
from websockets.frames import Frame, Opcode
from websockets.protocol import State

try:
  from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # another server or uvicorn version: every frame goes through ASGI
  WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

SERVER_SEND = "bond.server_send"  # scope key: the server's own ASGI send callable


class _Wire:
  """The unmasked text frame of the record being fanned out, built once for all sockets."""

  def __init__(self) -> None:
    self._frame: str | None = None
    self._wire = b""

  def __call__(self, frame: str) -> bytes:
    # The fan-out hands the same str object to every sink of a record.
    if frame is not self._frame:
      self._frame = frame
      self._wire = Frame(Opcode.TEXT, frame.encode()).serialize(mask=False)
    return self._wire


_wire = _Wire()


class DirectWriter:
  """Writes text frames straight to a uvicorn sans-I/O WebSocket, without the ASGI layers."""

  __slots__ = ("_conn", "_proto", "_shared", "_transport")

  def __init__(self, proto: Any) -> None:
    self._proto = proto
    self._conn = proto.conn
    self._transport = proto.transport
    # A server's frames are not masked: with no extension (per-message deflate) the bytes
    # are the same for every socket of the stream.
    self._shared = not proto.conn.extensions

  def write(self, frame: str) -> bool:
    """Write one frame now; False when the socket cannot take it without waiting."""
    proto = self._proto
    if proto.disconnected or not proto.writable.is_set() or self._conn.state is not State.OPEN:
      return False
    # This runs inside the fan-out's loop: one socket's failure must not reach the others.
    # The send task meets the same error through ASGI and ends the session.
    try:
      if self._shared:
        self._transport.write(_wire(frame))
      else:
        self._conn.send_text(frame.encode())
        self._transport.write(b"".join(self._conn.data_to_send()))
    except (RuntimeError, OSError, WebSocketException):
      return False
    return True


def direct_writer(ws: WebSocket) -> DirectWriter | None:
  """Return a direct writer for the socket when the server is uvicorn's sans-I/O protocol."""
  proto = getattr(ws.scope.get(SERVER_SEND), "__self__", None)
  if WebSocketsSansIOProtocol is None or not isinstance(proto, WebSocketsSansIOProtocol):
    return None
  if proto.transport is None or not proto.handshake_complete:
    return None
  return DirectWriter(proto)


def cap_client_frames(send: Send, max_bytes: int) -> bool:
  """Make the server refuse client messages over max_bytes; False if it reads more first.

  Under the sans-I/O protocol the limit applies from the next frame header on; the first
  frame after the handshake is parsed with the server's own `--ws-max-size`, so the
  gateway's launch commands pass that flag too.
  """
  proto = getattr(send, "__self__", None)
  if WebSocketsSansIOProtocol is None or not isinstance(proto, WebSocketsSansIOProtocol):
    return False
  conn = proto.conn
  conn.max_message_size = min(conn.max_message_size or max_bytes, max_bytes)
  return proto.config.ws_max_size <= max_bytes


class ServerSend:
  """Keeps the server's own `send` in a WebSocket's scope and caps the client's frames."""

  def __init__(self, app: ASGIApp, max_frame_bytes: int) -> None:
    self.app = app
    self.max_frame_bytes = max_frame_bytes
    self._warned = False

  async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "websocket":
      await self.app(scope, receive, send)
      return
    if not cap_client_frames(send, self.max_frame_bytes) and not self._warned:
      self._warned = True
      log.warning(
        "gateway: uvicorn may read a client frame of up to its --ws-max-size before the "
        "gateway's %d-byte cap applies; run it with --ws-max-size %d",
        self.max_frame_bytes,
        self.max_frame_bytes,
      )
    scope[SERVER_SEND] = send
    try:
      await self.app(scope, receive, send)
    finally:
      # The server's protocol holds the scope: leave no reference cycle for the collector.
      scope.pop(SERVER_SEND, None)
