"""Create the catalog's topics idempotently and create/delete per-stream topics."""

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from bond.topics.catalog import CATALOG, TopicSpec, stream_topic

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


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
      resp = await self._client.create_topics(new)
    except TopicAlreadyExistsError:
      resp = None  # another process won the race; the topic is there either way
    # create_topics does not raise per topic: read each topic's error code.
    for topic, code, message in getattr(resp, "topic_errors", ()):
      if code not in (0, TOPIC_ALREADY_EXISTS):
        raise KafkaError(f"cannot create topic {topic}: error {code} {message or ''}".strip())
    await self._visible({s.name for s in missing}, present=True)
    log.info("created topics %s", [s.name for s in missing])
    return [s.name for s in missing]

  async def _visible(self, names: set[str], present: bool, timeout_sec: float = 10.0) -> None:
    """Wait until the cluster's metadata lists `names` (or none of them): creation and
    deletion are asynchronous in Kafka, and a busy controller takes a while to show them."""
    deadline = asyncio.get_running_loop().time() + timeout_sec
    delay = 0.02
    while asyncio.get_running_loop().time() < deadline:
      have = await self.existing()
      if (names <= have) if present else not (names & have):
        return
      await asyncio.sleep(delay)
      delay = min(0.5, delay * 2)
    log.warning(
      "topics %s still %s after %.0f s",
      sorted(names),
      "absent" if present else "listed",
      timeout_sec,
    )

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
    await self._visible({name}, present=False)


async def ensure_catalog(bootstrap: str) -> list[str]:
  """Create every catalog topic that is missing; return the names created."""
  async with TopicAdmin(bootstrap) as admin:
    return await admin.ensure()


async def drop_topics(bootstrap: str, prefixes: tuple[str, ...]) -> int:
  """Delete every topic whose name starts with one of `prefixes` (a test's or bench's own).

  Best effort and bounded: a run must not leave thousands of topics in a broker that the
  next run reuses. Returns how many were deleted.
  """
  admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
  try:
    await asyncio.wait_for(admin.start(), 15)
    names = sorted(n for n in await admin.list_topics() if n.startswith(prefixes))
    for i in range(0, len(names), 500):
      await asyncio.wait_for(admin.delete_topics(names[i : i + 500]), 60)
    return len(names)
  except (KafkaError, OSError, TimeoutError) as err:
    log.warning("topics %s not deleted: %s", prefixes, err)
    return 0
  finally:
    await admin.close()
