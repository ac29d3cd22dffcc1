"""Stage 2's store keys (ARCHITECTURE.md "Topics and tables").

A key is `<kind>:<partition>:<ident>#<n>`: `f` a feed track, `q` a closed pane, `s` a stream.
`n` is the first number that makes the key hash to the `bond.panes` partition it belongs to,
so every key of a partition shares that partition's changelog and is written in order.
"""

from collections.abc import Callable


class StoreKeys:
  """Makes, parses and caches stage 2's store keys (the search for `n` is done once per item)."""

  def __init__(self, partition_of: Callable[[bytes], int]) -> None:
    self.partition_of = partition_of
    self._cache: dict[tuple[str, int, str], bytes] = {}

  def key(self, kind: str, partition: int, ident: str) -> bytes:
    """Return the store key of an item, chosen to fall in its partition's changelog."""
    cache = (kind, partition, ident)
    key = self._cache.get(cache)
    if key is None:
      for n in range(100_000):
        key = f"{kind}:{partition}:{ident}#{n}".encode()
        if self.partition_of(key) == partition:
          break
      else:  # pragma: no cover - a hash this uneven does not exist
        raise AssertionError("no key found for the partition")
      self._cache[cache] = key
    return key

  @staticmethod
  def parse(key: bytes) -> tuple[str, int, str]:
    """Return (kind, partition, ident) of a store key; raise ValueError if it is not one."""
    text = key.decode()
    kind, partition, rest = text.split(":", 2)
    return kind, int(partition), rest.rsplit("#", 1)[0]

  def remember(self, kind: str, partition: int, ident: str, key: bytes) -> None:
    """Take a key read back from the store (it may carry another `n` than a search finds)."""
    self._cache[(kind, partition, ident)] = key

  def forget(self, key: bytes) -> None:
    """Drop a deleted key from the cache (a key that is not stage 2's is ignored)."""
    try:
      self._cache.pop(self.parse(key), None)
    except (ValueError, UnicodeDecodeError):
      pass

  def stream_partition(self, sid: str) -> int | None:
    """Return the partition of a stream whose state key is known, or None."""
    for kind, part, ident in self._cache:
      if kind == "s" and ident == sid:
        return part
    return None

  def clear(self) -> None:
    self._cache.clear()
