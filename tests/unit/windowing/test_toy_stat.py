"""A statistic added in a single file (toy_stat.py) appears in every window."""

import importlib
import sys

import pytest

from bond.windowing import REGISTRY
from tests.unit.windowing.helpers import FakeClock, Pipeline, heartbeat, stream, trade

T0 = 1_700_000_000_000


@pytest.fixture
def toy_stat():
  module = importlib.import_module("tests.unit.windowing.toy_stat")
  yield module
  REGISTRY.unregister("largest_trade")
  sys.modules.pop("tests.unit.windowing.toy_stat", None)


def test_a_statistic_in_one_file_appears_in_the_windows(toy_stat):
  clock = FakeClock(T0)
  spec = {
    "sources": ["ccxt"],
    "symbols": ["BTC/USDT", "ETH/USDT"],
    "interval_sec": 1,
    "exchanges": ["ex"],
  }
  d = stream("s1", spec, created_ms=T0)
  p = Pipeline(clock, [d])
  end = p.stage2._streams["s1"].next_end_ms
  p.raw(
    "ccxt", "BTC/USDT", trade(end - 900, 10.0, 2.0), trade(end - 800, 10.0, 5.0), heartbeat(end)
  )
  p.raw("ccxt", "ETH/USDT", heartbeat(end, sym="ETH/USDT"))
  (w,) = p.out.windows["s1"]
  assert w["largest_trade"] == 5.0
  assert w["by_symbol"]["BTC/USDT"]["largest_trade"] == 5.0
  assert w["by_symbol"]["ETH/USDT"]["largest_trade"] is None
  assert list(w)[list(w).index("liquidations") + 1] == "largest_trade"
