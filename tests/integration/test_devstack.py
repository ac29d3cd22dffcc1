"""`bond up` on a bad environment: a one-line cause, a non-zero exit, nothing left running."""

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bond.devstack import DevStack, port_free

BOND = str(Path(sys.executable).parent / "bond")


def run_bond(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
  full = {**os.environ, "BOND_ENV": "dev", **env}
  return subprocess.run(
    [BOND, *args], capture_output=True, text=True, env=full, timeout=120, check=False
  )


def assert_nothing_left(home: Path, *ports: int) -> None:
  assert not DevStack(home=home).running(), "supervisord must not be left running"
  for port in ports:
    assert port_free(port), f"port {port} is still bound"


def test_port_already_taken(tmp_path):
  with socket.socket() as busy:
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    result = run_bond(
      "up", "--infra-only", BOND_HOME=str(tmp_path), KAFKA_BOOTSTRAP=f"127.0.0.1:{port}"
    )
  assert result.returncode == 1
  assert f"port {port}" in result.stderr and "already taken" in result.stderr
  assert_nothing_left(tmp_path)


def test_java_missing(tmp_path):
  bindir = Path(sys.executable).parent
  result = run_bond("up", "--infra-only", BOND_HOME=str(tmp_path), PATH=str(bindir))
  assert result.returncode == 1
  assert "Java is missing" in result.stderr and "install" in result.stderr


def test_maven_unreachable(tmp_path):
  fake = tmp_path / "bin"
  fake.mkdir()
  mvn = fake / "mvn"
  mvn.write_text(
    "#!/bin/sh\necho '[ERROR] Could not transfer artifact org.apache.kafka:kafka_2.13: Connection refused' >&2\nexit 1\n"
  )
  mvn.chmod(mvn.stat().st_mode | stat.S_IEXEC)
  path = f"{fake}:{os.environ['PATH']}"
  result = run_bond(
    "up",
    "--infra-only",
    BOND_HOME=str(tmp_path / "home"),
    BOND_CACHE=str(tmp_path / "cache"),
    PATH=path,
  )
  assert result.returncode == 1
  assert (
    "Maven could not fetch Kafka's jars" in result.stderr and "Connection refused" in result.stderr
  )
  assert not (tmp_path / "cache" / "kafka-4.3.1" / "libs").exists(), (
    "a failed fetch must not look like a cache"
  )
  assert_nothing_left(tmp_path / "home")


def test_redis_unreachable(tmp_path):
  result = run_bond(
    "up",
    "--infra-only",
    BOND_HOME=str(tmp_path),
    KAFKA_BOOTSTRAP="127.0.0.1:19492",
    REDIS_URL="redis://127.0.0.5:16999",
  )
  assert result.returncode == 1
  assert "does not answer" in result.stderr
  assert_nothing_left(tmp_path, 19492, 19493)


def test_second_bond_up_while_one_runs(infra):
  home = Path(infra["home"])
  if not DevStack(home=home).running():
    pytest.skip("the test Kafka/Redis were started by another run; nothing of ours to collide with")
  result = run_bond("up", "--infra-only", BOND_HOME=str(home))
  assert result.returncode == 1
  assert "already running" in result.stderr
  assert DevStack(home=home).running(), "the running stack must be left alone"
