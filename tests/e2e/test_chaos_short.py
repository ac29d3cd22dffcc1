"""The short soak-and-chaos run (`python -m bench.chaos --short`) in the normal suite: a whole
private platform in sim mode, SDK clients, and worker kill -9, gateway kill -9, Redis and Kafka
restarts, a second worker joining and one of the two leaving, the sim exchange flapping. No client
may lose or see a duplicated window, every value must match the stored copies, and no trade may be
published twice to the raw topic (each feed runs on one worker at a time, and moves).
A window short of trades its feed received on time must say so (`complete: false`): one that
claims to be complete fails the run (a problem); flagged ones are reported (data_gaps).

The benchmark runs as its own process, as `make chaos` runs it; the test reads its result file.
"""

import json
import shutil
import signal
import subprocess
import sys

import pytest

from bond.devstack import DevStack
from tests.conftest import ROOT

RUN_TIMEOUT_SEC = 1000
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(RUN_TIMEOUT_SEC + 200)]


def test_short_chaos_run_loses_and_duplicates_nothing(tmp_path):
  home, out, log = tmp_path / "chaos", tmp_path / "chaos-short.json", tmp_path / "chaos.out"
  cmd = [sys.executable, "-m", "bench.chaos", "--short", "--home", str(home), "--out", str(out)]
  with open(log, "w") as sink:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    try:
      proc.wait(RUN_TIMEOUT_SEC)
    except subprocess.TimeoutExpired:
      proc.send_signal(signal.SIGINT)  # the run tears its platform down on the way out
      proc.wait(120)
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
      DevStack(home=home).down()  # idempotent: nothing of the run is left running
  report = f"python -m bench.chaos --short exited {proc.returncode}:\n{log.read_text()[-6000:]}"
  assert out.exists(), report
  result = json.loads(out.read_text())
  rows = {row["key"]: row for row in result.get("table", [])}
  assert {
    "worker_kill9",
    "gateway_kill9",
    "redis_restart",
    "worker_join",
    "worker_leave",
  } <= rows.keys(), report
  lost = {k: r["lost"] for k, r in rows.items() if r["lost"]}
  dup = {k: r["dup"] for k, r in rows.items() if r["dup"]}
  assert not lost and not dup, f"windows lost {lost}, duplicated {dup}\n{report}"
  # Every client's events equal the stream's own Kafka and Redis copies. How complete the
  # values are around a fault (vs a recount of the raw topic) is reported in data_gaps.
  assert result["bad_values"] == 0, (
    f"events differ from their stream's Kafka/Redis copies\n{report}"
  )
  assert not result["problems"], "\n".join(result["problems"])
  assert all(row["recovery_s"] is not None for row in result["table"][1:-1]), report
  assert proc.returncode == 0, report
  shutil.rmtree(home, ignore_errors=True)  # Kafka and Redis data of the run
