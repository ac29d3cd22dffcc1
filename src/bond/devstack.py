"""Fetch, start and stop Bond's local stack: Kafka (KRaft, from Maven jars), Redis, and the
platform's processes, all under one supervisord that `bond down` shuts down whole.
"""

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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


def _resource(name: str) -> Path:
  return Path(str(resources.files("bond.devstack_files") / name))


# ---------------------------------------------------------------------- prerequisites


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
  pom = _resource("kafka-pom.xml")
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


def redis_server_binary(install: bool = True) -> str:
  """Return the path of `redis-server`, installing Debian's package as root if missing."""
  found = shutil.which("redis-server")
  if found:
    return found
  if install and os.geteuid() == 0 and shutil.which("apt-get"):
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False, env=env)
    proc = subprocess.run(
      ["apt-get", "install", "-y", "-qq", "redis-server"],
      capture_output=True,
      text=True,
      check=False,
      env=env,
    )
    found = shutil.which("redis-server") or (
      "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if proc.returncode == 0 and found:
      # Debian's package may start its own service; Bond runs its own on loopback.
      subprocess.run(["service", "redis-server", "stop"], capture_output=True, check=False)
      return found
    raise DevStackError(f"apt-get install redis-server failed: {proc.stderr.strip()[-200:]}")
  raise DevStackError(
    "redis-server is missing: install it (sudo apt-get install redis-server) or set REDIS_URL to a running Redis"
  )


def redis_answers(url: str, timeout_sec: float = 1.0) -> bool:
  """Return True when a Redis server answers PING at `url`."""
  host, port = _host_port(url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1], 6379)
  try:
    with socket.create_connection((host, port), timeout=timeout_sec) as sock:
      sock.sendall(b"PING\r\n")
      return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
  except OSError:
    return False


def port_free(port: int, host: str = "127.0.0.1") -> bool:
  """Return True when nothing listens on host:port."""
  with socket.socket() as sock:
    sock.settimeout(0.3)
    return sock.connect_ex((host, port)) != 0


def _host_port(hostport: str, default: int) -> tuple[str, int]:
  host, _, port = hostport.rpartition(":")
  return (host or "127.0.0.1", int(port)) if port.isdigit() else (hostport or "127.0.0.1", default)


async def kafka_ready(bootstrap: str, timeout_sec: float = 3.0) -> bool:
  """Return True when a metadata request to the broker succeeds."""
  from aiokafka.admin import AIOKafkaAdminClient
  from aiokafka.errors import KafkaError

  client = AIOKafkaAdminClient(
    bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_sec * 1000)
  )
  try:
    await asyncio.wait_for(client.start(), timeout_sec)
    await asyncio.wait_for(client.list_topics(), timeout_sec)
    return True
  except (KafkaError, OSError, TimeoutError):
    return False
  finally:
    await client.close()


def http_ok(url: str, timeout_sec: float = 1.0) -> bool:
  """Return True when GET url answers 2xx."""
  import httpx

  try:
    return httpx.get(url, timeout=timeout_sec).is_success
  except httpx.HTTPError:
    return False


# ---------------------------------------------------------------------- the stack


@dataclass
class Part:
  """One supervised process and how to tell it is ready."""

  name: str
  command: list[str]
  ready: Callable[[], bool]
  ports: list[int] = field(default_factory=list)
  env: dict[str, str] = field(default_factory=dict)
  ready_timeout_sec: float = 120.0
  stop_signal: str = "TERM"
  on_ready: Callable[[], object] | None = None


@dataclass
class DevStack:
  """Bond's local stack rooted at `home` (logs, data, supervisor files)."""

  home: Path
  kafka_port: int = 9092
  controller_port: int = 9093
  redis_url: str = "redis://localhost:6379"
  api_port: int = 8000
  ws_port: int = 8080
  sim_port: int = 8765
  worker_web_port: int = 6066
  kafka_heap_mb: int = 768
  env: dict[str, str] = field(default_factory=dict)

  @property
  def bootstrap(self) -> str:
    return f"127.0.0.1:{self.kafka_port}"

  @property
  def logs(self) -> Path:
    return self.home / "logs"

  @property
  def run(self) -> Path:
    return self.home / "run"

  @property
  def sock(self) -> Path:
    return self.run / "supervisor.sock"

  # -------------------------------------------------------------- kafka and redis

  def _kafka_files(self) -> Path:
    data = self.home / "kafka" / "data"
    props = self.home / "kafka" / "server.properties"
    props.parent.mkdir(parents=True, exist_ok=True)
    props.write_text(
      "\n".join(
        [
          "process.roles=broker,controller",
          "node.id=1",
          f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
          f"listeners=PLAINTEXT://127.0.0.1:{self.kafka_port},CONTROLLER://127.0.0.1:{self.controller_port}",
          f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.kafka_port},CONTROLLER://127.0.0.1:{self.controller_port}",
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
          "",
        ]
      )
    )
    libs = kafka_libs()
    if not (data / "meta.properties").exists():
      cp = f"{libs}/*"
      cluster_id = (
        subprocess.run(
          ["java", "-cp", cp, "kafka.tools.StorageTool", "random-uuid"],
          capture_output=True,
          text=True,
          check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
      )
      proc = subprocess.run(
        [
          "java",
          "-cp",
          cp,
          "kafka.tools.StorageTool",
          "format",
          "--standalone",
          "-t",
          cluster_id,
          "-c",
          str(props),
        ],
        capture_output=True,
        text=True,
        check=False,
      )
      if proc.returncode != 0:
        raise DevStackError(f"formatting Kafka storage failed: {proc.stderr.strip()[-300:]}")
    return props

  def kafka_part(self) -> Part:
    props = self._kafka_files()
    cmd = [
      shutil.which("java") or "java",
      f"-Xmx{self.kafka_heap_mb}m",
      "-Xms256m",
      *JAVA_OPTS,
      f"-Dlog4j2.configurationFile={_resource('log4j2.yaml')}",
      f"-Dkafka.logs.dir={self.logs}",
      "-cp",
      f"{kafka_libs()}/*",
      KAFKA_MAIN,
      str(props),
    ]
    return Part(
      "kafka",
      cmd,
      lambda: asyncio.run(kafka_ready(self.bootstrap)),
      ports=[self.kafka_port, self.controller_port],
      on_ready=self.create_topics,
    )

  def create_topics(self) -> list[str]:
    """Create the catalog's topics that are missing (idempotent)."""
    from bond.topics.admin import ensure_catalog

    return asyncio.run(ensure_catalog(self.bootstrap))

  def redis_part(self) -> Part | None:
    """Return a Part that runs redis-server, or None when REDIS_URL already answers."""
    if redis_answers(self.redis_url):
      return None
    host, port = _host_port(self.redis_url.split("://", 1)[-1].split("/", 1)[0], 6379)
    if host not in ("localhost", "127.0.0.1"):
      raise DevStackError(
        f"Redis at {self.redis_url} does not answer; start it or point REDIS_URL at one that does"
      )
    data = self.home / "redis"
    data.mkdir(parents=True, exist_ok=True)
    cmd = [
      redis_server_binary(),
      "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
      # The replay ring survives a Redis restart (append-only file, fsync each second).
      "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
      "--daemonize", "no", "--protected-mode", "yes",
    ]  # fmt: skip
    return Part("redis", cmd, lambda: redis_answers(self.redis_url), ports=[port])

  # -------------------------------------------------------------- platform processes

  def platform_parts(self, market: str) -> list[Part]:
    """Return the sim exchange (sim mode), the Faust worker, the REST API and the gateway."""
    py = sys.executable
    bindir = Path(py).parent
    parts: list[Part] = []
    if market == "sim":
      parts.append(
        Part(
          "sim",
          [py, "-m", "bond.sim", "--port", str(self.sim_port)],
          lambda: http_ok(f"http://127.0.0.1:{self.sim_port}/api/v3/ping"),
          ports=[self.sim_port],
        )
      )
    faust = str(bindir / "faust") if (bindir / "faust").exists() else "faust"
    parts += [
      Part(
        "worker",
        [faust, "-A", "bond.agents.app", "worker", "-l", "info", "--web-port", str(self.worker_web_port)],
        lambda: http_ok(f"http://127.0.0.1:{self.worker_web_port}/bond/ready"),
        ports=[self.worker_web_port],
        ready_timeout_sec=180,
      ),
      Part(
        "api",
        [py, "-m", "uvicorn", "bond.gateway.app:api", "--factory", "--host", "127.0.0.1",
         "--port", str(self.api_port), "--no-access-log"],
        lambda: http_ok(f"http://127.0.0.1:{self.api_port}/readyz"),
        ports=[self.api_port],
      ),
      Part(
        "gateway",
        [py, "-m", "uvicorn", "bond.gateway.app:gateway", "--factory", "--host", "127.0.0.1",
         "--port", str(self.ws_port), "--no-access-log", "--ws-ping-interval", "20",
         "--ws-per-message-deflate", "false", "--ws-max-size", "4096"],
        lambda: http_ok(f"http://127.0.0.1:{self.ws_port}/healthz"),
        ports=[self.ws_port],
      ),
    ]  # fmt: skip
    return parts

  def process_env(self, market: str) -> dict[str, str]:
    """Return the environment every platform process gets."""
    env = {
      "KAFKA_BOOTSTRAP": self.bootstrap,
      "REDIS_URL": self.redis_url,
      "WS_HOST": os.environ.get("WS_HOST", f"localhost:{self.ws_port}"),
      "BOND_MARKET": market,
      "BOND_SIM_PORT": str(self.sim_port),
      "PYTHONUNBUFFERED": "1",
    }
    env.update(self.env)
    return env

  # -------------------------------------------------------------- supervisor

  def _write_conf(self, parts: Iterable[Part], env: dict[str, str]) -> Path:
    self.logs.mkdir(parents=True, exist_ok=True)
    self.run.mkdir(parents=True, exist_ok=True)
    env_line = ",".join(f'{k}="{v}"' for k, v in env.items() if "%" not in v and '"' not in v)
    lines = [
      "[unix_http_server]",
      f"file={self.sock}",
      "[supervisord]",
      f"logfile={self.logs / 'supervisord.log'}",
      f"pidfile={self.run / 'supervisord.pid'}",
      f"directory={Path.cwd()}",
      "nodaemon=false",
      "minfds=4096",
      f"environment={env_line}" if env_line else "",
      "[rpcinterface:supervisor]",
      "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
      "[supervisorctl]",
      f"serverurl=unix://{self.sock}",
    ]
    for part in parts:
      penv = ",".join(f'{k}="{v}"' for k, v in part.env.items())
      lines += [
        f"[program:{part.name}]",
        "command=" + " ".join(_quote(c) for c in part.command),
        "autostart=false",
        "autorestart=unexpected",
        "startsecs=1",
        "startretries=3",
        "stopasgroup=true",
        "killasgroup=true",
        "stopwaitsecs=20",
        f"stopsignal={part.stop_signal}",
        "redirect_stderr=true",
        f"stdout_logfile={self.logs / (part.name + '.log')}",
        "stdout_logfile_maxbytes=20MB",
        "stdout_logfile_backups=2",
      ]
      if penv:
        lines.append(f"environment={penv}")
    conf = self.run / "supervisord.conf"
    conf.write_text("\n".join(line for line in lines if line) + "\n")
    return conf

  def rpc(self) -> xmlrpc.client.ServerProxy:
    """Return an XML-RPC proxy to this stack's supervisord."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{self.sock}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

  def supervisor_pid(self) -> int | None:
    """Return supervisord's pid when it runs, else None."""
    pidfile = self.run / "supervisord.pid"
    try:
      pid = int(pidfile.read_text().strip())
      os.kill(pid, 0)
      return pid
    except (OSError, ValueError):
      return None

  def running(self) -> bool:
    return self.supervisor_pid() is not None

  def status(self) -> list[dict[str, object]]:
    """Return supervisord's view of every part (name, statename, pid, uptime)."""
    if not self.running():
      return []
    try:
      return list(self.rpc().supervisor.getAllProcessInfo())  # type: ignore[arg-type]
    except (OSError, xmlrpc.client.Fault):
      return []

  def up(
    self, parts: list[Part], env: dict[str, str], progress: Callable[[str, str, float], None]
  ) -> None:
    """Start supervisord and every part in order, waiting for each to be ready."""
    if self.running():
      raise DevStackError(
        f"Bond is already running from {self.home} (see `bond status`; stop it with `bond down`)"
      )
    for part in parts:
      for port in part.ports:
        if not port_free(port):
          raise DevStackError(
            f"port {port} (for {part.name}) is already taken by another process; stop it or choose another port"
          )
    conf = self._write_conf(parts, env)
    proc = subprocess.run(
      [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
      capture_output=True,
      text=True,
      check=False,
    )
    if proc.returncode != 0:
      raise DevStackError(f"supervisord did not start: {proc.stderr.strip()[-300:]}")
    deadline = time.monotonic() + 10
    while not self.sock.exists() and time.monotonic() < deadline:
      time.sleep(0.05)
    try:
      for part in parts:
        self._start_part(part, progress)
    except BaseException:
      self.down()
      raise

  def _start_part(self, part: Part, progress: Callable[[str, str, float], None]) -> None:
    started = time.monotonic()
    progress(part.name, "starting", 0.0)
    try:
      self.rpc().supervisor.startProcess(part.name, False)
    except xmlrpc.client.Fault as err:
      raise DevStackError(f"{part.name} did not start: {err.faultString}") from err
    deadline = started + part.ready_timeout_sec
    while time.monotonic() < deadline:
      if part.ready():
        if part.on_ready is not None:
          part.on_ready()
        progress(part.name, "ready", time.monotonic() - started)
        return
      info: dict[str, object] = self.rpc().supervisor.getProcessInfo(part.name)  # type: ignore[assignment]
      if info["statename"] in ("FATAL", "EXITED", "BACKOFF"):
        tail = _tail(self.logs / f"{part.name}.log", 8)
        raise DevStackError(f"{part.name} exited while starting; last log lines:\n{tail}")
      time.sleep(0.25)
    raise DevStackError(
      f"{part.name} was not ready after {part.ready_timeout_sec:.0f}s; see {self.logs / (part.name + '.log')}"
    )

  def start_part(self, name: str) -> None:
    """Start one supervised part again (used by chaos runs)."""
    self.rpc().supervisor.startProcess(name, True)

  def stop_part(self, name: str) -> None:
    """Stop one supervised part (used by chaos runs)."""
    self.rpc().supervisor.stopProcess(name, True)

  def down(self, timeout_sec: float = 40.0) -> bool:
    """Stop every part and supervisord itself; return False when nothing was running."""
    pid = self.supervisor_pid()
    if pid is None:
      return False
    try:
      self.rpc().supervisor.stopAllProcesses(True)
      self.rpc().supervisor.shutdown()
    except (OSError, xmlrpc.client.Fault):
      os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
      try:
        os.kill(pid, 0)
      except OSError:
        break
      time.sleep(0.1)
    else:
      os.kill(pid, signal.SIGKILL)
    self.sock.unlink(missing_ok=True)
    return True


def _quote(arg: str) -> str:
  return arg if re.fullmatch(r"[\w@%+=:,./*-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def _tail(path: Path, lines: int) -> str:
  try:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
  except OSError:
    return "(no log)"


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
    "java", "-Xmx512m", f"-Dlog4j2.configurationFile={_resource('log4j2.yaml')}",
    "-cp", f"{kafka_libs()}/*", KAFKA_TOOLS[tool], *args,
  ]  # fmt: skip
  return subprocess.call(cmd)
