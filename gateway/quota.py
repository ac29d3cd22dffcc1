"""Limits that hold across API replicas, kept in Redis by Lua scripts (atomic conditional writes).

- The per-project stream limit: a sorted set of the project's stream ids. A create adds
  its id only if the project is under BOND_MAX_STREAMS; members the registry no longer
  knows are pruned once older than a grace period (a create confirmed by one replica may
  not have reached another's registry yet).
- The per-key request rate: a token bucket (BOND_API_RATE_PER_SEC, BOND_API_RATE_BURST)
  on Redis time. While Redis is unreachable each replica keeps its own bucket.
"""

import logging
import math
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bond import wire
from bond.errors import LimitError, RateLimitError

log = logging.getLogger(__name__)

RESERVE_GRACE_MS = 60_000

# KEYS[1] the project's set; ARGV: max, stream id, grace ms, then the registry's ids.
# Returns {verdict, count}: 1 reserved now, 2 already reserved (by this or another
# replica), 0 refused (the project is at its limit).
_RESERVE = """
local key, max, sid, grace = KEYS[1], tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local known = {}
for i = 4, #ARGV do known[ARGV[i]] = true end
local members = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
for i = 1, #members, 2 do
  local m, score = members[i], tonumber(members[i + 1])
  if not known[m] and score < now - grace then redis.call('ZREM', key, m) end
end
for i = 4, #ARGV do redis.call('ZADD', key, 'NX', 0, ARGV[i]) end
if redis.call('ZSCORE', key, sid) then return {2, redis.call('ZCARD', key)} end
local n = redis.call('ZCARD', key)
if n >= max then return {0, n} end
redis.call('ZADD', key, now, sid)
return {1, n + 1}
"""

# KEYS[1] the bucket; ARGV: rate per sec, burst. Returns {allowed, wait ms}.
_TAKE = """
local key, rate, burst = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local v = redis.call('HMGET', key, 'tokens', 'ts')
local tokens, ts = tonumber(v[1]), tonumber(v[2])
if tokens == nil or ts == nil then tokens, ts = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens, allowed = tokens - 1, 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait}
"""


class StreamQuota:
  """The per-project stream limit, as a conditional write in Redis."""

  def __init__(self, redis: aioredis.Redis, max_streams: int) -> None:
    self._redis = redis
    self._max = max_streams
    self._reserve = redis.register_script(_RESERVE)
    self._local: dict[str, set[str]] = {}  # creates under way here, while Redis is down

  async def reserve(self, owner: str, sid: str, registered: list[str]) -> bool:
    """Reserve a slot for a new stream; False when another create of it is under way."""
    args: list[Any] = [self._max, sid, RESERVE_GRACE_MS, *registered]
    try:
      verdict, count = await self._reserve(keys=[wire.project_streams_key(owner)], args=args)
    except (RedisError, OSError) as exc:
      # Without Redis the limit holds per replica: the registry plus this replica's creates.
      log.warning("stream limit without Redis (%s): counting this replica's view", exc)
      pending = self._local.setdefault(owner, set())
      if sid in pending:
        return False
      count = len(set(registered) | pending)
      verdict = 0 if count >= self._max else 1
      if verdict:
        pending.add(sid)
    if int(verdict) == 0:
      raise LimitError(
        f"project {owner!r} already has {int(count)} streams, the limit is {self._max} "
        "(BOND_MAX_STREAMS); delete one with DELETE /v1/streams/{stream_id} to free a slot "
        "(GET /v1/streams lists them)"
      )
    return int(verdict) == 1

  def created(self, owner: str, sid: str) -> None:
    """Forget a finished create (the registry counts it from now on)."""
    pending = self._local.get(owner)
    if pending is not None:
      pending.discard(sid)
      if not pending:
        del self._local[owner]

  async def release(self, owner: str, sid: str) -> None:
    """Free a stream's slot (deleted, or its create failed)."""
    self.created(owner, sid)
    try:
      await self._redis.zrem(wire.project_streams_key(owner), sid)
    except (RedisError, OSError) as exc:
      # The slot frees itself once the registry no longer lists the stream (grace period).
      log.warning("could not free the slot of stream %s: %s", sid, exc)


class _LocalBucket:
  """One replica's token bucket, for when Redis cannot be reached."""

  def __init__(self, rate: float, burst: int) -> None:
    self.rate, self.burst = rate, burst
    self.tokens, self.ts = float(burst), time.monotonic()

  def take(self) -> float:
    now = time.monotonic()
    self.tokens = min(self.burst, self.tokens + (now - self.ts) * self.rate)
    self.ts = now
    if self.tokens >= 1:
      self.tokens -= 1
      return 0.0
    return (1 - self.tokens) / self.rate


class RateLimiter:
  """A token bucket per project (API key): `rate_per_sec` sustained, `burst` at once."""

  def __init__(self, redis: aioredis.Redis, rate_per_sec: float, burst: int) -> None:
    self._rate = rate_per_sec
    self._burst = burst
    self._take = redis.register_script(_TAKE)
    self._local: dict[str, _LocalBucket] = {}

  async def check(self, owner: str) -> None:
    """Take one request from the project's bucket, or raise RateLimitError (429)."""
    try:
      allowed, wait_ms = await self._take(
        keys=[wire.rate_key(owner)], args=[self._rate, self._burst]
      )
      wait_sec = 0.0 if int(allowed) else int(wait_ms) / 1000
    except (RedisError, OSError) as exc:
      log.debug("rate limit in Redis unavailable (%s); using this replica's bucket", exc)
      if len(self._local) > 10_000:  # bounded: owners come from BOND_API_KEYS, but still
        self._local.clear()
      bucket = self._local.setdefault(owner, _LocalBucket(self._rate, self._burst))
      wait_sec = bucket.take()
    if wait_sec > 0:
      retry = max(1, math.ceil(wait_sec))
      raise RateLimitError(
        f"project {owner!r} is over {self._rate:g} requests/s (burst {self._burst}; "
        f"BOND_API_RATE_PER_SEC, BOND_API_RATE_BURST); retry in {retry}s",
        retry_after_sec=retry,
      )
