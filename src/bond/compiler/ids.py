"""A spec's canonical JSON and its stream id."""

import hashlib
import json

from bond.schemas import StreamSpec


def canonical_json(spec: StreamSpec) -> str:
  """Return the spec as compact JSON with sorted keys and no null fields."""
  body = spec.model_dump(mode="json", exclude_none=True)
  return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def stream_id(spec: StreamSpec, owner: str = "local") -> str:
  """Return the 16-hex-char id of a spec owned by a project."""
  digest = hashlib.sha256(f"{owner}\n{canonical_json(spec)}".encode())
  return digest.hexdigest()[:16]
