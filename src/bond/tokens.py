"""Signed, expiring, revocable stream tokens: `<stream_id>.<exp_unix>.<epoch>.<hex HMAC-SHA256>`.

The MAC (HMAC-SHA256, lowercase hex) covers `bond-token-v2.<stream_id>.<exp_unix>.<epoch>`
under BOND_SECRET; a token signed with BOND_SECRET_PREVIOUS still verifies, so the secret
can be rotated without cutting listeners off.

`epoch` is the stream's token epoch, kept in its registry record: it changes when a
refresh asks to revoke earlier tokens and when a stream is re-created, so tokens of an
older epoch are refused (`revoked`).

Each token has one spelling (canonical form), checked before the MAC:
`^[A-Za-z0-9_-]{1,64}\\.[1-9][0-9]{0,11}\\.(0|[1-9][0-9]{0,15})\\.[0-9a-f]{64}$` - no
leading zeros, signs, spaces or uppercase hex. Tokens go into a URL unescaped.
"""

import hashlib
import hmac
import re
import time
from typing import Literal, NamedTuple

from bond.config import get_settings
from bond.errors import BondError, ConfigError

MAX_TOKEN_CHARS = 512
MAX_EPOCH = 10**16 - 1
TokenReason = Literal["malformed", "expired", "wrong_stream", "bad_signature", "revoked"]

_STREAM_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN_RE = re.compile(
  r"([A-Za-z0-9_-]{1,64})\.([1-9][0-9]{0,11})\.(0|[1-9][0-9]{0,15})\.([0-9a-f]{64})"
)
_MAC_PREFIX = "bond-token-v2"


class TokenError(BondError):
  """A token that does not grant access; `reason` says why."""

  code = "invalid_token"
  http_status = 401

  def __init__(self, reason: TokenReason, message: str) -> None:
    super().__init__(message, reason=reason)
    self.reason: TokenReason = reason


class Claims(NamedTuple):
  """What an authentic token says: its stream, expiry (unix seconds) and token epoch."""

  stream_id: str
  expires_at: int
  epoch: int
  mac: str


def sign(
  stream_id: str,
  ttl_sec: int | None = None,
  *,
  epoch: int = 0,
  secret: str | None = None,
  now: float | None = None,
) -> str:
  """Return a token of a stream's epoch that expires ttl_sec (default BOND_TOKEN_TTL) from now."""
  if not isinstance(stream_id, str) or not _STREAM_ID_RE.fullmatch(stream_id):
    raise ValueError(f"stream id {stream_id!r} must be 1 to 64 characters of [A-Za-z0-9_-]")
  ttl = get_settings().bond_token_ttl if ttl_sec is None else ttl_sec
  if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
    raise ValueError(f"ttl_sec must be a whole number of seconds >= 1, got {ttl_sec!r}")
  if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= MAX_EPOCH:
    raise ValueError(f"epoch must be a whole number from 0 to {MAX_EPOCH}, got {epoch!r}")
  exp = int(time.time() if now is None else now) + ttl
  return f"{stream_id}.{exp}.{epoch}.{_mac(_secret(secret), stream_id, exp, epoch)}"


def verify(
  token: str,
  stream_id: str,
  *,
  epoch: int | None = None,
  secret: str | None = None,
  previous: str | None = None,
  now: float | None = None,
) -> Claims:
  """Return the claims of an authentic, unexpired token for this stream (and epoch), or raise TokenError."""
  claims = _parse(token)
  expected = [_secret(secret)]
  old = previous if previous is not None else get_settings().bond_secret_previous
  if old:
    expected.append(old)
  # Check every secret, so timing does not tell which one matched.
  macs = [_mac(key, claims.stream_id, claims.expires_at, claims.epoch) for key in expected]
  if not any([hmac.compare_digest(claims.mac, mac) for mac in macs]):
    raise TokenError("bad_signature", "token signature does not match")
  if not hmac.compare_digest(claims.stream_id.encode(), str(stream_id).encode()):
    raise TokenError("wrong_stream", "token was issued for another stream")
  if (time.time() if now is None else now) >= claims.expires_at:
    raise TokenError(
      "expired", f"token expired at {claims.expires_at} (unix time); ask for a new one"
    )
  if epoch is not None and claims.epoch != epoch:
    raise TokenError("revoked", REVOKED_MESSAGE)
  return claims


REVOKED_MESSAGE = (
  "token was revoked (a newer token was issued with revoke_previous, or the stream was "
  "deleted or re-created); ask for a new one"
)


def expires_at(token: str) -> int:
  """Return a token's expiry in unix seconds, without checking its signature."""
  return _parse(token).expires_at


def _parse(token: str) -> Claims:
  if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
    raise TokenError("malformed", f"token is not a string of at most {MAX_TOKEN_CHARS} characters")
  m = _TOKEN_RE.fullmatch(token)
  if m is None:
    raise TokenError(
      "malformed", "token is not <stream_id>.<exp_unix>.<epoch>.<hex signature> (canonical form)"
    )
  return Claims(m[1], int(m[2]), int(m[3]), m[4])


def _secret(secret: str | None) -> str:
  key = get_settings().bond_secret if secret is None else secret
  if not key:
    raise ConfigError("BOND_SECRET is empty; set it to a long random value")
  return key


def _mac(secret: str, stream_id: str, exp: int, epoch: int) -> str:
  msg = f"{_MAC_PREFIX}.{stream_id}.{exp}.{epoch}".encode()
  return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()
