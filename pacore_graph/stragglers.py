"""Straggler control (opt-in): stop a round's slowest trajectories instead of waiting for them.

A round waits for its slowest trajectory, and reasoning lengths are heavy-tailed, so the
tail sets a run's wall time. With ``straggler_quantile`` q < 1, once the round's
*trigger* count of trajectories has finished — ceil(q x K), raised to the round's quorum
(``min_success``) so that a stop never leaves a round below it — the round waits at most

    max(straggler_factor x median, straggler_min_seconds)

for the rest, then stops them: they are recorded ``stopped`` with an ``error`` starting
``"straggler: "`` and the run goes on to the next round (a budget instead skips to the
final synthesis). ``median`` is the median finish time, from the round's start, of the
trajectories that reached the trigger. Failed trajectories count toward neither.

One `StragglerWatch` per round and process rides on the round's
`pacore_graph.budget.BudgetTracker`; its clock starts with the round's first trajectory
in this process. A round resumed in another process restarts the policy with what is
left (fewer than the trigger left: it waits for all). The final round is never cut.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from pacore_graph.trajectories import Trajectory

STOP_PREFIX = "straggler: "
"""How a straggler stop's ``error`` starts, which tells it from a budget's."""


class StragglerPolicy(NamedTuple):
    """The resolved straggler settings of a run."""

    quantile: float
    """q in (0, 1): the fraction of K that must finish before the wait starts."""
    factor: float
    """f >= 0: the wait is at most f x the median finish time ..."""
    min_seconds: float
    """... or this many seconds, whichever is longer."""


def straggler_policy(
    quantile: float | None, factor: float | None, min_seconds: float | None
) -> StragglerPolicy | None:
    """The policy of the resolved settings, or None when it is off (q None or 1)."""
    if quantile is None or quantile >= 1:
        return None
    return StragglerPolicy(float(quantile), float(factor or 0.0), float(min_seconds or 0.0))


def trigger_count(policy: StragglerPolicy, k: int, quorum: int) -> int:
    """Finished trajectories after which the wait starts: ceil(q x K), at least the quorum
    and 1, at most K."""
    # round() first so that 0.3 of 10 is 3, not 4 (as `pacore_graph.budget.quorum`)
    return max(1, quorum, min(k, math.ceil(round(policy.quantile * k, 9))))


def straggler_wait(policy: StragglerPolicy, finish_times: list[float]) -> tuple[float, float]:
    """(seconds to wait for the rest, the median finish time) once ``finish_times`` (seconds
    from the round's start) reached the trigger."""
    median = statistics.median(finish_times)
    return max(policy.factor * median, policy.min_seconds), median


def is_straggler_stop(trajectory: Trajectory) -> bool:
    """Whether a ``stopped`` record was stopped by this policy (not by a budget)."""
    return (trajectory.get("error") or "").startswith(STOP_PREFIX)


class StragglerWatch:
    """One round's policy in this process: counts finishes, then arms the stop.

    Thread-safe; ``stop`` is called once, from a timer thread, with the records' error.
    """

    def __init__(
        self,
        policy: StragglerPolicy,
        k: int,
        trigger: int,
        stop: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy, self.k, self.trigger = policy, k, trigger
        self._stop, self._clock = stop, clock
        self.started = clock()
        self.finish_times: list[float] = []
        self.timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def finished(self) -> None:
        """A trajectory of the round finished (with a reply): arms the stop at the trigger,
        disarms it when the whole round finished."""
        with self._lock:
            self.finish_times.append(self._clock() - self.started)
            count = len(self.finish_times)
            if count == self.k and self.timer is not None:
                self.timer.cancel()  # nothing left to stop
                return
            if count != self.trigger or count == self.k:
                return
            wait, median = straggler_wait(self.policy, self.finish_times)
            error = (
                f"{STOP_PREFIX}stopped {wait:.3g} s after {count} of {self.k} trajectories "
                f"({100 * count / self.k:.0f}%) finished, their median in {median:.3g} s"
            )
            self.timer = threading.Timer(wait, self._stop, args=(error,))
            self.timer.daemon = True
            self.timer.name = "pacore-stragglers"
            self.timer.start()
