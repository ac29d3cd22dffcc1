"""Redis for the local stack: find (or install) `redis-server` and the command that runs it."""

import os
import shutil
import subprocess
from pathlib import Path

from bond.errors import DevStackError


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


def redis_command(port: int, data: Path) -> list[str]:
  """Return the command of a loopback redis-server keeping its data (AOF) under `data`."""
  return [
    redis_server_binary(),
    "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
    # The replay ring survives a Redis restart (append-only file, fsync each second).
    "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
    "--daemonize", "no", "--protected-mode", "yes",
  ]  # fmt: skip
