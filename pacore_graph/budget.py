"""Run budgets (``max_ttc_tokens``, ``max_seconds``): what is left, and whom to stop when it
runs out.

The round's share of the budget travels in each trajectory's ``Send`` payload, so a
resumed run keeps the same deadline. Within one process the K trajectories of a round
share a `BudgetTracker`: the trajectory whose tokens use up the budget stops its siblings
at once. The tracker is also the round's stop signal for the straggler policy
(`pacore_graph.stragglers`).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

from typing_extensions import TypedDict

from pacore_graph.context import PaCoReContext
from pacore_graph.stragglers import StragglerPolicy, StragglerWatch, straggler_policy

BudgetName = Literal["max_ttc_tokens", "max_seconds"]
StopReason = BudgetName | Literal["straggler"]
"""Why a round's tracker stopped its trajectories: a budget ran out, or the straggler policy."""


class RoundBudget(TypedDict):
    """What a round may still spend; sent with every exploration trajectory."""

    key: str
    """Identifies the round of the run, so its trajectories share one tracker."""
    deadline: float | None
    """Unix time after which trajectories stop."""
    tokens_left: int | None
    """Completion tokens the round may still use."""


def quorum(min_success: int | float | None, k: int) -> int:
    """How many of a round's K trajectories must finish; a count of 0 always goes on, as the
    reference did."""
    if min_success is None:
        return 1
    if isinstance(min_success, float):
        # round() first so that 0.3 of 10 is 3, not 4
        return max(1, min(k, math.ceil(round(min_success * k, 9))))
    return min(k, min_success)


def round_budget(
    settings: PaCoReContext, started_at: float, spent: int, key: str
) -> RoundBudget | None:
    """The budget of a round that starts now; None when no budget is set and the straggler
    policy is off (with the policy alone, a budget without limits names the round's
    tracker, which stops the stragglers)."""
    policy = straggler_policy(
        settings.straggler_quantile, settings.straggler_factor, settings.straggler_min_seconds
    )
    if settings.max_seconds is None and settings.max_ttc_tokens is None and policy is None:
        return None
    return RoundBudget(
        key=key,
        deadline=started_at + settings.max_seconds if settings.max_seconds else None,
        tokens_left=settings.max_ttc_tokens - spent if settings.max_ttc_tokens else None,
    )


def exhausted(
    settings: PaCoReContext, started_at: float, spent: int, now: float | None = None
) -> BudgetName | None:
    """Which budget is used up after ``spent`` tokens, if any."""
    if settings.max_ttc_tokens is not None and spent >= settings.max_ttc_tokens:
        return "max_ttc_tokens"
    now = time.time() if now is None else now
    if settings.max_seconds is not None and now >= started_at + settings.max_seconds:
        return "max_seconds"
    return None


class BudgetTracker:
    """One round's shared budget and stop signal in this process; thread-safe, for sync and
    async trajectories."""

    def __init__(
        self, budget: RoundBudget, stragglers: tuple[StragglerPolicy, int, int] | None = None
    ) -> None:
        self.budget = budget
        self.spent = 0
        self.reason: StopReason | None = None
        self.error: str | None = None
        """What the stopped trajectories record as their ``error``."""
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self.stragglers = (
            None if stragglers is None else StragglerWatch(*stragglers, stop=self.stop_stragglers)
        )

    def seconds_left(self) -> float | None:
        deadline = self.budget["deadline"]
        return None if deadline is None else deadline - time.time()

    def check(self) -> StopReason | None:
        """Why the round stopped (a budget ran out, or the straggler policy), marking the
        deadline when it passed."""
        left = self.seconds_left()
        if self.reason is None and left is not None and left <= 0:
            self._exhaust("max_seconds")
        return self.reason

    def add(self, tokens: int | None) -> None:
        """Counts a finished trajectory's tokens; stops the others when the budget is used.
        An unknown count (None, or negative) adds nothing."""
        if tokens is None or tokens < 0:
            return
        with self._lock:
            self.spent += tokens
            over = self.budget["tokens_left"] is not None and (
                self.spent >= self.budget["tokens_left"]
            )
        if over:
            self._exhaust("max_ttc_tokens")

    def finished(self) -> None:
        """A trajectory of the round finished with a reply: the straggler policy counts it."""
        if self.stragglers is not None:
            self.stragglers.finished()

    def stop_stragglers(self, error: str) -> None:
        """Stops the round's unfinished trajectories for the straggler policy (unless a
        budget stopped them first); ``error`` is what their records say."""
        self._exhaust("straggler", error)

    def on_exhausted(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Calls ``callback`` once when the budget runs out (at once if it has); returns an
        unsubscribe function."""
        with self._lock:
            if self.reason is None:
                self._listeners.append(callback)
                return lambda: self._unsubscribe(callback)
        callback()
        return lambda: None

    def _unsubscribe(self, callback: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def _exhaust(self, reason: StopReason, error: str | None = None) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason, self.error = reason, error or f"budget {reason} ran out"
            listeners, self._listeners = self._listeners, []
        for callback in listeners:
            callback()


class RoundTrackers:
    """The trackers of the rounds in flight, by their budget's key, so that the K
    trajectories of a round share one; the oldest of more than ``keep`` are dropped (their
    rounds are long finished)."""

    def __init__(self, keep: int = 4096) -> None:
        self._trackers: OrderedDict[str, BudgetTracker] = OrderedDict()
        self._lock = threading.Lock()
        self._keep = keep

    def get(
        self,
        budget: RoundBudget,
        stragglers: Callable[[], tuple[StragglerPolicy, int, int] | None] = lambda: None,
    ) -> BudgetTracker:
        """The tracker of ``budget``'s round, created on first use with the straggler
        policy, K and trigger count that ``stragglers`` gives then (None: off)."""
        with self._lock:
            tracker = self._trackers.get(budget["key"])
            if tracker is None:
                tracker = self._trackers[budget["key"]] = BudgetTracker(budget, stragglers())
                while len(self._trackers) > self._keep:
                    self._trackers.popitem(last=False)
            return tracker
