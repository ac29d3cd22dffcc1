"""Kafka from Maven jars: fetch them, check Java, write and format a KRaft broker, run tools."""

import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from bond.errors import DevStackError

KAFKA_VERSION = "4.3.1"
CACHE_DIR = Path(os.environ.get("BOND_CACHE", Path.home() / ".cache" / "bond"))
KAFKA_MAIN = "kafka.Kafka"
KAFKA_TOOLS = {
  "console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
  "console-producer": "org.apache.kafka.tools.ConsoleProducer",
  "topics": "org.apache.kafka.tools.TopicCommand",
  "consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
  "get-offsets": "org.apache.kafka.tools.GetOffsetShell",
  "configs": "kafka.admin.ConfigCommand",
}
JAVA_OPTS = [
  "-server",
  "-XX:+UseG1GC",
  "-XX:MaxGCPauseMillis=20",
  "-XX:InitiatingHeapOccupancyPercent=35",
  "-XX:+ExplicitGCInvokesConcurrent",
  "-Djava.awt.headless=true",
]


def resource(name: str) -> Path:
  """Return the path of a file shipped in `bond.devstack_files` (the pom, log4j2.yaml)."""
  return Path(str(resources.files("bond.devstack_files") / name))


def java_version() -> int:
  """Return the major version of the `java` on PATH, or raise DevStackError."""
  java = shutil.which("java")
  if not java:
    raise DevStackError(
      "Java is missing: install Java 17 or newer (apt-get install openjdk-17-jre-headless)"
    )
  out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
  match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
  if not match:
    raise DevStackError(f"cannot read the Java version from `java -version`: {out.strip()[:200]}")
  major = int(match.group(1))
  major = int(match.group(2)) if major == 1 and match.group(2) else major
  if major < 17:
    raise DevStackError(f"Java {major} found; Kafka {KAFKA_VERSION} needs Java 17 or newer")
  return major


def kafka_libs(version: str = KAFKA_VERSION) -> Path:
  """Return the folder of Kafka's jars, fetching them with Maven the first time."""
  libs = CACHE_DIR / f"kafka-{version}" / "libs"
  if (libs / f"kafka_2.13-{version}.jar").exists() and (
    libs / f"kafka-tools-{version}.jar"
  ).exists():
    return libs
  mvn = shutil.which("mvn")
  if not mvn:
    raise DevStackError(
      "Maven is missing: install it (apt-get install maven) so Bond can fetch Kafka's jars"
    )
  staging = libs.with_name("libs.partial")
  shutil.rmtree(staging, ignore_errors=True)
  staging.mkdir(parents=True)
  pom = resource("kafka-pom.xml")
  cmd = [
    mvn, "-B", "-q", "-f", str(pom), f"-Dkafka.version={version}",
    "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
  ]  # fmt: skip
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    raise DevStackError(
      "Maven could not fetch Kafka's jars (is Maven Central reachable? see ~/.m2/settings.xml): "
      + " | ".join(tail)
    )
  shutil.rmtree(libs, ignore_errors=True)
  staging.rename(libs)
  return libs


def broker_properties(home: Path, kafka_port: int, controller_port: int) -> Path:
  """Write a single-node KRaft broker's properties under `home`, format its storage once."""
  data = home / "kafka" / "data"
  props = home / "kafka" / "server.properties"
  props.parent.mkdir(parents=True, exist_ok=True)
  listeners = f"PLAINTEXT://127.0.0.1:{kafka_port},CONTROLLER://127.0.0.1:{controller_port}"
  props.write_text(
    "\n".join(
      [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
        f"listeners={listeners}",
        f"advertised.listeners={listeners}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data}",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "num.partitions=1",
        "auto.create.topics.enable=true",
        "delete.topic.enable=true",
        "log.retention.hours=24",
        "log.segment.bytes=67108864",
        # Index files are preallocated sparse and read through mmap: their first fault pulls
        # in up to the disk's read-ahead of zeroed pages (8 MiB here) per index. 256 KiB still
        # indexes a whole 64 MiB segment (ARCHITECTURE.md "Topics and tables").
        "log.index.size.max.bytes=262144",
        "",
      ]
    )
  )
  if not (data / "meta.properties").exists():
    _format_storage(props)
  return props


def _format_storage(props: Path) -> None:
  cp = f"{kafka_libs()}/*"
  tool = ["java", "-cp", cp, "kafka.tools.StorageTool"]
  cluster_id = (
    subprocess.run([*tool, "random-uuid"], capture_output=True, text=True, check=True)
    .stdout.strip()
    .splitlines()[-1]
  )
  proc = subprocess.run(
    [*tool, "format", "--standalone", "-t", cluster_id, "-c", str(props)],
    capture_output=True,
    text=True,
    check=False,
  )
  if proc.returncode != 0:
    raise DevStackError(f"formatting Kafka storage failed: {proc.stderr.strip()[-300:]}")


def broker_command(props: Path, heap_mb: int, logs: Path) -> list[str]:
  """Return the `java ... kafka.Kafka server.properties` command of the broker."""
  return [
    shutil.which("java") or "java",
    f"-Xmx{heap_mb}m",
    "-Xms256m",
    *JAVA_OPTS,
    f"-Dlog4j2.configurationFile={resource('log4j2.yaml')}",
    f"-Dkafka.logs.dir={logs}",
    "-cp",
    f"{kafka_libs()}/*",
    KAFKA_MAIN,
    str(props),
  ]


def kafka_tool(tool: str, args: list[str], bootstrap: str | None = None) -> int:
  """Run one of Kafka's console tools from the fetched jars and return its exit code.

  Without `--bootstrap-server` (or `--bootstrap-controller`) in `args`, the tool is pointed
  at `bootstrap`, Bond's own Kafka (KAFKA_BOOTSTRAP), so `bond kafka topics --list` just works.
  """
  if tool not in KAFKA_TOOLS:
    raise DevStackError(
      f"unknown Kafka tool {tool!r}; choose one of: {', '.join(sorted(KAFKA_TOOLS))}"
    )
  java_version()
  named = {a.split("=", 1)[0] for a in args}
  if bootstrap and not named & {
    "--bootstrap-server",
    "--bootstrap-controller",
    "--help",
    "--version",
  }:
    args = ["--bootstrap-server", bootstrap, *args]
  cmd = [
    "java", "-Xmx512m", f"-Dlog4j2.configurationFile={resource('log4j2.yaml')}",
    "-cp", f"{kafka_libs()}/*", KAFKA_TOOLS[tool], *args,
  ]  # fmt: skip
  return subprocess.call(cmd)
