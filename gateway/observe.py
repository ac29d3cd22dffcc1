"""The REST API's Prometheus metrics and the middleware that counts and times every request."""

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bond.gateway.errors import MAX_BODY_BYTES, body_too_large, error_response
from bond.registry import StreamRecord

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class ApiMetrics:
  """Prometheus metrics of one API app, in its own registry."""

  def __init__(self) -> None:
    self.registry = CollectorRegistry(auto_describe=True)
    self.requests = Counter(
      "bond_api_requests",
      "HTTP requests answered, by route template and status",
      ["method", "route", "status"],
      registry=self.registry,
    )
    self.latency = Histogram(
      "bond_api_request_duration_seconds",
      "Time to answer an HTTP request",
      ["method", "route"],
      registry=self.registry,
    )
    self.streams = Gauge(
      "bond_api_streams", "Registered streams, by project", ["owner"], registry=self.registry
    )

  def render(self, records: list[StreamRecord], with_projects: bool = True) -> bytes:
    """Return the text exposition; without projects the streams gauge has one `*` owner."""
    counts: dict[str, int] = {}
    for rec in records:
      owner = rec.owner if with_projects else "*"
      counts[owner] = counts.get(owner, 0) + 1
    self.streams.clear()
    for owner, n in counts.items():
      self.streams.labels(owner=owner).set(n)
    return generate_latest(self.registry)


class ObserveMiddleware:
  """Count and time every request by route template, and refuse declared oversized bodies."""

  def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
    self.app = app
    self.metrics = metrics

  async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
      await self.app(scope, receive, send)
      return
    started = time.perf_counter()
    status = 500

    async def send_status(message: Message) -> None:
      nonlocal status
      if message["type"] == "http.response.start":
        status = message["status"]
      await send(message)

    try:
      declared = dict(scope["headers"]).get(b"content-length", b"")
      if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        err = body_too_large()
        await error_response(err.http_status, err.code, err.message)(scope, receive, send_status)
      else:
        await self.app(scope, receive, send_status)
    finally:
      route = getattr(scope.get("route"), "path", None) or "unmatched"
      method = scope["method"] if scope["method"] in _METHODS else "OTHER"
      self.metrics.requests.labels(method=method, route=route, status=str(status)).inc()
      self.metrics.latency.labels(method=method, route=route).observe(time.perf_counter() - started)
