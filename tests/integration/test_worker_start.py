"""A worker creates its tables' changelog topics before it joins its group.

Faust creates them itself moments before joining; on a fresh broker such a topic could be
missing from the group leader's metadata, which then left it out of the assignment for good
("Ignoring missing topic"): stage 2 owned no partition and no window ever went out.
"""

import dataclasses

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from bond.topics import RAW_TOPICS
from bond.topics.admin import drop_topics

pytestmark = pytest.mark.integration


async def test_the_changelogs_are_created_as_faust_declares_them(deployment):
  from bond.agents.app import app
  from bond.agents.ready import changelog_specs, ensure_changelogs

  specs = changelog_specs(app.tables.values(), app.conf.topic_partitions)
  app_id = app.conf.id
  assert {s.name for s in specs} == {
    *(f"{app_id}-stage1-{source}-changelog" for source in RAW_TOPICS),
    f"{app_id}-stage2-changelog",
  }
  specs = [dataclasses.replace(s, name=f"{deployment.prefix}{s.name}") for s in specs]
  try:
    assert sorted(await ensure_changelogs(deployment.bootstrap, specs)) == sorted(
      s.name for s in specs
    )
    assert await ensure_changelogs(deployment.bootstrap, specs) == []  # already there
    admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap)
    await admin.start()
    try:
      described = await admin.describe_topics([s.name for s in specs])
    finally:
      await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == {
      s.name: s.partitions for s in specs
    }
    assert all(s.configs()["cleanup.policy"] == "compact" for s in specs)
  finally:
    await drop_topics(deployment.bootstrap, (deployment.prefix,))
