"""One chaos run from start to teardown: platform, streams, clients, faults, verdict, result file."""

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.chaos.faults import FAULTS
from bench.chaos.harness import (
  Run,
  clients_past,
  create_streams,
  ensure_parts_running,
  make_stack,
  start_clients,
  start_platform,
  stop_clients,
  wait_for,
  wait_recovered,
)
from bench.chaos.plan import Config, now_ms, say
from bench.chaos.verdict import verdict


async def run_chaos(cfg: Config, home: Path, results_path: Path | None = None) -> dict[str, Any]:
  """Run the whole soak-and-chaos scenario and return the result (also written to results_path)."""
  logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # readiness probes of a stopped broker
  shutil.rmtree(home, ignore_errors=True)
  home.mkdir(parents=True)  # noqa: ASYNC240
  stack, env = make_stack(home)
  run = Run(
    cfg, stack, f"http://127.0.0.1:{stack.api_port}", f"ws://127.0.0.1:{stack.ws_port}", env
  )
  t_start = time.monotonic()
  result: dict[str, Any] = {"config": cfg.__dict__, "home": str(home), "ok": False}
  try:
    say(f"{cfg.name}: starting the platform under {home}")
    result["startup_sec"] = round(await start_platform(stack, env), 1)
    await create_streams(run)
    kinds = Counter(i["kind"] for i in run.streams.values())
    ivals = Counter(i["spec"]["interval_sec"] for i in run.streams.values())
    say(
      f"{len(run.streams)} streams ({dict(kinds)}; intervals {dict(ivals)}); starting {cfg.clients} SDK clients"
    )
    start_clients(run, home)
    t0 = now_ms()
    if not await wait_for(lambda: not clients_past(run, t0), 90, 0.5):
      raise RuntimeError(f"clients without a first window after 90 s: {clients_past(run, t0)[:10]}")
    say(
      f"every client receives windows ({(now_ms() - t0) / 1000:.1f}s); baseline soak {cfg.baseline_sec:.0f}s"
    )
    phases: list[tuple[str, int]] = [("baseline", 0)]
    await asyncio.sleep(cfg.baseline_sec)
    for key in cfg.faults:
      label, inject = FAULTS[key]
      say(f"fault: {label}")
      t_inject = now_ms()
      phases.append((label, t_inject))
      try:
        rec = await inject(run)
      except Exception as err:
        run.problems.append(f"{label}: injecting failed: {type(err).__name__}: {err}")
        rec = {"t_fault": t_inject, "t_restore": now_ms(), "error": str(err)}
      waited, stragglers = await wait_recovered(run, rec["t_restore"])
      rec.update(key=key, label=label, recovered_sec=waited, stragglers=stragglers[:20])
      if waited is None:
        run.problems.append(
          f"{label}: {len(stragglers)} clients got no new window within {cfg.recover_timeout_sec:.0f}s"
        )
      say(f"  recovered: every client has a window that ended after the recovery, {waited}s after it"
          if waited is not None else f"  NOT recovered: {len(stragglers)} clients still waiting")  # fmt: skip
      await ensure_parts_running(run, label)
      run.faults.append(rec)
      await asyncio.sleep(cfg.settle_sec)
    phases.append(("final soak", now_ms()))
    await asyncio.sleep(cfg.final_sec)
    t_stop = now_ms()
    summaries = await asyncio.to_thread(stop_clients, run)
    checked = await verdict(run, phases, t_stop, summaries)
    rows = []
    for (name, _start), key in zip(phases, ["baseline", *cfg.faults, "final"], strict=False):
      r = checked["rows"].get(name, {})
      fault = next((f for f in run.faults if f["label"] == name), None)
      rows.append({
        "fault": name, "key": key, "lost": r.get("lost", 0), "dup": r.get("dup", 0) + r.get("resent", 0),
        "dup_sdk_visible": r.get("dup", 0), "resent_hidden_by_sdk": r.get("resent", 0),
        "outage_s": fault.get("outage_s") if fault else None,
        "recovery_s": fault.get("recovery_s") if fault else None,
        "new_window_after_s": fault["recovered_sec"] if fault else None,
        "not_recovered": bool(fault and fault["recovered_sec"] is None),
        "max_lateness_s": r.get("max_lateness_s", 0.0), "mismatch": r.get("mismatch", 0),
        "not_in_kafka": r.get("not_in_kafka", 0), "raw_mismatch": r.get("raw_mismatch", 0), "raw_late": r.get("raw_late", 0), "raw_flagged": r.get("raw_flagged", 0), "empty_flagged": r.get("empty_flagged", 0),
        "trades_in_windows": r.get("trades_in_windows", 0), "empty": r.get("empty", 0), "empty_sim_idle": r.get("empty_sim_idle", 0), "trades_not_ingested": r.get("trades_not_ingested", 0),
      })  # fmt: skip
    result.update(checked)
    result["table"] = rows
    result["faults"] = run.faults
    lost = sum(r["lost"] for r in rows)
    dup = sum(r["dup"] for r in rows)
    # Failures: a window lost or duplicated, a client's copy differing from the stream's own
    # Kafka/Redis copy, a trade published twice to the raw topic. Data gaps are reported,
    # not failed: windows short of trades that reached the worker after the window's
    # deadline (counted in `late`, as ARCHITECTURE.md's lateness rule says), split by whether the
    # feed itself got them late (backfilled after a reconnect) or on time (the worker was
    # behind: a fault's backlog on two shared cores); empty windows; trades never ingested.
    bad_values = sum(r["mismatch"] + r["not_in_kafka"] for r in rows) + checked["redis_mismatch"]
    if checked["kafka_resent_differing"]:
      run.problems.append(
        f"windows re-sent to Kafka with different values: {checked['kafka_resent_differing']}"
      )
    if checked["raw"]["duplicate_trade_ids"]:
      run.problems.append(
        f"trades present twice in bond.raw.ccxt (counted twice): {checked['raw']['duplicate_trade_ids']}"
      )
    # A window short of trades its feed received on time must say so (`complete: false`,
    # `missing`); one that claims to be complete and is short fails the run.
    unflagged = {r["fault"]: r["raw_mismatch"] for r in rows if r["raw_mismatch"]}
    if unflagged:
      run.problems.append(
        f"windows claiming complete but short of on-time trades (vs bond.raw.ccxt): {unflagged}"
      )
    empty_unflagged = {r["fault"]: r["empty"] for r in rows if r["empty"]}
    if empty_unflagged:
      run.problems.append(
        f"windows claiming complete without any trade while the sim exchange traded: {empty_unflagged}"
      )
    gaps = []
    for field, what in [
      (
        "raw_flagged",
        "windows short of on-time trades, flagged complete: false (sent before every feed passed)",
      ),
      ("empty_flagged", "windows without any trade, flagged complete: false"),
      (
        "empty_sim_idle",
        "windows without any trade because the sim stamped none in them (its loop held)",
      ),
      (
        "raw_late",
        "windows short only of trades backfilled after their lateness (late by contract)",
      ),
      (
        "trades_not_ingested",
        "exchange trades never ingested into bond.raw.ccxt (sim trade-id gaps)",
      ),
    ]:
      by_fault = {r["fault"]: r[field] for r in rows if r[field]}
      if by_fault:
        gaps.append(f"{what}: {by_fault}")
    result["data_gaps"] = gaps
    result["lost"], result["duplicated"], result["bad_values"] = lost, dup, bad_values
    result["ok"] = lost == 0 and dup == 0 and bad_values == 0 and not run.problems
  except BaseException as err:
    run.problems.append(f"run aborted: {type(err).__name__}: {err}")
    raise
  finally:
    result["problems"] = run.problems
    result["duration_sec"] = round(time.monotonic() - t_start, 1)
    for proc in run.procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    if run.extra_worker is not None and run.extra_worker.poll() is None:
      os.killpg(run.extra_worker.pid, signal.SIGTERM)
      try:
        run.extra_worker.wait(20)
      except subprocess.TimeoutExpired:
        os.killpg(run.extra_worker.pid, signal.SIGKILL)
        run.extra_worker.wait()
    say("tearing the platform down")
    await asyncio.to_thread(stack.down)
    if results_path is not None:
      results_path.parent.mkdir(parents=True, exist_ok=True)
      results_path.write_text(json.dumps(result, indent=1, default=str))  # noqa: ASYNC240
  return result
