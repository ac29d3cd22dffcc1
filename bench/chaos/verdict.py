"""The chaos run's verdict: every client's windows against the stored copies and the raw topic."""

from collections import Counter, defaultdict
from typing import Any

from bench.chaos import check
from bench.chaos.harness import Run
from bench.chaos.plan import EXCHANGES, LATENESS_MS, ON_TIME_MS, REDIS_LIVE_LATE_MS, say


def trade_exchanges(spec: dict[str, Any]) -> list[str] | None:
  """Return the exchanges a stream's trades come from, None when it reads no trades."""
  if not any(s["type"] == "ccxt" for s in spec["sources"]):
    return None
  return spec.get("exchanges") or EXCHANGES


async def verdict(
  run: Run, phases: list[tuple[str, int]], t_stop: int, summaries: dict[int, dict[str, Any]]
) -> dict[str, Any]:
  """Check every client and the stored copies; return per-phase rows and details."""
  names = [p for p, _ in phases]
  rows: dict[str, dict[str, Any]] = {n: Counter() for n in names}
  lat: dict[str, float] = defaultdict(float)
  per_client: dict[int, dict[str, Any]] = {}
  say("reading every stream's Kafka copy and Redis ring")
  kafka = await check.kafka_copies(run.stack.bootstrap, list(run.streams))
  redis = await check.redis_copies(run.stack.redis_url, list(run.streams))
  for cid, sid in run.clients.items():
    interval = run.interval_ms(cid)
    events = run.log.events.get(cid, [])
    expected_last = (t_stop - ON_TIME_MS) // interval * interval
    cont = check.continuity(events, interval, expected_last, phases)
    for phase, n in cont["lost"].items():
      rows.setdefault(phase, Counter())["lost"] += n
    for phase, n in cont["dup"].items():
      rows[phase]["dup"] += n
    summ = summaries.get(cid, {})
    for seq in summ.get("resent", []):
      rows[check.phase_of(seq, phases)]["resent"] += 1
    first = kafka[sid]["first"]
    mismatched = []
    for e in events:
      copy = first.get(e.seq)
      if copy is None:
        rows[check.phase_of(e.seq, phases)]["not_in_kafka"] += 1
      elif check.digest(copy) != e.digest:
        rows[check.phase_of(e.seq, phases)]["mismatch"] += 1
        mismatched.append(e.seq)
      phase = check.phase_of(e.seq, phases)
      lat[phase] = max(lat[phase], (e.recv_ms - e.seq) / 1000)
    per_client[cid] = {"stream_id": sid, "events": len(events), "first": cont["first"], "last": cont["last"],
                       "lost_seqs": cont["lost_seqs"], "backwards": cont.get("backwards", 0),
                       "mismatched": mismatched[:20], "resent": summ.get("resent", [])[:20],
                       "reconnects": summ.get("reconnects"), "errors": summ.get("errors", [])[:5]}  # fmt: skip
  # Redis ring against Kafka; Kafka's own re-sends.
  redis_mismatch = 0
  for sid, ring in redis.items():
    for seq, event in ring.items():
      copy = kafka[sid]["first"].get(seq)
      if copy is not None and check.digest(copy) != check.digest(event):
        redis_mismatch += 1
  kafka_resent = {sid: k["resent"] for sid, k in kafka.items() if k["resent"]}
  kafka_differing = {sid: k["differing"][:10] for sid, k in kafka.items() if k["differing"]}
  # Trade counts and volumes recomputed from the raw topic, for every window.
  say("recomputing every window of the trade streams from bond.raw.ccxt")
  trades, raw_total, raw_note = await check.raw_trades(run.stack.bootstrap)
  raw_checked, raw_bad = 0, []
  index = check.RawIndex(trades) if trades else None
  if index is not None:
    for sid, info in run.streams.items():
      exchanges = trade_exchanges(info["spec"])
      if exchanges is None:
        continue
      # The first and last windows may straddle the raw topic's ends.
      for seq in sorted(kafka[sid]["first"])[1:-1]:
        event = kafka[sid]["first"][seq]
        got = index.recount(event, exchanges, LATENESS_MS)
        raw_checked += 1
        kind = check.classify(event, got)
        if kind is None:
          continue
        phase = check.phase_of(seq, phases)
        rows[phase][kind] += 1
        raw_bad.append({"stream_id": sid, "seq": seq, "phase": phase, "kind": kind,
                        "window": [event["trades"], event["volume_sum"]], "raw": [got.n, got.vol],
                        "raw_on_time": [got.n_on_time, got.vol_on_time],
                        "missing": event.get("missing")})  # fmt: skip
  raw_dupes = check.raw_duplicates(trades) if trades else {}
  for phase, n in (check.trade_id_gaps(trades, phases) if trades else {}).items():
    rows.setdefault(phase, Counter())["trades_not_ingested"] += n
  for sid, info in run.streams.items():
    exchanges = trade_exchanges(info["spec"])
    if exchanges is not None:
      size = int(info["spec"]["interval_sec"]) * 1000
      for seq, event in kafka[sid]["first"].items():
        phase = check.phase_of(seq, phases)
        rows[phase]["trades_in_windows"] += event.get("trades") or 0
        sim_down = any(f["key"] == "sim_flap" and f["t_fault"] <= seq and seq - size <= f["t_restore"] + 2000
                       for f in run.faults)  # fmt: skip
        if event.get("trades") or sim_down or seq == min(kafka[sid]["first"]):
          continue
        found = index.recount(event, exchanges, LATENESS_MS) if index is not None else None
        kind = check.classify_empty(event, found)
        if kind is not None:
          rows[phase][kind] += 1
  # Recovery: from the end of each fault until every client got every window it had waited for.
  bounds = [start for _n, start in phases[1:]] + [t_stop]
  for fault in run.faults:
    i = next(k for k, (n, _s) in enumerate(phases) if n == fault["label"])
    lo, hi = phases[i][1], bounds[i]
    late_recv = [e.recv_ms for cid in run.clients for e in run.log.events.get(cid, [])
                 if lo <= e.recv_ms < hi and e.recv_ms - e.seq > ON_TIME_MS]  # fmt: skip
    fault["recovery_s"] = (
      round(max(0, max(late_recv) - fault["t_restore"]) / 1000, 1) if late_recv else 0.0
    )
    fault["outage_s"] = round((fault["t_restore"] - fault["t_fault"]) / 1000, 1)
  # Live must go on while Redis is down: windows ending in the outage arrive on time.
  for fault in run.faults:
    if fault["key"] != "redis_restart":
      continue
    late = [e.recv_ms - e.seq for cid in run.clients for e in run.log.events.get(cid, [])
            if fault["t_fault"] + 1000 <= e.seq <= fault["t_restore"]]  # fmt: skip
    fault["live_max_lateness_during_outage_s"] = round(max(late) / 1000, 2) if late else None
    if not late or max(late) > REDIS_LIVE_LATE_MS:
      run.problems.append(
        f"redis outage: live windows ending during the outage reached clients up to "
        f"{(max(late) / 1000 if late else float('nan')):.1f}s late (live should go on)"
      )
  for phase, value in lat.items():
    rows.setdefault(phase, Counter())["max_lateness_s"] = round(value, 2)
  return {
    "rows": {k: dict(v) for k, v in rows.items()}, "clients": per_client, "redis_mismatch": redis_mismatch,
    "kafka_resent_windows": kafka_resent, "kafka_resent_differing": kafka_differing,
    "raw": {"note": raw_note, "records": raw_total, "windows_checked": raw_checked, "mismatches": raw_bad[:50],
            "duplicate_trade_ids": raw_dupes},
  }  # fmt: skip


def table(result: dict[str, Any]) -> str:
  """Return the fault x (lost, duplicated, recovery) table as text."""
  head = f"{'fault':<32} {'lost':>5} {'dup':>5} {'outage_s':>9} {'recovery_s':>11} {'max_late_s':>11} {'mismatch':>9} {'raw_mism':>9} {'raw_late':>9} {'raw_flag':>9} {'not_ingst':>9} {'empty':>6} {'empty_fl':>9}"
  lines = [head, "-" * len(head)]
  for row in result["table"]:
    rec = "-" if row["recovery_s"] is None else f"{row['recovery_s']:.1f}"
    if row.get("not_recovered"):
      rec = "NOT RECOV"
    out = "-" if row["outage_s"] is None else f"{row['outage_s']:.1f}"
    lines.append(f"{row['fault']:<32} {row['lost']:>5} {row['dup']:>5} {out:>9} {rec:>11} {row['max_lateness_s']:>11.1f} "
                 f"{row['mismatch']:>9} {row['raw_mismatch']:>9} {row['raw_late']:>9} {row['raw_flagged']:>9} {row['trades_not_ingested']:>9} {row['empty']:>6} {row['empty_flagged']:>9}")  # fmt: skip
  return "\n".join(lines)


def report(result: dict[str, Any]) -> None:
  """Print the table, the checks and the problems."""
  print()
  print(table(result))
  print(
    "lost/dup: windows missing or received twice by any client (dup counts frames the gateway re-sent\n"
    "even though the SDK hides them); outage_s: how long the fault was held; recovery_s: from the end of\n"
    f"the fault until every client had every window it waited for (none later than {ON_TIME_MS / 1000:.1f}s after its end);\n"
    "max_late_s: worst delivery delay of a window ending in the phase; mismatch: events unlike the stream's\n"
    "Kafka copy; raw_mism / raw_flag / raw_late: windows short of trades in bond.raw.ccxt that the feed\n"
    "received before the window's deadline, claiming complete (a failure) / flagged complete: false / only\n"
    "received after the deadline (backfill, counted late); not_ingst: sim trades that never reached\n"
    "bond.raw.ccxt (gaps in trade ids); empty / empty_fl: windows of trade streams with no trade while the sim\n"
    "exchange was up (at 20 trades/s per symbol there is always one), claiming complete (a failure) / flagged;\n"
    "windows with no trade because the sim itself stamped none in them (its loop held, bond.raw.ccxt empty\n"
    "there, trade ids without a gap) are right, and listed under data gaps."
  )
  print()
  raw = result.get("raw", {})
  print(f"values: every received event compared with its stream's Kafka copy; Redis ring vs Kafka "
        f"mismatches: {result.get('redis_mismatch')}; raw recomputation: {raw.get('note')}, "
        f"{raw.get('windows_checked')} windows checked")  # fmt: skip
  if result.get("kafka_resent_windows"):
    print(
      f"windows written to Kafka twice (at-least-once, hidden from clients): {sum(result['kafka_resent_windows'].values())}"
    )
  print(f"lost {result.get('lost')}, duplicated {result.get('duplicated')}, bad values {result.get('bad_values')}; "
        f"startup {result.get('startup_sec')}s, whole run {result.get('duration_sec')}s")  # fmt: skip
  for problem in result.get("problems", []):
    print(f"PROBLEM: {problem}")
  for gap in result.get("data_gaps", []):
    print(f"DATA GAP (reported, not failed): {gap}")
  print("OK" if result.get("ok") else "FAILED")
