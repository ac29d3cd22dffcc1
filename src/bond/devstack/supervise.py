"""One supervisord per local stack: its config, start-in-order with readiness, stop, status.

`bond down` stops the whole stack by shutting supervisord down; chaos runs kill and restart
single parts through its XML-RPC interface.
"""

import os
import re
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bond.devstack.probes import port_free
from bond.errors import DevStackError

Progress = Callable[[str, str, float], None]


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


class Supervisor:
  """The supervisord of a stack rooted at `home` (its config, socket and pid under run/)."""

  def __init__(self, home: Path) -> None:
    self.logs = home / "logs"
    self.run = home / "run"
    self.sock = self.run / "supervisor.sock"

  def write_conf(self, parts: Iterable[Part], env: dict[str, str]) -> Path:
    """Write supervisord.conf with one program per part (started by hand, in order)."""
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
    """Return an XML-RPC proxy to this supervisord."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{self.sock}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

  def pid(self) -> int | None:
    """Return supervisord's pid when it runs, else None."""
    try:
      pid = int((self.run / "supervisord.pid").read_text().strip())
      os.kill(pid, 0)
      return pid
    except (OSError, ValueError):
      return None

  def status(self) -> list[dict[str, object]]:
    """Return supervisord's view of every part (name, statename, pid, uptime)."""
    if self.pid() is None:
      return []
    try:
      return list(self.rpc().supervisor.getAllProcessInfo())  # type: ignore[arg-type]
    except (OSError, xmlrpc.client.Fault):
      return []

  def up(self, parts: list[Part], env: dict[str, str], progress: Progress, home: Path) -> None:
    """Start supervisord and every part in order, waiting for each to be ready."""
    if self.pid() is not None:
      raise DevStackError(
        f"Bond is already running from {home} (see `bond status`; stop it with `bond down`)"
      )
    for part in parts:
      for port in part.ports:
        if not port_free(port):
          raise DevStackError(
            f"port {port} (for {part.name}) is already taken by another process; stop it or choose another port"
          )
    conf = self.write_conf(parts, env)
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

  def _start_part(self, part: Part, progress: Progress) -> None:
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
    """Start one supervised part again."""
    self.rpc().supervisor.startProcess(name, True)

  def stop_part(self, name: str) -> None:
    """Stop one supervised part."""
    self.rpc().supervisor.stopProcess(name, True)

  def down(self, timeout_sec: float = 40.0) -> bool:
    """Stop every part and supervisord itself; return False when nothing was running."""
    pid = self.pid()
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
