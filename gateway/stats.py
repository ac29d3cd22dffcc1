"""The gateway's Prometheus collector: plain-int counters read at scrape time."""

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class _Counted(Protocol):
  open: int
  msgs_out: int
  replayed: int
  history_replays: int
  dropped: int
  closes: dict[int, int]

  def fanout_stats(self) -> dict[str, int]: ...


class GatewayStats(Collector):
  """Exposes a gateway's counters (no stream or project names) to Prometheus."""

  def __init__(self, gateway: _Counted) -> None:
    self._gateway = gateway

  def collect(self) -> Iterator[Metric]:
    """Yield the current values."""
    g = self._gateway
    fan = g.fanout_stats()
    yield GaugeMetricFamily("bond_gateway_connections", "open WebSocket sessions", value=g.open)
    yield CounterMetricFamily("bond_gateway_messages_out", "frames delivered", value=g.msgs_out)
    yield CounterMetricFamily(
      "bond_gateway_replayed", "frames delivered from the ring or history", value=g.replayed
    )
    yield CounterMetricFamily(
      "bond_gateway_history_replays",
      "replays that read the stream's Kafka topic (from older than the ring)",
      value=g.history_replays,
    )
    yield CounterMetricFamily("bond_gateway_dropped", "sockets closed as too slow", value=g.dropped)
    closes = CounterMetricFamily("bond_gateway_closes", "sockets closed by code", labels=["code"])
    for code, n in sorted(g.closes.items()):
      closes.add_metric([str(code)], n)
    yield closes
    yield GaugeMetricFamily("bond_fanout_topics", "stream topics assigned", value=fan["topics"])
    yield CounterMetricFamily("bond_fanout_records", "Kafka records read", value=fan["records"])
