"""Signed, expiring stream tokens: `<stream_id>.<exp_unix>.<hex HMAC-SHA256>`.

The MAC covers `<stream_id>.<exp_unix>` under BOND_SECRET; a token signed with
BOND_SECRET_PREVIOUS still verifies, so the secret can be rotated without cutting
listeners off. Tokens use only `[0-9a-zA-Z_.-]`, so they go into a URL unescaped.
"""

import hashlib
import hmac
import re
import time
from typing import Literal

from bond.config import get_settings
from bond.errors import BondError, ConfigError

MAX_TOKEN_CHARS = 512
TokenReason = Literal["malformed", "expired", "wrong_stream", "bad_signature"]

_STREAM_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN_RE = re.compile(r"([A-Za-z0-9_-]{1,64})\.([0-9]{1,12})\.([0-9a-f]{64})")


class TokenError(BondError):
  """A token that does not grant access; `reason` says why."""

  code = "invalid_token"

  def __init__(self, reason: TokenReason, message: str) -> None:
    super().__init__(message, reason=reason)
    self.reason: TokenReason = reason


def sign(
  stream_id: str,
  ttl_sec: int | None = None,
  *,
  secret: str | None = None,
  now: float | None = None,
) -> str:
  """Return a token for a stream that expires ttl_sec (default BOND_TOKEN_TTL) from now."""
  if not isinstance(stream_id, str) or not _STREAM_ID_RE.fullmatch(stream_id):
    raise ValueError(f"stream id {stream_id!r} must be 1 to 64 characters of [A-Za-z0-9_-]")
  ttl = get_settings().bond_token_ttl if ttl_sec is None else ttl_sec
  if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
    raise ValueError(f"ttl_sec must be a whole number of seconds >= 1, got {ttl_sec!r}")
  exp = int(time.time() if now is None else now) + ttl
  return f"{stream_id}.{exp}.{_mac(_secret(secret), stream_id, exp)}"


def verify(
  token: str,
  stream_id: str,
  *,
  secret: str | None = None,
  previous: str | None = None,
  now: float | None = None,
) -> None:
  """Check that a token is authentic, for this stream and not expired, or raise TokenError."""
  token_stream, exp, mac = _parse(token)
  expected = [_secret(secret)]
  old = previous if previous is not None else get_settings().bond_secret_previous
  if old:
    expected.append(old)
  # Check every secret, so timing does not tell which one matched.
  matches = [hmac.compare_digest(mac, _mac(key, token_stream, exp)) for key in expected]
  if not any(matches):
    raise TokenError("bad_signature", "token signature does not match")
  if not hmac.compare_digest(token_stream.encode(), str(stream_id).encode()):
    raise TokenError("wrong_stream", "token was issued for another stream")
  if (time.time() if now is None else now) >= exp:
    raise TokenError("expired", f"token expired at {exp} (unix time); ask for a new one")


def expires_at(token: str) -> int:
  """Return a token's expiry in unix seconds, without checking its signature."""
  return _parse(token)[1]


def _parse(token: str) -> tuple[str, int, str]:
  if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
    raise TokenError("malformed", "token is not a string of at most 512 characters")
  m = _TOKEN_RE.fullmatch(token)
  if m is None:
    raise TokenError("malformed", "token is not <stream_id>.<exp_unix>.<hex signature>")
  return m[1], int(m[2]), m[3]


def _secret(secret: str | None) -> str:
  key = get_settings().bond_secret if secret is None else secret
  if not key:
    raise ConfigError("BOND_SECRET is empty; set it to a long random value")
  return key


def _mac(secret: str, stream_id: str, exp: int) -> str:
  return hmac.new(secret.encode(), f"{stream_id}.{exp}".encode(), hashlib.sha256).hexdigest()
