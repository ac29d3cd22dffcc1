"""Properties of the core: panes merge like one pass over their events; windows equal a
recomputation from the raw events."""

from hypothesis import given, settings
from hypothesis import strategies as st

from bond.windowing import Pane, compose_window
from tests.unit.windowing.helpers import FakeClock, Pipeline, stream

T0 = 1_700_000_000_000
# Dyadic prices and amounts keep float sums exact whatever the order of addition.
prices = st.integers(1, 4000).map(lambda n: n / 4)
amounts = st.one_of(st.none(), st.integers(0, 64).map(lambda n: n / 8))
kinds = st.sampled_from(["trade", "trade", "trade", "ticker", "liquidation"])


@st.composite
def ccxt_events(draw, start_ms: int = 0, span_ms: int = 10_000, max_size: int = 60):
  # Distinct timestamps: which of two trades at the same ms is the close depends on arrival.
  times = draw(
    st.lists(st.integers(start_ms, start_ms + span_ms - 1), unique=True, max_size=max_size)
  )
  return [
    {
      "kind": draw(kinds),
      "ts": ts,
      "price": draw(st.one_of(st.none(), prices) if i % 7 == 3 else prices),
      "amount": draw(amounts),
      "sim": draw(st.booleans()),
    }
    for i, ts in enumerate(times)
  ]


def one_pass(events: list[dict]) -> Pane:
  pane = Pane()
  for raw in events:
    pane.add("ccxt", raw)
  return pane


@settings(max_examples=200, deadline=None)
@given(ccxt_events(), st.data())
def test_panes_merged_in_any_grouping_and_order_equal_one_pass(events, data):
  groups = data.draw(st.lists(st.integers(0, 5), min_size=len(events), max_size=len(events)))
  panes: dict[int, Pane] = {}
  for raw, g in zip(events, groups, strict=True):
    panes.setdefault(g, Pane()).add("ccxt", raw)
  order = data.draw(st.permutations(list(panes.values())))
  # Merged as a tree too: pairs first, then the pairs together.
  left, right = Pane(), Pane()
  for i, pane in enumerate(order):
    (left if i % 2 else right).merge(pane)
  assert Pane().merge(left).merge(right) == one_pass(events)


@settings(max_examples=40, deadline=None)
@given(
  st.lists(st.integers(1, 4), min_size=1, max_size=3),
  ccxt_events(start_ms=T0, span_ms=12_000),
  ccxt_events(start_ms=T0, span_ms=12_000),
)
def test_windows_composed_from_panes_equal_a_recomputation_from_raw_events(intervals, ev_a, ev_b):
  clock = FakeClock(T0)
  specs = [
    {"sources": ["ccxt"], "symbols": ["BTC/USDT"], "interval_sec": n, "exchanges": ["a", "b"]}
    for n in intervals
  ]
  defs = [stream(f"s{i}", spec, created_ms=T0 - 10_000) for i, spec in enumerate(specs)]
  p = Pipeline(clock, defs, lateness_ms=10**8)  # complete windows only: no deadline passes
  raw = {
    "a": [dict(e, exchange="a", symbol="BTC/USDT") for e in ev_a],
    "b": [dict(e, exchange="b", symbol="BTC/USDT") for e in ev_b],
  }
  # Both feeds were up before the streams' first windows (a window starting before its
  # feed's first pane is flagged incomplete: test_stages) and live throughout, a heartbeat a
  # second (a feed silent for 10 s was not heard: its panes are unknown). A feed delivers in
  # time order (stage 1 counts an event older than a closed pane late).
  beats = [
    {"heartbeat": True, "exchange": ex, "symbol": "BTC/USDT", "ts": ts}
    for ex in ("a", "b")
    for ts in range(T0 - 10_000, T0 + 12_001, 1000)
  ]
  p.raw("ccxt", "BTC/USDT", *sorted([*beats, *raw["a"], *raw["b"]], key=lambda e: e["ts"]))
  for d in defs:
    windows = p.out.windows[d.stream_id]
    assert windows, "every stream has windows up to the feeds' progress"
    assert [w["seq"] for w in windows] == list(range(windows[0]["seq"], T0 + 12_001, d.size_ms))[
      : len(windows)
    ]
    for w in windows:
      end, start = w["seq"], w["seq"] - d.size_ms
      direct = {
        f"ccxt|{ex}|BTC/USDT": one_pass([e for e in raw[ex] if start <= e["ts"] < end])
        for ex in ("a", "b")
      }
      assert w == compose_window(d.stream_id, d.spec, d.feeds, end, direct)
      assert w["complete"] is True
