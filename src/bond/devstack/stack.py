"""Bond's local stack rooted at one folder: which processes it runs, on which ports, with
which environment. Supervision itself lives in `supervise.py`."""

import asyncio
import os
import sys
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

from bond.devstack.kafka import broker_command, broker_properties
from bond.devstack.probes import host_port, http_ok, kafka_ready, redis_answers
from bond.devstack.redis_server import redis_command
from bond.devstack.supervise import Part, Progress, Supervisor
from bond.errors import DevStackError


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
  def supervisor(self) -> Supervisor:
    return Supervisor(self.home)

  @property
  def logs(self) -> Path:
    return self.supervisor.logs

  @property
  def run(self) -> Path:
    return self.supervisor.run

  @property
  def sock(self) -> Path:
    return self.supervisor.sock

  # -------------------------------------------------------------- kafka and redis

  def kafka_part(self) -> Part:
    """Return a Part that runs the KRaft broker (its storage formatted the first time)."""
    props = broker_properties(self.home, self.kafka_port, self.controller_port)
    return Part(
      "kafka",
      broker_command(props, self.kafka_heap_mb, self.logs),
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
    host, port = host_port(self.redis_url.split("://", 1)[-1].split("/", 1)[0], 6379)
    if host not in ("localhost", "127.0.0.1"):
      raise DevStackError(
        f"Redis at {self.redis_url} does not answer; start it or point REDIS_URL at one that does"
      )
    data = self.home / "redis"
    data.mkdir(parents=True, exist_ok=True)
    return Part(
      "redis", redis_command(port, data), lambda: redis_answers(self.redis_url), ports=[port]
    )

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
         "--ws-per-message-deflate", "false", "--ws-max-size", "4096",
         "--timeout-graceful-shutdown", "10"],
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
      "API_PORT": str(self.api_port),  # the API's /mcp calls the API back on it
      "PYTHONUNBUFFERED": "1",
      "BOND_HOME": str(self.home),
    }
    env.update(self.env)
    return env

  # -------------------------------------------------------------- supervision

  def rpc(self) -> xmlrpc.client.ServerProxy:
    """Return an XML-RPC proxy to this stack's supervisord."""
    return self.supervisor.rpc()

  def supervisor_pid(self) -> int | None:
    """Return supervisord's pid when it runs, else None."""
    return self.supervisor.pid()

  def running(self) -> bool:
    """Return True when this stack's supervisord runs."""
    return self.supervisor.pid() is not None

  def status(self) -> list[dict[str, object]]:
    """Return supervisord's view of every part (name, statename, pid, uptime)."""
    return self.supervisor.status()

  def up(self, parts: list[Part], env: dict[str, str], progress: Progress) -> None:
    """Start supervisord and every part in order, waiting for each to be ready."""
    self.supervisor.up(parts, env, progress, self.home)

  def start_part(self, name: str) -> None:
    """Start one supervised part again (used by chaos runs)."""
    self.supervisor.start_part(name)

  def stop_part(self, name: str) -> None:
    """Stop one supervised part (used by chaos runs)."""
    self.supervisor.stop_part(name)

  def down(self, timeout_sec: float = 40.0) -> bool:
    """Stop every part and supervisord itself; return False when nothing was running."""
    return self.supervisor.down(timeout_sec)
