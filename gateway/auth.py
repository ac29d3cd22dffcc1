"""Who is calling the REST API: the project of a `Bearer` API key (BOND_API_KEYS)."""

import hmac

from starlette.requests import Request

from bond.errors import UnauthorizedError

LOCAL_PROJECT = "local"  # the one project of a deployment without API keys


def project_of(request: Request, keys: dict[str, str]) -> str:
  """Return the project of the request's API key, or raise UnauthorizedError (401)."""
  if not keys:
    return LOCAL_PROJECT
  key = bearer_key(request)
  if key is None:
    raise UnauthorizedError(
      "send your API key as `Authorization: Bearer <key>` (keys come from BOND_API_KEYS)"
    )
  owner = known_project(key, keys)
  if owner is None:
    raise UnauthorizedError("unknown API key")
  return owner


def bearer_key(request: Request) -> str | None:
  """Return the key of an `Authorization: Bearer <key>` header, if any."""
  scheme, _, key = request.headers.get("authorization", "").partition(" ")
  key = key.strip()
  if scheme.lower() != "bearer" or not key:
    return None
  return key


def known_project(key: str, keys: dict[str, str]) -> str | None:
  """Return the project of a key, comparing against every known key in constant time."""
  owner = None
  for known, name in keys.items():
    if hmac.compare_digest(known.encode(), key.encode()):
      owner = name
  return owner
