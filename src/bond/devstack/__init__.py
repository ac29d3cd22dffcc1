"""Fetch, start and stop Bond's local stack: Kafka (KRaft, from Maven jars), Redis, and the
platform's processes, all under one supervisord that `bond down` shuts down whole.

    probes.py        is it up? (a port, Redis PING, a Kafka metadata request, an HTTP URL)
    kafka.py         Java check, Maven-fetched jars, broker properties, console tools
    redis_server.py  find or install redis-server, its command line
    supervise.py     Part (one process + readiness) and the supervisord that runs them
    stack.py         DevStack: the parts of `bond up` on their ports, with their environment
"""

from bond.devstack.kafka import KAFKA_TOOLS, KAFKA_VERSION, java_version, kafka_libs, kafka_tool
from bond.devstack.probes import http_ok, kafka_ready, port_free, redis_answers
from bond.devstack.redis_server import redis_server_binary
from bond.devstack.stack import DevStack
from bond.devstack.supervise import Part

__all__ = [
  "KAFKA_TOOLS",
  "KAFKA_VERSION",
  "DevStack",
  "Part",
  "http_ok",
  "java_version",
  "kafka_libs",
  "kafka_ready",
  "kafka_tool",
  "port_free",
  "redis_answers",
  "redis_server_binary",
]
