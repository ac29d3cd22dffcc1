"""Soak and chaos: the whole platform in sim mode, many streams and SDK clients, faults one at a time.

    python -m bench.chaos            # 50 streams, 200 clients, every fault (make chaos)
    python -m bench.chaos --short    # 8 streams, 20 clients, the CI fault set

A private platform (Kafka, Redis, sim exchange, Faust worker, REST API, gateway under one
supervisord, on free ports) gets streams of mixed sources and intervals; client processes
listen with `BondClient.listen` and record every event. Faults are injected one at a time,
each followed by a wait until every client receives a window that ended after the recovery.
At the end every client's `seq` must be continuous (no window lost, none duplicated, counting
frames the gateway re-sent even though the SDK hides them), every event must equal the
stream's own Kafka copy (and its Redis copy while it is in the ring), and sampled windows'
trade counts and volumes must match a recomputation from `bond.raw.ccxt`.

Prints a table fault x (lost, duplicated, recovery seconds), writes bench/results/chaos.json
(chaos-short.json for --short) and exits 1 on any loss, duplicate or failed check.
"""
