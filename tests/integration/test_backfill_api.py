"""Backfill through the REST API: what a create or compile asks for, its bounds, its progress."""

# ruff: noqa: F811  (the module fixtures of test_api are imported, then requested by name)

import httpx
import pytest

from tests.integration.test_api import (  # noqa: F401  (module fixtures)
  api,
  assert_error,
  client,
  project_pool,
  projects,
  sim,
)

pytestmark = pytest.mark.integration


async def test_compile_reports_the_backfill_and_the_id_ignores_it(
  client: httpx.AsyncClient,
) -> None:
  plain = (await client.post("/v1/compile", json={"natural_language": "SOL price every 3s"})).json()
  assert plain["backfill_sec"] is None
  resp = await client.post(
    "/v1/compile", json={"natural_language": "SOL price every 3s for the last hour"}
  )
  assert resp.status_code == 200, resp.text
  assert resp.json() == {**plain, "backfill_sec": 3600}
  by_field = await client.post(
    "/v1/compile", json={"natural_language": "SOL price every 3s", "backfill": "30m"}
  )
  assert by_field.json()["backfill_sec"] == 1800


async def test_backfill_bounds_and_bad_durations_are_422(client: httpx.AsyncClient) -> None:
  body = {"natural_language": "BTC price every 5s"}
  assert_error(
    await client.post("/v1/streams", json={**body, "backfill": "7h"}), 422, "BOND_MAX_BACKFILL_SEC"
  )
  assert_error(await client.post("/v1/streams", json={**body, "backfill": "soon"}), 422, "backfill")
  assert_error(await client.post("/v1/streams", json={**body, "backfill": [1]}), 422, "backfill")
  both = {"natural_language": "BTC price every 5s for the last hour", "backfill": "2h"}
  assert_error(await client.post("/v1/streams", json=both), 422, "give one")
  assert (await client.get("/v1/streams")).json()["count"] == 0


async def test_create_with_backfill_stores_it_and_shows_progress(client: httpx.AsyncClient) -> None:
  spec = {"sources": ["ccxt"], "symbols": ["ETH/USDT"], "interval_sec": 2}
  resp = await client.post("/v1/streams", json={"spec": spec, "backfill": "2m"})
  assert resp.status_code == 201, resp.text
  sid = resp.json()["stream_id"]
  assert resp.json()["backfill_sec"] == 120
  got = (await client.get(f"/v1/streams/{sid}")).json()
  assert got["backfill_sec"] == 120
  assert got["backfill"]["requested_sec"] == 120
  assert got["backfill"]["state"] in ("pending", "running", "done")  # no worker in this module
  again = await client.post("/v1/streams", json={"spec": spec})
  assert again.status_code == 200 and again.json()["stream_id"] == sid
