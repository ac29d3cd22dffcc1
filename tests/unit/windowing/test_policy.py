"""The watermark policy, one row per fault of the chaos run: when does an incomplete window go out?

Each row replays what the worker sees around a window ending at END (lateness 1 s): when it
settles (partition assignment), when closed panes of any feed arrive (its input flows),
when the lagging feed's last pane arrived. The expected time is when the window, still
missing that feed, must go out; None: never within a minute.
"""

from dataclasses import dataclass, field

import pytest

from bond.windowing import WatermarkPolicy

END = 1_000_000
STEP = 10


@dataclass
class Row:
  fault: str
  expected_ms: int | None  # relative to END
  rule: str  # the rule that held the window last -> the rule that let it go
  settled_at: int = -600_000  # relative to END; None-like gaps via `unsettled`
  unsettled: tuple[int, int] | None = None  # (from, to): a rebalance, relative to END
  input_gap: tuple[int, int] | None = None  # (from, to): no closed pane reaches the worker
  feed_seen: list[int] = field(default_factory=lambda: [-5000])  # the lagging feed's panes
  history: bool = True  # the stream had panes on this worker before


ROWS = [
  Row("dead feed (exchange down), others alive", 1000, "R1 lateness -> R7 idleness"),
  Row("feed dying mid-pane (partials go in)", 1000, "R1 lateness -> R7 idleness", feed_seen=[-300]),
  Row(
    "feed flapping: back 500 ms after the end, still behind",
    1500,
    "R7 feeds alive -> R7 idleness",
    feed_seen=[-300, 500],
  ),
  Row(
    "feed alive but far behind (a pane every second)",
    30_000,
    "R7 feeds alive -> R4 max wait",
    feed_seen=list(range(-5000, 60_000, 1000)),
  ),
  Row(
    "worker kill -9 and restart (state restored)",
    12_000 + 15_000,
    "R3 recovery grace -> R7 idleness",
    settled_at=12_000,
  ),
  Row(
    "restart: a brand-new stream does not wait for the grace",
    13_000,
    "R7 feeds alive -> R7 idleness",
    settled_at=12_000,
    history=False,
  ),
  Row(
    "second worker joining (rebalance 2 s)",
    3_000 + 15_000,
    "R3 recovery grace -> R7 idleness",
    unsettled=(1_000, 3_000),
  ),
  Row(
    "one of two workers leaving (rebalance 8 s)",
    9_000 + 15_000,
    "R3 recovery grace -> R7 idleness",
    unsettled=(1_000, 9_000),
  ),
  Row(
    "Kafka outage 20 s: input stalls, then the backlogs get a resume grace",
    20_000 + 5_000,
    "R6 resume grace -> R7 idleness",
    input_gap=(-500, 20_000),
  ),
  Row(
    "Kafka outage 40 s: the max wait bounds the stall",
    30_000,
    "R5 input stalled -> R4 max wait",
    input_gap=(-500, 40_000),
  ),
  Row(
    "Kafka outage then the feed alive behind: max wait counts from the resume",
    12_000 + 30_000,
    "R7 feeds alive -> R4 max wait",
    input_gap=(-500, 12_000),
    feed_seen=[*range(-5000, 0, 1000), *range(12_000, 60_000, 1000)],
  ),
]


def first_emission(row: Row) -> tuple[int | None, str]:
  policy = WatermarkPolicy(lateness_ms=1000, pane_ms=1000)
  seen, held_by = 0, ""
  if row.settled_at < -10_000:
    policy.settled(END + row.settled_at)
  feed_seen = sorted(END + s for s in row.feed_seen)
  for now in range(END - 10_000, END + 60_000, STEP):
    rel = now - END
    if row.unsettled and row.unsettled[0] <= rel < row.unsettled[1]:
      policy.unsettled()
    elif rel >= row.settled_at:
      policy.settled(now)
    if not (row.input_gap and row.input_gap[0] <= rel < row.input_gap[1]) and rel % 1000 == 0:
      policy.input_seen(now)  # other feeds close a pane a second
    while feed_seen and feed_seen[0] <= now:
      seen = feed_seen.pop(0)
    if rel < 0:
      continue
    decision = policy.decide(END, [seen], row.history, now)
    if decision.emit:
      return rel, f"{held_by} -> {decision.rule}"
    held_by = decision.rule
    assert decision.recheck_ms >= now or decision.rule.startswith("R2"), decision
  return None, ""


@pytest.mark.parametrize("row", ROWS, ids=[r.fault for r in ROWS])
def test_incomplete_window_goes_out_when_the_rule_says(row: Row) -> None:
  at, rule = first_emission(row)
  assert (at, rule) == (row.expected_ms, row.rule)


def test_complete_windows_need_no_decision_and_recheck_times_are_exact() -> None:
  policy = WatermarkPolicy(lateness_ms=500, pane_ms=1000)
  policy.settled(0)
  assert policy.decide(END, [], True, END + 500).emit
  wait = policy.decide(END, [END - 100], True, END + 100)
  assert (wait.emit, wait.recheck_ms, wait.rule) == (False, END + 500, "R1 lateness")
