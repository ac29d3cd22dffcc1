"""Schemathesis against the live API (uvicorn subprocess, real Kafka and Redis): no 5xx, ever.

The API runs as `uvicorn bond.gateway.app:api --factory`, configured only by
environment variables, as in production; every operation of /openapi.json gets a bounded
number of generated requests, valid and invalid.
"""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from bond.client import SyncBondClient
from bond.sim.exchange import SimExchange
from tests.conftest import ROOT, free_port
from tests.integration.test_api import LoopThread

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 25
KEY = uuid.uuid4().hex
PROJECT = f"fuzz-{KEY[:8]}"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def live_api(infra: dict[str, str]) -> Iterator[str]:
  """Run the API in a uvicorn subprocess (with the sim exchange for markets); return its URL."""
  loop = LoopThread()
  sim = SimExchange(port=0, trades_per_sec=0)
  loop.run(sim.start())
  port = free_port()
  env = {
    **os.environ,
    "KAFKA_BOOTSTRAP": infra["bootstrap"],
    "REDIS_URL": infra["redis_url"],
    "BOND_API_KEYS": f"{PROJECT}:{KEY}",
    "BOND_SECRET": uuid.uuid4().hex,
    "BOND_ENV": "dev",
    "BOND_MARKET": "sim",
    "BOND_SIM_PORT": str(sim.port),
  }
  cmd = [sys.executable, "-m", "uvicorn", "bond.gateway.app:api", "--factory"]
  cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
  proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + 60
    while True:
      assert proc.poll() is None, "the API exited during startup"
      assert time.monotonic() < deadline, "the API did not start in 60 s"
      try:
        if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
          break
      except httpx.HTTPError:
        time.sleep(0.2)
    yield url
    # The fuzzing spent the key's rate limit (BOND_API_RATE_*): the SDK waits out the 429s.
    with SyncBondClient(url, KEY, timeout_sec=30) as client:
      for stream in client.list_streams():
        client.delete_stream(stream["stream_id"])
  finally:
    proc.terminate()
    proc.wait(30)
    loop.run(sim.stop())
    loop.close()


CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def fuzz(operation: Any, mode: GenerationMode) -> int:
  """Send MAX_EXAMPLES generated requests to one operation; return how many ran."""
  ran = 0

  @given(case=operation.as_strategy(generation_mode=mode))
  @settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
  )
  def call(case: Any) -> None:
    nonlocal ran
    ran += 1
    response = case.call(headers=AUTH, timeout=30)
    case.validate_response(response, checks=CHECKS)

  call()
  return ran


def test_no_server_errors(live_api: str) -> None:
  api_schema = schemathesis.openapi.from_url(f"{live_api}/openapi.json")
  failures: list[str] = []
  ran: dict[str, int] = {}
  for result in api_schema.get_all_operations():
    operation = result.ok()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
      label = f"{operation.method.upper()} {operation.path} ({mode.value})"
      try:
        ran[label] = fuzz(operation, mode)
      except AssertionError as exc:  # schemathesis's failure groups are AssertionErrors
        failures.append(f"{label}: {exc}")
      except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, label  # nothing to break in GET /healthz
  print(f"schemathesis: {sum(ran.values())} requests over {len(ran)} operation/mode pairs")
  assert not failures, "\n\n".join(failures)
  assert len(ran) >= 11, ran
