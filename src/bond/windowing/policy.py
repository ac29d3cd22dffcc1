"""When a window may go out: one watermark policy, every emission rule in one place.

A window goes out the moment every feed of its stream has progressed past its end (each
feed's watermark is the end of its last closed pane). Until then the policy decides, as
Flink's bounded-out-of-orderness watermarks with idleness do, whether to keep waiting or
to send the window incomplete (`complete: false`, `missing: [feed ids]`). The rules, in the
order they are applied (the first that answers decides):

| rule | decides | why | the fault that needs it |
|---|---|---|---|
| R1 lateness | wait until end + `BOND_LATENESS_MS` | events arrive out of order and panes close a little after their end | every feed, always (bounded out-of-orderness) |
| R2 unsettled | wait | partitions are moving or tables recovering: this worker may not own the stream, its state may be stale | a worker joining or leaving (rebalance) |
| R3 recovery grace | wait `RECOVERY_GRACE_MS` (max(15 s, 2 x lateness)) after the worker settled, for streams with history | the worker replays what it had not committed and the moved feeds restart and backfill; sending first would send windows short of those trades | worker kill -9 and restart; a second worker joining; one of two leaving |
| R4 max wait | emit once `MAX_WAIT_MS` (30 s) passed since the latest of: window end, settling, input resuming | a feed that keeps sending panes but stays behind (a huge backlog) must not hold its streams forever | a feed catching up after an outage; a worker far behind |
| R5 input stalled | wait while no closed pane reached this worker for `BOND_LATENESS_MS` | when nothing at all arrives the worker's own input is stalled (Kafka away), not every feed dead: sending would send empty windows | Kafka broker outage |
| R6 resume grace | wait `RESUME_GRACE_MS` (max(5 s, 2 x lateness)) after input resumes from a stall of `STALL_MS` | every feed's backlog is still on its way (producers reconnect, stage 1 reads what piled up): no feed can be judged dead yet | Kafka broker outage (the minutes after) |
| R7 idleness | emit when every feed still behind has been silent for `BOND_LATENESS_MS` (counting from the latest of its last pane, the window end, settling) | a dead feed must not hold its streams; a live one is waited for | an exchange dying or flapping; a feed dying mid-pane (its partial pane goes in) |

Otherwise wait. What waiting trades away: during R3, R5 and R6 a window can go out up to
`MAX_WAIT_MS` after the worker could have sent it, in exchange for not sending windows empty
that their feeds are about to fill; every window sent before all its feeds passed its end is
flagged `complete: false` with the feeds it lacks.
"""

from dataclasses import dataclass

from bond.config import Settings


@dataclass(frozen=True, slots=True)
class Decision:
  """The policy's answer for one window: emit now, or wait and ask again at `recheck_ms`."""

  emit: bool
  recheck_ms: int = 0
  rule: str = ""


class WatermarkPolicy:
  """Decides when an incomplete window must go out (see the module docstring's table).

  It holds the worker-level facts the rules need: since when the worker is settled, when
  the last closed pane arrived, when input resumed after a stall. Times are wall-clock ms
  passed in by the caller (the injected clock).
  """

  def __init__(
    self,
    lateness_ms: int = 1000,
    pane_ms: int = 1000,
    recovery_grace_ms: int | None = None,
    max_wait_ms: int = 30_000,
    resume_grace_ms: int | None = None,
    stall_ms: int | None = None,
    stall_recheck_ms: int = 100,
  ) -> None:
    self.lateness_ms = lateness_ms
    self.pane_ms = pane_ms
    self.recovery_grace_ms = (
      max(15_000, 2 * lateness_ms) if recovery_grace_ms is None else recovery_grace_ms
    )
    self.max_wait_ms = max_wait_ms
    self.resume_grace_ms = (
      max(5_000, 2 * lateness_ms) if resume_grace_ms is None else resume_grace_ms
    )
    # A stall is input silent for two panes (every live feed closes one a second).
    self.stall_ms = max(lateness_ms, 2 * pane_ms) if stall_ms is None else stall_ms
    self.stall_recheck_ms = stall_recheck_ms
    self.settled_since_ms: int | None = None
    self.last_input_ms = 0
    self.resumed_ms = 0

  @classmethod
  def from_settings(cls, settings: Settings) -> "WatermarkPolicy":
    """Return the policy configured by BOND_LATENESS_MS and BOND_PANE_MS."""
    return cls(lateness_ms=settings.bond_lateness_ms, pane_ms=settings.bond_pane_ms)

  # ------------------------------------------------------------------ worker-level facts

  def settled(self, now_ms: int) -> None:
    """Note that partitions are assigned and tables recovered (from now, if not already)."""
    if self.settled_since_ms is None:
      self.settled_since_ms = now_ms

  def unsettled(self) -> None:
    """Note that a rebalance or table recovery is under way."""
    self.settled_since_ms = None

  @property
  def is_settled(self) -> bool:
    """Return whether the worker is settled."""
    return self.settled_since_ms is not None

  def input_seen(self, now_ms: int) -> None:
    """Note that a closed pane reached the worker (its input flows)."""
    if self.last_input_ms and now_ms - self.last_input_ms >= self.stall_ms:
      self.resumed_ms = now_ms
    self.last_input_ms = now_ms

  # ------------------------------------------------------------------ the decision

  def decide(
    self, end_ms: int, behind_seen_ms: list[int], has_history: bool, now_ms: int
  ) -> Decision:
    """Return whether a window ending at end_ms, with feeds still behind, must go out now.

    `behind_seen_ms` holds, per feed still behind, when its last closed pane arrived (0:
    never); `has_history` whether any feed of the stream ever delivered a pane here.
    """
    if now_ms < end_ms + self.lateness_ms:
      return Decision(False, end_ms + self.lateness_ms, "R1 lateness")
    settled = self.settled_since_ms
    if settled is None:
      return Decision(False, now_ms + self.stall_recheck_ms, "R2 unsettled")
    if has_history and now_ms < settled + self.recovery_grace_ms:
      return Decision(False, settled + self.recovery_grace_ms, "R3 recovery grace")
    deadline = max(end_ms, settled, self.resumed_ms) + self.max_wait_ms
    if now_ms >= deadline:
      return Decision(True, 0, "R4 max wait")
    if self.last_input_ms and now_ms - self.last_input_ms >= self.lateness_ms:
      return Decision(False, min(deadline, now_ms + self.stall_recheck_ms), "R5 input stalled")
    if now_ms < self.resumed_ms + self.resume_grace_ms:
      return Decision(
        False, min(deadline, self.resumed_ms + self.resume_grace_ms), "R6 resume grace"
      )
    if not behind_seen_ms:
      return Decision(True, 0, "complete")
    since = max(settled, end_ms)
    idle_at = max(max(seen, since) + self.lateness_ms for seen in behind_seen_ms)
    if now_ms >= idle_at:
      return Decision(True, 0, "R7 idleness")
    return Decision(False, min(deadline, idle_at), "R7 feeds alive")
