"""A production-mode API (and gateway) against hostile callers, on real Kafka, Redis and uvicorn.

/metrics names no project without a key; a project over its request rate gets 429 with
Retry-After while others go on; tokens have one spelling, and refresh with
revoke_previous, deletion and re-creation retire the older ones (open sockets included);
the per-project stream limit holds across two API replicas; compiling is bounded in time.
"""

import asyncio
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from bond import wire
from bond.config import Settings
from tests.integration.gateways import GatewayServer, wait_until
from tests.integration.test_api import ApiServer, assert_error, settings_for, spec_for
from tests.integration.test_gateway_limits import close_code, still_open

pytestmark = pytest.mark.integration

SECRET = "prod-secret-" + uuid.uuid4().hex + uuid.uuid4().hex
TAG = uuid.uuid4().hex[:8]
PROJECTS = {name: f"key-{name}-{uuid.uuid4().hex}" for name in ("alpha", "beta", "gamma", "delta")}
PROJECT = {name: f"{name}-{TAG}" for name in PROJECTS}


async def markets(exchange_id: str, settings: Settings) -> set[str]:
  return {"BTC/USDT", "ETH/USDT"}


def prod_settings(infra: dict[str, str], **over: Any) -> Settings:
  keys = ",".join(f"{PROJECT[name]}:{key}" for name, key in PROJECTS.items())
  values: dict[str, Any] = {
    "bond_env": "prod",
    "bond_secret": SECRET,
    "bond_api_keys": keys,
    "bond_api_rate_per_sec": 5.0,
    "bond_api_rate_burst": 10,
    "bond_max_streams": 3,
  }
  return settings_for(infra, 0, **{**values, **over})


@pytest.fixture(scope="module")
def prod_api(infra: dict[str, str]) -> Iterator[ApiServer]:
  server = ApiServer(prod_settings(infra), market_loader=markets).start()
  yield server
  server.stop()


def client_of(api: ApiServer, name: str | None) -> httpx.AsyncClient:
  headers = {"Authorization": f"Bearer {PROJECTS[name]}"} if name else {}
  return httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30)


async def delete_all(http: httpx.AsyncClient) -> None:
  for _ in range(20):  # bounded, and patient with the rate limit
    listed = await http.get("/v1/streams")
    if listed.status_code == 429:
      await asyncio.sleep(int(listed.headers["retry-after"]))
      continue
    for stream in listed.json()["streams"]:
      await http.delete(f"/v1/streams/{stream['stream_id']}")
    return


async def test_metrics_without_a_key_omit_project_names(prod_api: ApiServer) -> None:
  async with client_of(prod_api, "alpha") as alpha, client_of(prod_api, None) as anonymous:
    created = await alpha.post("/v1/streams", json=spec_for("BTC/USDT"))
    assert created.status_code == 201, created.text
    try:
      for headers in ({}, {"Authorization": "Bearer not-a-key"}):
        bare = await anonymous.get("/metrics", headers=headers)
        assert bare.status_code == 200
        assert PROJECT["alpha"] not in bare.text and TAG not in bare.text
        assert 'bond_api_streams{owner="*"}' in bare.text
      keyed = await alpha.get("/metrics")
      assert f'bond_api_streams{{owner="{PROJECT["alpha"]}"}} 1.0' in keyed.text
      # An unauthenticated REST call is refused outright.
      assert_error(await anonymous.get("/v1/streams"), 401, "Authorization: Bearer")
    finally:
      await delete_all(alpha)


async def test_over_the_request_rate_answers_429_with_retry_after(prod_api: ApiServer) -> None:
  async with client_of(prod_api, "beta") as beta, client_of(prod_api, "gamma") as gamma:
    answers = await asyncio.gather(*(beta.get("/v1/streams") for _ in range(30)))
    codes = [r.status_code for r in answers]
    assert codes.count(200) >= 10 and codes.count(429) >= 10, codes
    limited = next(r for r in answers if r.status_code == 429)
    assert_error(limited, 429, "BOND_API_RATE_PER_SEC")
    assert limited.json()["error"]["code"] == "rate_limited"
    retry = int(limited.headers["retry-after"])
    assert 1 <= retry <= 2
    # Another project's bucket is its own.
    assert (await gamma.get("/v1/streams")).status_code == 200
    await asyncio.sleep(retry)
    assert (await beta.get("/v1/streams")).status_code == 200


async def test_refresh_revoke_delete_and_recreate_retire_older_tokens(
  infra: dict[str, str], prod_api: ApiServer
) -> None:
  gateway = await GatewayServer(prod_settings(infra)).start()
  body = spec_for("ETH/USDT", interval_sec=2)
  async with client_of(prod_api, "delta") as delta:
    try:
      first = (await delta.post("/v1/streams", json=body)).json()
      sid, t1 = first["stream_id"], first["token"]
      t2 = (await delta.post(f"/v1/streams/{sid}/token")).json()["token"]
      open_on_t1 = await websockets.connect(gateway.url(sid, t1))
      async with websockets.connect(gateway.url(sid, t2)) as ws:
        assert await still_open(ws, 0.5)  # a plain refresh keeps earlier tokens valid
      # One spelling: the leading-zero twin of a valid token is refused.
      head, exp, epoch, mac = t2.split(".")
      async with websockets.connect(gateway.url(sid, f"{head}.0{exp}.{epoch}.{mac}")) as ws:
        code, reason = await close_code(ws)
      assert code == wire.BAD_TOKEN and "malformed" in reason
      revoked = await delta.post(f"/v1/streams/{sid}/token", json={"revoke_previous": True})
      assert revoked.status_code == 200, revoked.text
      t3 = revoked.json()["token"]
      code, reason = await close_code(open_on_t1)
      assert code == wire.BAD_TOKEN and "revoked" in reason
      for old in (t1, t2):
        async with websockets.connect(gateway.url(sid, old)) as ws:
          code, reason = await close_code(ws)
        assert code == wire.BAD_TOKEN and "revoked" in reason
      bad = await delta.post(f"/v1/streams/{sid}/token", json={"revoke_previous": "yes"})
      assert_error(bad, 422, "revoke_previous")
      on_t3 = await websockets.connect(gateway.url(sid, t3))
      assert await still_open(on_t3, 0.5)
      assert (await delta.delete(f"/v1/streams/{sid}")).status_code == 200
      assert (await close_code(on_t3))[0] == wire.NO_STREAM
      again = await delta.post("/v1/streams", json=body)
      assert again.status_code == 201 and again.json()["stream_id"] == sid  # same id
      await wait_until(lambda: gateway.gateway.registry.get(sid) is not None)
      for old in (t1, t2, t3):
        async with websockets.connect(gateway.url(sid, old)) as ws:
          code, reason = await close_code(ws)
        assert code == wire.BAD_TOKEN and "revoked" in reason, (code, reason)
      async with websockets.connect(gateway.url(sid, again.json()["token"])) as ws:
        assert await still_open(ws, 0.5)
    finally:
      await delete_all(delta)
      await gateway.stop()


async def test_the_stream_limit_holds_across_two_api_replicas(infra: dict[str, str]) -> None:
  tag = uuid.uuid4().hex[:8]
  keys = f"replicas-{tag}:key-{tag}"
  conf = prod_settings(infra, bond_api_keys=keys, bond_api_rate_burst=100)
  one, two = (ApiServer(conf, market_loader=markets).start() for _ in range(2))
  auth = {"Authorization": f"Bearer key-{tag}"}
  try:
    async with (
      httpx.AsyncClient(base_url=one.url, headers=auth, timeout=60) as a,
      httpx.AsyncClient(base_url=two.url, headers=auth, timeout=60) as b,
    ):
      bodies = [spec_for("BTC/USDT", interval_sec=i) for i in range(1, 9)]
      answers = await asyncio.gather(
        *((a if i % 2 else b).post("/v1/streams", json=body) for i, body in enumerate(bodies))
      )
      codes = sorted(r.status_code for r in answers)
      assert codes == [201] * 3 + [429] * 5, [r.text[:120] for r in answers]
      assert_error(next(r for r in answers if r.status_code == 429), 429, "BOND_MAX_STREAMS")
      for http in (a, b):
        await wait_until(lambda http=http: _count(http, 3), 15)
      await delete_all(a)
      # Freed slots are usable from the other replica.
      assert (await b.post("/v1/streams", json=bodies[0])).status_code == 201
      await delete_all(b)
  finally:
    one.stop()
    two.stop()


async def _count(http: httpx.AsyncClient, want: int) -> bool:
  return (await http.get("/v1/streams")).json()["count"] == want


async def test_compiling_is_bounded_in_time(infra: dict[str, str]) -> None:
  conf = prod_settings(infra, bond_compile_timeout_sec=1e-6)
  server = ApiServer(conf, market_loader=markets).start()
  try:
    async with client_of(server, "alpha") as alpha:
      sentence = {"natural_language": "BTC price and tweets every 5 seconds " * 20}
      resp = await alpha.post("/v1/compile", json=sentence)
      assert_error(resp, 422, "BOND_COMPILE_TIMEOUT_SEC")
      assert (await alpha.get("/healthz")).status_code == 200
      # A spec needs no compiling: unaffected.
      assert (await alpha.post("/v1/compile", json=spec_for("BTC/USDT"))).status_code == 200
  finally:
    server.stop()


@pytest.mark.parametrize(
  ("env", "needle"),
  [
    ({"BOND_SECRET": SECRET}, "BOND_API_KEYS is empty"),
    ({"BOND_SECRET": "too-short", "BOND_API_KEYS": "a:b"}, "BOND_SECRET is shorter than 32 bytes"),
    ({"BOND_SECRET": "dev-secret-change-me", "BOND_API_KEYS": "a:b"}, "BOND_SECRET is the default"),
    (
      {"BOND_SECRET": SECRET, "BOND_SECRET_PREVIOUS": "old", "BOND_API_KEYS": "a:b"},
      "BOND_SECRET_PREVIOUS is shorter than 32 bytes",
    ),
  ],
)
async def test_services_refuse_to_start_in_production_on_unsafe_settings(
  infra: dict[str, str], env: dict[str, str], needle: str
) -> None:
  base = {k: v for k, v in os.environ.items() if not k.startswith("BOND_")}
  base.update(KAFKA_BOOTSTRAP=infra["bootstrap"], REDIS_URL=infra["redis_url"], BOND_ENV="prod")
  bin_dir = Path(sys.executable).parent
  commands = {
    "api": [sys.executable, "-m", "uvicorn", "bond.gateway.app:api", "--factory", "--port", "0"],
    "gateway": [
      sys.executable,
      "-m",
      "uvicorn",
      "bond.gateway.app:gateway",
      "--factory",
      "--port",
      "0",
    ],
    "worker": [str(bin_dir / "faust"), "-A", "bond.agents.app", "worker", "--without-web"],
  }
  for name, cmd in commands.items():
    proc = await asyncio.create_subprocess_exec(
      *cmd, env={**base, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0, name
    text = err.decode()
    assert needle in text, (name, text[-500:])
    if name != "worker":  # uvicorn's factories print one line, no traceback
      lines = text.strip().splitlines()
      assert len(lines) == 1 and lines[0].startswith(f"bond {name}: refusing to start: {needle}")
