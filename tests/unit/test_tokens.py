"""Stream tokens: signing, verification, expiry, rotation and malformed input."""

import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from bond import tokens
from bond.config import get_settings
from bond.errors import BondError
from bond.tokens import TokenError, expires_at, sign, verify

SID = "8f2a1c9d4b3e7a10"
OTHER = "0123456789abcdef"
KEY = "unit-test-secret"
NOW = 1_761_053_400


def _reason(token: object, stream: str = SID, **kw: object) -> str:
  kw.setdefault("secret", KEY)
  kw.setdefault("previous", "")
  kw.setdefault("now", NOW)
  with pytest.raises(TokenError) as info:
    verify(token, stream, **kw)  # type: ignore[arg-type]
  return info.value.reason


@pytest.fixture
def env_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
  """Give tests a fresh Settings built from their own environment, and drop it after."""
  get_settings.cache_clear()
  yield monkeypatch
  get_settings.cache_clear()


def test_roundtrip() -> None:
  token = sign(SID, 60, secret=KEY, now=NOW)
  verify(token, SID, secret=KEY, previous="", now=NOW)
  verify(token, SID, secret=KEY, previous="", now=NOW + 59)
  assert expires_at(token) == NOW + 60


def test_format_matches_design() -> None:
  token = sign(SID, 3600, epoch=1_761_000_000_123, secret=KEY, now=NOW)
  stream, exp, epoch, mac = token.split(".")
  assert (stream, exp, epoch) == (SID, str(NOW + 3600), "1761000000123")
  assert re.fullmatch(r"[0-9a-f]{64}", mac)
  canonical = r"[A-Za-z0-9_-]{1,64}\.[1-9][0-9]{0,11}\.(0|[1-9][0-9]{0,15})\.[0-9a-f]{64}"
  assert re.fullmatch(canonical, token)
  assert verify(token, SID, secret=KEY, previous="", now=NOW).epoch == 1_761_000_000_123


def test_token_needs_no_url_escaping() -> None:
  token = sign(SID, secret=KEY, now=NOW)
  assert quote(token, safe="") == token


def test_signing_is_deterministic_and_keyed() -> None:
  assert sign(SID, 60, secret=KEY, now=NOW) == sign(SID, 60, secret=KEY, now=NOW)
  assert sign(SID, 60, secret=KEY, now=NOW) != sign(SID, 60, secret="other", now=NOW)


def test_default_ttl_and_secret_come_from_settings(env_settings: pytest.MonkeyPatch) -> None:
  env_settings.setenv("BOND_SECRET", "from-the-env")
  env_settings.setenv("BOND_TOKEN_TTL", "120")
  env_settings.delenv("BOND_SECRET_PREVIOUS", raising=False)
  token = sign(SID, now=NOW)
  assert expires_at(token) == NOW + 120
  verify(token, SID, now=NOW)
  verify(token, SID, secret="from-the-env", now=NOW)
  assert _reason(token, secret="not-it") == "bad_signature"


def test_default_ttl_is_an_hour(env_settings: pytest.MonkeyPatch) -> None:
  env_settings.delenv("BOND_TOKEN_TTL", raising=False)
  assert expires_at(sign(SID, secret=KEY, now=NOW)) == NOW + 3600


def test_expired() -> None:
  token = sign(SID, 10, secret=KEY, now=NOW)
  assert _reason(token, now=NOW + 10) == "expired"
  assert _reason(token, now=NOW + 10_000) == "expired"


def test_wrong_stream() -> None:
  token = sign(SID, 60, secret=KEY, now=NOW)
  assert _reason(token, OTHER) == "wrong_stream"


@pytest.mark.parametrize("part", [0, 1, 2, 3])
def test_tampering_with_any_part_breaks_the_signature(part: int) -> None:
  pieces = sign(SID, 60, epoch=5, secret=KEY, now=NOW).split(".")
  pieces[part] = {0: OTHER, 1: str(NOW + 10**6), 2: "6", 3: "0" * 64}[part]
  forged = ".".join(pieces)
  stream = OTHER if part == 0 else SID
  assert _reason(forged, stream) == "bad_signature"


@pytest.mark.parametrize("position", [0, 1, 31, 32, 62, 63])
def test_every_signature_character_counts(position: int) -> None:
  # A full, constant-time comparison: a flip anywhere, even the last char, is caught.
  token = sign(SID, 60, secret=KEY, now=NOW)
  head, mac = token.rsplit(".", 1)
  flipped = "0" if mac[position] != "0" else "1"
  forged = f"{head}.{mac[:position]}{flipped}{mac[position + 1 :]}"
  assert _reason(forged) == "bad_signature"


def test_rotation_previous_secret_still_verifies() -> None:
  old_token = sign(SID, 60, secret="old", now=NOW)
  new_token = sign(SID, 60, secret="new", now=NOW)
  verify(old_token, SID, secret="new", previous="old", now=NOW)
  verify(new_token, SID, secret="new", previous="old", now=NOW)
  assert _reason(old_token, secret="new", previous="") == "bad_signature"
  assert _reason(old_token, secret="new", previous="older") == "bad_signature"


def test_rotation_previous_from_settings(env_settings: pytest.MonkeyPatch) -> None:
  env_settings.setenv("BOND_SECRET", "new")
  env_settings.setenv("BOND_SECRET_PREVIOUS", "old")
  verify(sign(SID, 60, secret="old", now=NOW), SID, now=NOW)


def test_checks_signature_before_stream_and_expiry() -> None:
  # An unauthentic token learns nothing about streams or expiry.
  forged = sign(SID, 10, secret="attacker", now=NOW)
  assert _reason(forged, OTHER, now=NOW + 100) == "bad_signature"


GOOD_MAC = "a" * 64
MALFORMED = [
  # Not canonical: one token has one spelling (no leading zeros, signs, spaces, uppercase).
  f"{SID}.0{NOW}.0.{GOOD_MAC}",
  f"{SID}.+{NOW}.0.{GOOD_MAC}",
  f"{SID}.{NOW}.00.{GOOD_MAC}",
  f"{SID}.{NOW}.01.{GOOD_MAC}",
  f"{SID}.{NOW}.-1.{GOOD_MAC}",
  f"{SID}. {NOW}.0.{GOOD_MAC}",
  f"{SID}.{NOW}.0.{GOOD_MAC.upper()}",
  f"{SID}.{NOW}.0.{GOOD_MAC}\n",
  f"{SID}.{NOW}.0.{GOOD_MAC} ",
  f"{SID}.{NOW}.{'1' * 17}.{GOOD_MAC}",
  f"{SID}.{NOW}.0.{GOOD_MAC}.",
  f"{SID}.{NOW}.{GOOD_MAC}",  # the old three-part form
  f"{SID}.\u0661{NOW}.0.{GOOD_MAC}",  # a non-ASCII digit
  "",
  "abc",
  "a.b",
  f"{SID}.{NOW}",
  f"{SID}.{NOW}.{'a' * 64}.x",
  f"{SID}.notanumber.{'a' * 64}",
  f"{SID}.{NOW}.{'A' * 64}",
  f"{SID}.{NOW}.{'a' * 63}",
  f"{SID}.{NOW}.{'g' * 64}",
  f"{SID}.-5.{'a' * 64}",
  f"{SID}.{NOW}.{'a' * 64}\n",
  f" {SID}.{NOW}.{'a' * 64}",
  f"{SID}/x.{NOW}.{'a' * 64}",
  f"{SID}.{'9' * 40}.{'a' * 64}",
  "x" * 513,
  "a." * 10_000,
  None,
  12345,
  b"bytes.123.abc",
]


def test_the_leading_zero_twin_of_a_real_token_is_refused() -> None:
  token = sign(SID, 60, epoch=7, secret=KEY, now=NOW)
  stream, exp, epoch, mac = token.split(".")
  for twin in (f"{stream}.0{exp}.{epoch}.{mac}", f"{stream}.{exp}.0{epoch}.{mac}"):
    assert _reason(twin) == "malformed"
  assert _reason(f"{stream}.{exp}.{epoch}.{mac.upper()}") == "malformed"


def test_a_token_of_another_epoch_is_revoked() -> None:
  token = sign(SID, 60, epoch=100, secret=KEY, now=NOW)
  verify(token, SID, epoch=100, secret=KEY, previous="", now=NOW)
  assert _reason(token, epoch=101) == "revoked"
  assert _reason(token, epoch=99) == "revoked"
  # Signature first: a forged token never learns whether its epoch was current.
  forged = sign(SID, 60, epoch=100, secret="attacker", now=NOW)
  assert _reason(forged, epoch=100) == "bad_signature"


@pytest.mark.parametrize("epoch", [-1, 10**16, True, 1.5])
def test_sign_rejects_bad_epochs(epoch: object) -> None:
  with pytest.raises(ValueError):
    sign(SID, 60, epoch=epoch, secret=KEY, now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("token", MALFORMED)
def test_malformed(token: object) -> None:
  assert _reason(token) == "malformed"
  if isinstance(token, str):
    with pytest.raises(TokenError):
      expires_at(token)


def test_token_error_is_a_bond_error_with_a_reason() -> None:
  with pytest.raises(BondError) as info:
    verify("nope", SID, secret=KEY, previous="", now=NOW)
  assert isinstance(info.value, TokenError)
  assert info.value.reason == "malformed"
  assert info.value.retriable is False
  assert info.value.data == {"reason": "malformed"}


@pytest.mark.parametrize("bad", ["", "has.dot", "a b", "x" * 65, "ü"])
def test_sign_rejects_unusable_stream_ids(bad: str) -> None:
  with pytest.raises(ValueError):
    sign(bad, 60, secret=KEY, now=NOW)


@pytest.mark.parametrize("ttl", [0, -1])
def test_sign_rejects_non_positive_ttl(ttl: int) -> None:
  with pytest.raises(ValueError):
    sign(SID, ttl, secret=KEY, now=NOW)


def test_empty_secret_is_refused() -> None:
  with pytest.raises(BondError):
    sign(SID, 60, secret="", now=NOW)


def test_max_length_constant() -> None:
  assert tokens.MAX_TOKEN_CHARS == 512
  longest = sign("x" * 64, 10**9, epoch=tokens.MAX_EPOCH, secret=KEY, now=NOW)
  assert len(longest) < tokens.MAX_TOKEN_CHARS
