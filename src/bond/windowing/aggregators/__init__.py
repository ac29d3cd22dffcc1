"""The statistics of a window, one file each; importing this package registers them.

Each file registers its statistic when imported; the import order below is the order of
the output fields, which AggregatedEvent fixes. A new statistic is one file ending in
`register(MyStat())`, imported once (here, or by whoever adds it).
"""

from bond.windowing.aggregators.base import (
  REGISTRY,
  Aggregator,
  OutField,
  Registry,
  Scope,
  register,
)

from bond.windowing.aggregators.ohlc import Ohlc, OhlcState, PriceStats  # isort: skip
from bond.windowing.aggregators.vwap import Vwap  # isort: skip
from bond.windowing.aggregators.volume import Volume  # isort: skip
from bond.windowing.aggregators.trades import TradeCount  # isort: skip
from bond.windowing.aggregators.tweets import Tweets  # isort: skip
from bond.windowing.aggregators.liquidations import Liquidations  # isort: skip
from bond.windowing.aggregators.onchain import OnchainCounts  # isort: skip
from bond.windowing.aggregators.custom import CustomCount  # isort: skip

__all__ = [
  "REGISTRY",
  "Aggregator",
  "CustomCount",
  "Liquidations",
  "Ohlc",
  "OhlcState",
  "OnchainCounts",
  "OutField",
  "PriceStats",
  "Registry",
  "Scope",
  "TradeCount",
  "Tweets",
  "Volume",
  "Vwap",
  "register",
]
