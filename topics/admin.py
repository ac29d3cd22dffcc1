"""Create the catalog's topics idempotently and create/delete per-stream topics."""

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from bond.config import get_settings
from bond.topics.catalog import TopicSpec, catalog, stream_topic

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


class TopicAdmin:
  """A small wrapper over aiokafka's admin client for Bond's topics.

  Stream topics are created keeping `stream_retention_ms` (BOND_HISTORY_HOURS) and the raw
  topics `raw_retention_ms` (BOND_RAW_RETENTION_HOURS); `ensure` also moves the retention of
  existing topics it is given to the one asked.
  """

  def __init__(
    self,
    bootstrap: str,
    *,
    stream_retention_ms: int | None = None,
    raw_retention_ms: int | None = None,
  ) -> None:
    self._client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    self._started = False
    # Unset: the process's Settings, so every process creating a topic keeps the same hours.
    if stream_retention_ms is None or raw_retention_ms is None:
      conf = get_settings()
      stream_retention_ms = stream_retention_ms or conf.stream_retention_ms
      raw_retention_ms = raw_retention_ms or conf.raw_retention_ms
    self.stream_retention_ms: int = stream_retention_ms
    self.raw_retention_ms: int = raw_retention_ms

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

  async def ensure(self, specs: tuple[TopicSpec, ...] | list[TopicSpec] | None = None) -> list[str]:
    """Create the topics that do not exist yet (the catalog by default) and align the
    retention (and index size) of those that do; return the names created."""
    if specs is None:
      specs = catalog(self.raw_retention_ms)
    have = await self.existing()
    missing = [s for s in specs if s.name not in have]
    await self.align_configs([s for s in specs if s.name in have])
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

  # Topic configs `ensure` keeps as the spec says on topics that already exist.
  ALIGNED = ("retention.ms", "segment.index.bytes")

  async def configs_of(self, names: list[str], keys: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Return each topic's value of these config keys (a key the answer lacks is left out)."""
    if not names:
      return {}
    asked = [ConfigResource(ConfigResourceType.TOPIC, n, dict.fromkeys(keys)) for n in names]
    found: dict[str, dict[str, str]] = {n: {} for n in names}
    for resp in await self._client.describe_configs(asked):
      # (error_code, error_message, resource_type, resource_name, [(name, value, ...)])
      for resource in resp.resources:
        code, name, entries = resource[0], resource[3], resource[4]
        if code:
          raise KafkaError(f"cannot read the configs of topic {name}: error {code} {resource[1]}")
        for entry in entries:
          if entry[0] in keys and entry[1] is not None:
            found[name][entry[0]] = entry[1]
    return found

  async def retention_of(self, names: list[str]) -> dict[str, int | None]:
    """Return each topic's `retention.ms` (None when the answer lacks it)."""
    found = await self.configs_of(names, ("retention.ms",))
    return {n: int(c["retention.ms"]) if "retention.ms" in c else None for n, c in found.items()}

  async def align_configs(self, specs: list[TopicSpec]) -> list[str]:
    """Set the ALIGNED configs (retention, index size) of existing topics that differ from
    their spec's; return the names changed."""
    wanted = {s.name: {k: v for k, v in s.configs().items() if k in self.ALIGNED} for s in specs}
    current = await self.configs_of([n for n, w in wanted.items() if w], self.ALIGNED)
    by_name = {s.name: s for s in specs}
    stale = [by_name[n] for n, have in current.items()
             if any(have.get(k) != v for k, v in wanted[n].items())]  # fmt: skip
    if not stale:
      return []
    # AlterConfigs (not incremental) replaces a topic's whole dynamic config: send all of it.
    changes = [ConfigResource(ConfigResourceType.TOPIC, s.name, s.configs()) for s in stale]
    for resp in await self._client.alter_configs(changes):
      for code, message, _type, name in resp.resources:
        if code:
          raise KafkaError(f"cannot set the configs of topic {name}: error {code} {message}")
    log.info("configs set on %s", {s.name: wanted[s.name] for s in stale})
    return [s.name for s in stale]

  async def align_stream_topics(self, stream_ids: list[str]) -> list[str]:
    """Move the existing topics of these streams to `stream_retention_ms` (topics made
    under another BOND_HISTORY_HOURS) and the stream index size; return the names changed."""
    have = await self.existing()
    specs = [stream_topic(sid, self.stream_retention_ms) for sid in stream_ids]
    return await self.align_configs([s for s in specs if s.name in have])

  async def create_stream_topic(self, stream_id: str) -> str:
    """Create `bond.stream.<id>` (kept `stream_retention_ms`) if missing; return its name."""
    spec = stream_topic(stream_id, self.stream_retention_ms)
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


async def ensure_catalog(bootstrap: str, raw_retention_ms: int | None = None) -> list[str]:
  """Create every catalog topic that is missing, align the raw topics' retention; return the
  names created."""
  async with TopicAdmin(bootstrap, raw_retention_ms=raw_retention_ms) as admin:
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
