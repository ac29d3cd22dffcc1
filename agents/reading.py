"""What both stages' readers share: a task of the worker, and a plain consumer that resumes
each partition from the read position stored in the stage's table (ARCHITECTURE.md "Stage 1"
and "Stage 2")."""

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bond.agents.app import settings
from bond.agents.state import partition_for

POSITION_VERSION = 1


def position_key(name: str, partition: int, partitions: int) -> bytes:
  """Return the table key holding how far partition `partition` of `name` was read: it hashes
  to that same partition (so it shares its changelog partition with the state it follows)."""
  for n in range(10_000):
    key = f"\x00pos:{name}:{partition}:{n}".encode()
    if partition_for(key, partitions) == partition:
      return key
  raise AssertionError("no position key found")  # cannot happen: murmur2 spreads keys evenly


def position(offset: int) -> dict[str, int]:
  """Return the table value recording that a partition was read up to `offset`."""
  return {"v": POSITION_VERSION, "pos": offset}


class TableReader:
  """A reading task with its consumer; subclasses define `run` (started once, cancelled on stop)."""

  task_name = "reader"

  def __init__(self) -> None:
    self.consumer: AIOKafkaConsumer | None = None
    self.assigned: set[TopicPartition] = set()
    self._task: asyncio.Task[None] | None = None

  def start(self) -> None:
    """Start reading (a task of the worker, started once the registry is loaded)."""
    if self._task is None:
      self._task = asyncio.create_task(self.run(), name=self.task_name)

  async def stop(self) -> None:
    """Stop reading and close the consumer (idempotent)."""
    task, self._task = self._task, None
    if task is not None:
      task.cancel()
      await asyncio.gather(task, return_exceptions=True)

  async def run(self) -> None:  # pragma: no cover - every reader defines it
    raise NotImplementedError

  @staticmethod
  def new_consumer() -> AIOKafkaConsumer:
    """Return a consumer without group or commits, for large batches.

    A fetch returns as soon as a record arrives; `fetch_max_wait_ms` bounds only an idle
    fetch (and how long a new assignment waits for the fetch in flight). 5 ms polled the
    broker 200 times a second for nothing.
    """
    return AIOKafkaConsumer(
      bootstrap_servers=settings.kafka_bootstrap,
      enable_auto_commit=False,
      auto_offset_reset="earliest",
      max_partition_fetch_bytes=4 * 1024 * 1024,
      fetch_max_wait_ms=100,
    )

  async def seek_stored(self, tp: TopicPartition, stored: Any) -> None:
    """Seek `tp` just past its stored read position, or to its beginning without one."""
    assert self.consumer is not None
    if isinstance(stored, dict) and stored.get("v") == POSITION_VERSION:
      self.consumer.seek(tp, int(stored["pos"]) + 1)
    else:
      await self.consumer.seek_to_beginning(tp)
