"""Is it up? One probe per service of the local stack: a TCP port, Redis, Kafka, an HTTP URL."""

import asyncio
import socket


def host_port(hostport: str, default: int) -> tuple[str, int]:
  """Split `host:port` (host defaults to 127.0.0.1, port to `default`)."""
  host, _, port = hostport.rpartition(":")
  return (host or "127.0.0.1", int(port)) if port.isdigit() else (hostport or "127.0.0.1", default)


def redis_host_port(url: str) -> tuple[str, int]:
  """Return the host and port of a `redis://[user:pass@]host:port/db` URL."""
  return host_port(url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1], 6379)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
  """Return True when nothing listens on host:port."""
  with socket.socket() as sock:
    sock.settimeout(0.3)
    return sock.connect_ex((host, port)) != 0


def redis_answers(url: str, timeout_sec: float = 1.0) -> bool:
  """Return True when a Redis server answers PING at `url`."""
  host, port = redis_host_port(url)
  try:
    with socket.create_connection((host, port), timeout=timeout_sec) as sock:
      sock.sendall(b"PING\r\n")
      return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
  except OSError:
    return False


async def kafka_ready(bootstrap: str, timeout_sec: float = 3.0) -> bool:
  """Return True when a metadata request to the broker succeeds."""
  from aiokafka.admin import AIOKafkaAdminClient
  from aiokafka.errors import KafkaError

  client = AIOKafkaAdminClient(
    bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_sec * 1000)
  )
  try:
    await asyncio.wait_for(client.start(), timeout_sec)
    await asyncio.wait_for(client.list_topics(), timeout_sec)
    return True
  except (KafkaError, OSError, TimeoutError):
    return False
  finally:
    await client.close()


def http_ok(url: str, timeout_sec: float = 1.0) -> bool:
  """Return True when GET url answers 2xx."""
  import httpx

  try:
    return httpx.get(url, timeout=timeout_sec).is_success
  except httpx.HTTPError:
    return False
