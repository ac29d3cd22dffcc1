"""Create the catalog's topics idempotently and create/delete per-stream topics."""

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from bond.topics.catalog import CATALOG, TopicSpec, stream_topic

log = logging.getLogger(__name__)


class TopicAdmin:
  """A small wrapper over aiokafka's admin client for Bond's topics."""

  def __init__(self, bootstrap: str) -> None:
    self._client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    self._started = False

  async def start(self) -> None:
    """Connect to the cluster."""
    await self._client.start()
    self._started = True

  async def stop(self) -> None:
    """Close the connection; safe to call twice."""
    if self._started:
      self._started = False
      await self._client.close()

  async def __aenter__(self) -> "TopicAdmin":
    await self.start()
    return self

  async def __aexit__(self, *exc: object) -> None:
    await self.stop()

  async def existing(self) -> set[str]:
    """Return the names of the topics the cluster has."""
    return set(await self._client.list_topics())

  async def ensure(self, specs: tuple[TopicSpec, ...] | list[TopicSpec] = CATALOG) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    have = await self.existing()
    missing = [s for s in specs if s.name not in have]
    if not missing:
      return []
    new = [
      NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, topic_configs=s.configs())
      for s in missing
    ]
    try:
      await self._client.create_topics(new)
    except TopicAlreadyExistsError:
      pass  # another process won the race; the topic is there either way
    log.info("created topics %s", [s.name for s in missing])
    return [s.name for s in missing]

  async def create_stream_topic(self, stream_id: str) -> str:
    """Create `bond.stream.<id>` if missing and return its name."""
    spec = stream_topic(stream_id)
    await self.ensure([spec])
    return spec.name

  async def delete_stream_topic(self, stream_id: str) -> None:
    """Delete `bond.stream.<id>`; a missing topic is fine."""
    name = stream_topic(stream_id).name
    try:
      await self._client.delete_topics([name])
    except UnknownTopicOrPartitionError:
      return
    # Deletion is asynchronous in Kafka; wait until the metadata shows it gone.
    for _ in range(50):
      if name not in await self.existing():
        return
      await asyncio.sleep(0.1)


async def ensure_catalog(bootstrap: str) -> list[str]:
  """Create every catalog topic that is missing; return the names created."""
  async with TopicAdmin(bootstrap) as admin:
    return await admin.ensure()
