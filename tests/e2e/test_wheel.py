"""A wheel built from the repository installs in a fresh venv and runs `bond` and the Faust worker."""

import os
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import httpx

from tests.conftest import ROOT, free_port


def test_wheel_installs_and_runs_cli_and_worker(infra, tmp_path):
  dist = tmp_path / "dist"
  subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
                 check=True, capture_output=True, timeout=300)  # fmt: skip
  wheel = next(dist.glob("bond_streams-*.whl"))
  names = set(zipfile.ZipFile(wheel).namelist())
  for module in ("bond/agents/app.py", "bond/gateway/app.py", "bond/topics/catalog.py", "bond/client.py",
                 "bond/devstack_files/kafka-pom.xml", "bond/connectors/geyser.proto"):  # fmt: skip
    assert module in names, f"{module} missing from the wheel"

  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
  pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
  subprocess.run([*pip, f"{wheel}[server]"], check=True, capture_output=True, timeout=600)

  help_out = subprocess.run(
    [str(venv / "bin" / "bond"), "--help"], capture_output=True, text=True, check=True
  )
  assert Path(venv / "bin" / "faust").exists()
  assert "bond" in help_out.stdout and "listen" in help_out.stdout

  tag = uuid.uuid4().hex[:8]
  port = free_port()
  env = {
    **os.environ,
    "BOND_TOPIC_PREFIX": f"w{tag}.",
    "BOND_APP_ID": f"bond-w{tag}",
    "BOND_FEEDS": "off",
  }
  env.pop("PYTHONPATH", None)
  worker = subprocess.Popen(
    [str(venv / "bin" / "faust"), "-A", "bond.agents.app", "worker", "-l", "info", "--web-port", str(port)],
    env=env, cwd=tmp_path, stdout=open(tmp_path / "worker.log", "wb"), stderr=subprocess.STDOUT,
  )  # fmt: skip
  try:
    deadline = time.monotonic() + 90
    ready = False
    while time.monotonic() < deadline and not ready:
      assert worker.poll() is None, "the installed worker exited"
      try:
        ready = httpx.get(f"http://127.0.0.1:{port}/bond/ready", timeout=1).status_code == 200
      except httpx.HTTPError:
        time.sleep(0.3)
    assert ready, "the worker installed from the wheel never became ready"
  finally:
    worker.terminate()
    worker.wait(30)
