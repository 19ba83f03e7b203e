"""Straggler control (opt-in, docs/stragglers.md): once ceil(q x K) of a round finished
(at least its quorum), the rest get max(factor x median finish time, min_seconds), then
are recorded ``stopped`` with an ``error`` starting ``"straggler: "``."""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from pacore_graph.trajectories import Trajectory

STOP_PREFIX = "straggler: "


class StragglerPolicy(NamedTuple):
    """The resolved straggler settings of a run."""

    quantile: float
    factor: float
    min_seconds: float


def straggler_policy(
    quantile: float | None, factor: float | None, min_seconds: float | None
) -> StragglerPolicy | None:
    """The policy of the resolved settings, or None when it is off (q None or 1)."""
    if quantile is None or quantile >= 1:
        return None
    return StragglerPolicy(float(quantile), float(factor or 0.0), float(min_seconds or 0.0))


def trigger_count(policy: StragglerPolicy, k: int, quorum: int) -> int:
    """Finished trajectories after which the wait starts: ceil(q x K), at least quorum and 1."""
    # round() first so that 0.3 of 10 is 3, not 4
    return max(1, quorum, min(k, math.ceil(round(policy.quantile * k, 9))))


def straggler_wait(policy: StragglerPolicy, finish_times: list[float]) -> tuple[float, float]:
    """(seconds to wait for the rest, the median of ``finish_times``)."""
    median = statistics.median(finish_times)
    return max(policy.factor * median, policy.min_seconds), median


def is_straggler_stop(trajectory: Trajectory) -> bool:
    """Whether a ``stopped`` record was stopped by this policy (not by a budget)."""
    return (trajectory.get("error") or "").startswith(STOP_PREFIX)


class StragglerWatch:
    """One round's policy in this process: counts finishes, then arms the stop, which is
    called once, from a timer thread, with the records' error. Thread-safe."""

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
        """Counts a finished trajectory: arms the stop at the trigger, disarms it at K."""
        with self._lock:
            self.finish_times.append(self._clock() - self.started)
            count = len(self.finish_times)
            if count == self.k and self.timer is not None:
                self.timer.cancel()  # nothing left to stop
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
