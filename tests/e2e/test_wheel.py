"""The wheel built from a fresh copy of the repository installs in a clean venv, ships `agents/`,
`gateway/` and `topics/` only as `bond.*` (one import path per module), and runs `bond`, the Faust
worker, the REST API and the WebSocket gateway against the test session's Kafka and Redis."""

import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
MAPPED = ("agents", "gateway", "topics")


def fresh_copy(dest: Path) -> Path:
  """Copy what a clone would hold (tracked and new, not ignored, files) to `dest`."""
  listed = subprocess.run(
    ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
    cwd=ROOT, capture_output=True, check=True,
  ).stdout.decode().split("\0")  # fmt: skip
  for name in filter(None, listed):
    src = ROOT / name
    if src.is_file() or src.is_symlink():
      (dest / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(src, dest / name, follow_symlinks=False)
  return dest


def wait_ready(
  proc: subprocess.Popen[bytes], url: str, log: Path, timeout_sec: float = 120
) -> None:
  """Wait until `url` answers 200 while `proc` runs; fail with its log otherwise."""
  deadline = time.monotonic() + timeout_sec
  while time.monotonic() < deadline:
    assert proc.poll() is None, f"{url}: the process exited:\n{log.read_text()[-3000:]}"
    try:
      if httpx.get(url, timeout=1).status_code == 200:
        return
    except httpx.HTTPError:
      pass
    time.sleep(0.3)
  raise AssertionError(f"{url} not ready in {timeout_sec:.0f}s:\n{log.read_text()[-3000:]}")


def test_wheel_installs_and_runs_cli_worker_api_and_gateway(infra, tmp_path):
  tree = fresh_copy(tmp_path / "clone")
  links = [str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_symlink()]
  assert not links, f"symlinks in the repository: {links}"

  dist = tmp_path / "dist"
  subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(tree)],
                 check=True, capture_output=True, timeout=300)  # fmt: skip
  wheel = next(dist.glob("bond_streams-*.whl"))
  names = set(zipfile.ZipFile(wheel).namelist())
  for module in ("bond/agents/app.py", "bond/gateway/app.py", "bond/topics/catalog.py", "bond/client.py",
                 "bond/devstack/stack.py", "bond/devstack_files/kafka-pom.xml", "bond/devstack_files/log4j2.yaml",
                 "bond/connectors/geyser.proto", "bond/py.typed"):  # fmt: skip
    assert module in names, f"{module} missing from the wheel"
  tops = {name.split("/", 1)[0] for name in names}
  assert tops == {"bond", wheel.name.split("-py3")[0] + ".dist-info"}, f"top-level entries: {tops}"

  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
  py = str(venv / "bin" / "python")
  subprocess.run([py, "-m", "pip", "install", "-q", f"{wheel}[server]"],
                 check=True, capture_output=True, timeout=900)  # fmt: skip

  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  probe = "import importlib.util as u, sys; print([n for n in sys.argv[1:] if u.find_spec(n)])"
  found = subprocess.run([py, "-c", probe, *MAPPED], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
  assert found == "[]", f"importable as top-level packages from the wheel: {found}"

  help_out = subprocess.run(
    [str(venv / "bin" / "bond"), "--help"],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    check=True,
  )
  assert "listen" in help_out.stdout and "up" in help_out.stdout

  tag = uuid.uuid4().hex[:8]
  env.update(BOND_TOPIC_PREFIX=f"w{tag}.", BOND_APP_ID=f"bond-w{tag}", BOND_FEEDS="off")
  worker_port, api_port, ws_port = free_port(), free_port(), free_port()
  uvicorn = [py, "-m", "uvicorn", "--factory", "--host", "127.0.0.1", "--no-access-log"]
  commands = {
    "worker": ([str(venv / "bin" / "faust"), "-A", "bond.agents.app", "worker", "-l", "info",
                "--web-port", str(worker_port)], f"http://127.0.0.1:{worker_port}/bond/ready"),
    "api": ([*uvicorn, "bond.gateway.app:api", "--port", str(api_port)], f"http://127.0.0.1:{api_port}/readyz"),
    "gateway": ([*uvicorn, "bond.gateway.app:gateway", "--port", str(ws_port)],
                f"http://127.0.0.1:{ws_port}/readyz"),
  }  # fmt: skip
  procs: dict[str, subprocess.Popen[bytes]] = {}
  try:
    for name, (cmd, _url) in commands.items():
      with open(tmp_path / f"{name}.log", "wb") as log:
        procs[name] = subprocess.Popen(
          cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
        )
    for name, (_cmd, url) in commands.items():
      wait_ready(procs[name], url, tmp_path / f"{name}.log")
  finally:
    for proc in procs.values():
      proc.terminate()
    for proc in procs.values():
      try:
        proc.wait(30)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_editable_install_maps_the_folders_into_bond_only(tmp_path):
  probe = (
    "import importlib.util as u, sys\n"
    "import bond.agents, bond.gateway, bond.topics\n"
    "print(bond.agents.__file__, bond.gateway.__file__, bond.topics.__file__)\n"
    "print([n for n in sys.argv[1:] if u.find_spec(n)])\n"
  )
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  out = subprocess.run([sys.executable, "-c", probe, *MAPPED], cwd=tmp_path, env=env,
                       capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
  assert out[0].split() == [str(ROOT / m / "__init__.py") for m in MAPPED]
  assert out[1] == "[]", f"importable as top-level packages: {out[1]}"
