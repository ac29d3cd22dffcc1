"""Benchmark the WebSocket gateway against a bare `websockets` broadcast server.

    python -m bench.gateway [--quick]

1. Deliveries/s: the same N subscribers (500) get the same bursts of ~600 B AggregatedEvent
   frames from the gateway (Kafka -> fan-out -> sockets) and from a bare `websockets`
   server that broadcasts what a publisher socket sends it; rounds alternate between the
   two. Reported: the ratio of the best wall-clock rates (target >= 0.8) and the ratio of
   deliveries per server CPU-second (on a small machine the clients, not the servers, may
   set the wall-clock rate; `client_bound` says so).
2. Delivery delay with 5,000 subscribers on one stream: each event carries the time it was
   produced to Kafka (`raw_data.bench_t`); delay = receive time - that time; p99 < 250 ms.
   The same clients then get the same events from the bare server, as a baseline.
3. First-replayed-event latency: connect with `from=now-60s` to a stream whose Redis ring
   holds 60 windows; time from the connect call to the first frame (p50/p99), for a stream
   the gateway already reads and for the first listener of a stream (cold).

Servers run as their own processes (the gateway under `uvicorn --factory`); the clients run
in 4 subprocesses (`--role client`, JSON lines on stdin/stdout). Everything is on 127.0.0.1
and every wait is bounded. Results go to bench/results/gateway.json, logs to .bond/bench/logs.
"""
