"""A private deployment for the benchmark: topic prefix, registered streams, tokens, cleanup."""

import asyncio
import dataclasses
import os
import secrets
import uuid
from typing import Any

from bench.gateway.plan import HOST
from bond.topics.admin import drop_topics


class Deployment:
  """A private topic prefix with registered streams, their topics and Redis keys."""

  def __init__(self, bootstrap: str, redis_url: str) -> None:
    self.bootstrap, self.redis_url = bootstrap, redis_url
    self.prefix = f"bench-{uuid.uuid4().hex[:8]}."
    self.secret = secrets.token_hex(32)
    self.sids: list[str] = []

  def control_topic(self) -> Any:
    """Return the registry topic of this deployment."""
    from bond.topics import CONTROL_STREAMS

    return dataclasses.replace(CONTROL_STREAMS, name=self.prefix + "bond.control.streams")

  def stream_topic(self, sid: str) -> Any:
    """Return the topic of one stream in this deployment."""
    from bond.topics import stream_topic

    return dataclasses.replace(stream_topic(sid), name=f"{self.prefix}bond.stream.{sid}")

  async def streams(self, count: int) -> list[str]:
    """Register `count` streams (records + topics) before the gateways start."""
    from bond.registry import RegistryWriter, new_record
    from bond.schemas import StreamSpec
    from bond.topics.admin import TopicAdmin

    sids = [uuid.uuid4().hex[:16] for _ in range(count)]
    spec = StreamSpec.model_validate(
      {"sources": ["ccxt"], "symbols": ["BTC/USDT"], "interval_sec": 1}
    )
    async with TopicAdmin(self.bootstrap) as admin:
      await admin.ensure([self.control_topic(), *(self.stream_topic(s) for s in sids)])
    writer = RegistryWriter(self.bootstrap, topic=self.control_topic().name)
    await writer.start()
    try:
      for sid in sids:
        await writer.put(new_record(sid, "bench", spec, token_epoch=0))  # url() signs epoch 0
    finally:
      await writer.stop()
    self.sids += sids
    return sids

  def env(self, **extra: str) -> dict[str, str]:
    """Return the gateway process environment."""
    env = {k: v for k, v in os.environ.items() if k != "BOND_SECRET_PREVIOUS"}
    env.update(
      KAFKA_BOOTSTRAP=self.bootstrap,
      REDIS_URL=self.redis_url,
      BOND_TOPIC_PREFIX=self.prefix,
      BOND_SECRET=self.secret,
      BOND_ENV="dev",
      # Every bench socket shares one address and, per stream, one token.
      BOND_WS_MAX_PER_TOKEN="1000000",
      BOND_WS_MAX_PER_IP="1000000",
      PYTHONUNBUFFERED="1",
      **extra,
    )
    return env

  def url(self, port: int, sid: str, from_: str | None = None) -> str:
    """Return a stream's WebSocket URL with a fresh token."""
    from bond.tokens import sign

    query = f"token={sign(sid, 3600, secret=self.secret)}"
    return f"ws://{HOST}:{port}/ws/{sid}?{query}" + (f"&from={from_}" if from_ else "")

  async def cleanup(self) -> None:
    """Delete this deployment's topics and Redis keys (best effort, bounded)."""
    import redis.asyncio as aioredis

    from bond.wire import metrics_key, stream_key

    client = aioredis.from_url(self.redis_url, socket_timeout=5)
    try:
      keys = [k for s in self.sids for k in (stream_key(s), metrics_key(s))]
      if keys:
        await asyncio.wait_for(client.delete(*keys), 10)
    except Exception as err:
      print(f"  (cleanup: Redis keys not deleted: {err})")
    finally:
      await client.aclose()
    await drop_topics(self.bootstrap, (self.prefix,))  # its control and stream topics
