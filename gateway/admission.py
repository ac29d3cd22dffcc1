"""Who may open a socket: token, stream, token epoch, connection caps and `from`.

A token is accepted when it is authentic, for this stream, unexpired, and of the stream's
current token epoch or a later one (a later epoch comes from a record this gateway has
not read yet: epochs only move forward). Per token (its MAC) and per client address at
most BOND_WS_MAX_PER_TOKEN and BOND_WS_MAX_PER_IP sockets are open; over that the
socket is closed with 4429.
"""

from collections import defaultdict

from starlette.websockets import WebSocket

from bond import wire
from bond.config import Settings
from bond.gateway.resume import ReplayStart, parse_from
from bond.gateway.session import Refused, Session
from bond.registry import Registry, StreamRecord
from bond.tokens import REVOKED_MESSAGE, Claims, TokenError, verify

REGISTRY_WAIT_SEC = 2.0  # a stream created a moment ago may not have reached this gateway yet


class Admission:
  """The checks a socket passes before it is served, and the open-socket counts they need."""

  def __init__(self, settings: Settings, registry: Registry) -> None:
    self.settings = settings
    self.registry = registry
    self.deleted: set[str] = set()
    self.per_token: dict[str, int] = defaultdict(int)
    self.per_ip: dict[str, int] = defaultdict(int)

  def _verify(self, token: str, sid: str) -> Claims:
    conf = self.settings
    return verify(token, sid, secret=conf.bond_secret, previous=conf.bond_secret_previous)

  async def admit(
    self, ws: WebSocket, sid: str, session: Session
  ) -> tuple[ReplayStart | None, StreamRecord]:
    """Return where to start and the stream's record, or raise Refused with the close code."""
    token = ws.query_params.get("token") or ""
    if not token:
      raise Refused(wire.BAD_TOKEN, "token missing: connect with ?token=... from the REST API")
    try:
      claims = self._verify(token, sid)
    except TokenError as err:
      code = wire.WRONG_STREAM if err.reason == "wrong_stream" else wire.BAD_TOKEN
      raise Refused(code, f"{err.reason}: {err.message}") from None
    record = self.registry.get(sid)
    if record is None and sid not in self.deleted:
      await self.registry.wait_for(sid, True, REGISTRY_WAIT_SEC)
      record = self.registry.get(sid)
    if record is None:
      raise Refused(wire.NO_STREAM, f"stream {sid} is unknown or deleted")
    if claims.epoch < record.token_epoch:
      raise Refused(wire.BAD_TOKEN, f"revoked: {REVOKED_MESSAGE}")
    ip = ws.client.host if ws.client is not None else "?"
    conf = self.settings
    if self.per_token[claims.mac] >= conf.bond_ws_max_per_token:
      raise Refused(
        wire.TOO_MANY,
        f"too many sockets on this token: {conf.bond_ws_max_per_token} open "
        "(BOND_WS_MAX_PER_TOKEN)",
      )
    if self.per_ip[ip] >= conf.bond_ws_max_per_ip:
      raise Refused(
        wire.TOO_MANY,
        f"too many sockets from {ip}: {conf.bond_ws_max_per_ip} open (BOND_WS_MAX_PER_IP)",
      )
    raw = ws.query_params.get("from")
    try:
      start = parse_from(raw) if raw else None
    except ValueError as err:
      raise Refused(wire.BAD_FROM, str(err)) from None
    session.token_key, session.client_ip = claims.mac, ip
    session.hold_token(claims.epoch, claims.expires_at)
    return start, record

  def check_refresh(self, session: Session, token: str) -> Claims:
    """Return the claims of a refresh token for the session's stream, or raise TokenError."""
    claims = self._verify(token, session.stream_id)
    record = self.registry.get(session.stream_id)
    if record is not None and claims.epoch < record.token_epoch:
      raise TokenError("revoked", REVOKED_MESSAGE)
    return claims

  def opened(self, session: Session) -> None:
    """Count an admitted socket against its token and address."""
    self.per_token[session.token_key] += 1
    self.per_ip[session.client_ip] += 1

  def closed(self, session: Session) -> None:
    """Uncount a socket; drop counters that reach zero (the maps stay bounded)."""
    for counts, key in ((self.per_token, session.token_key), (self.per_ip, session.client_ip)):
      counts[key] -= 1
      if counts[key] <= 0:
        del counts[key]

  def on_registry(self, sid: str, record: StreamRecord | None) -> None:
    """Remember deleted streams (refused at once, without waiting for the registry)."""
    if record is None:
      self.deleted.add(sid)
    else:
      self.deleted.discard(sid)
