"""Run budgets (``max_ttc_tokens``, ``max_seconds``): a round's share travels in each ``Send``;
a round's trajectories share a `BudgetTracker`, which stops them all for a budget or the
straggler policy. Each LangGraph run (a resume, replay, fork too) has ``max_seconds`` of its own."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Literal, NotRequired

from langgraph.runtime import get_runtime
from typing_extensions import TypedDict

from pacore_graph.stragglers import StragglerPolicy, StragglerWatch, straggler_policy

BudgetName = Literal["max_ttc_tokens", "max_seconds"]
StopReason = BudgetName | Literal["straggler"]


class RoundBudget(TypedDict):
    """What a round may still spend; sent with every exploration trajectory."""

    key: str
    """The run's round, so its trajectories share one tracker."""
    deadline: float | None
    """Unix time; `RoundTrackers` moves it to ``seconds`` after its attempt's start."""
    tokens_left: int | None
    seconds: NotRequired[float | None]  # max_seconds


def quorum(min_success: int | float | None, k: int) -> int:
    """How many of a round's K trajectories must finish (a count of 0: none)."""
    if min_success is None:
        return 1
    if isinstance(min_success, float):
        # round() first so that 0.3 of 10 is 3, not 4
        return max(1, min(k, math.ceil(round(min_success * k, 9))))
    return min(k, min_success)


def round_budget(
    settings: Mapping[str, Any], started_at: float, spent: int, key: str
) -> RoundBudget | None:
    """The budget of a round that starts now, under a run's `run_settings`; None without
    budgets and straggler policy (the policy alone gets a budget without limits, to name
    the round's tracker)."""
    seconds, tokens = settings["max_seconds"], settings["max_ttc_tokens"]
    policy = straggler_policy(
        settings["straggler_quantile"],
        settings["straggler_factor"],
        settings["straggler_min_seconds"],
    )
    if seconds is None and tokens is None and policy is None:
        return None
    return RoundBudget(
        key=key,
        deadline=started_at + seconds if seconds else None,
        tokens_left=tokens - spent if tokens else None,
        seconds=seconds,
    )


class BudgetTracker:
    """One round's shared budget and stop signal in this process; thread-safe."""

    def __init__(
        self, budget: RoundBudget, stragglers: tuple[StragglerPolicy, int, int] | None = None
    ) -> None:
        self.budget = budget
        self.spent = 0
        self.reason: StopReason | None = None
        self.error: str | None = None  # what the stopped trajectories record
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self.stragglers = (
            None if stragglers is None else StragglerWatch(*stragglers, stop=self.stop_stragglers)
        )

    def seconds_left(self) -> float | None:
        deadline = self.budget["deadline"]
        return None if deadline is None else deadline - time.time()

    def check(self) -> StopReason | None:
        """Why the round stopped, if it did, marking the deadline when it passed."""
        left = self.seconds_left()
        if self.reason is None and left is not None and left <= 0:
            self._exhaust("max_seconds")
        return self.reason

    def expired(self) -> None:
        """A wait for the deadline ended (a timed wait may wake a moment before it)."""
        self._exhaust("max_seconds")

    def finished(self, tokens: int | None = None) -> None:
        """A trajectory of the round finished with a reply of ``tokens`` (None: unknown, not
        counted); the round stops when the budget is used."""
        if tokens is not None:
            with self._lock:
                self.spent += tokens
                left = self.budget["tokens_left"]
                over = left is not None and self.spent >= left
            if over:
                self._exhaust("max_ttc_tokens")
        if self.stragglers is not None:
            self.stragglers.finished()

    def stop_stragglers(self, error: str) -> None:
        """Stops the round's unfinished trajectories (unless a budget did first)."""
        self._exhaust("straggler", error)

    def on_exhausted(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Calls ``callback`` once when the round stops (at once if it has); returns an
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
    """The trackers of the rounds in flight by budget key and attempt; the oldest 4096 stay."""

    def __init__(self) -> None:
        self._trackers: OrderedDict[tuple[str, int], BudgetTracker] = OrderedDict()
        self._attempts: OrderedDict[tuple[int, str], tuple[object, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self, budget: RoundBudget, stragglers: Callable[[], tuple[StragglerPolicy, int, int] | None]
    ) -> BudgetTracker:
        """The tracker of ``budget``'s round in this attempt (a LangGraph run: its `RunControl`),
        made on first use; its deadline is ``seconds`` after its PaCoRe run's first in it."""
        attempt: object = None  # outside a run: the budget's own deadline
        with contextlib.suppress(RuntimeError):
            attempt = getattr(get_runtime(), "control", None)
        with self._lock:
            run = (id(attempt), budget["key"].rpartition(":")[0])  # key: "<run id>:<round>"
            _, start = self._attempts.setdefault(run, (attempt, time.time()))
            key = (budget["key"], id(attempt))
            if (tracker := self._trackers.get(key)) is None:
                if attempt is not None and (seconds := budget.get("seconds")):
                    budget = {**budget, "deadline": start + seconds}
                tracker = self._trackers[key] = BudgetTracker(budget, stragglers())
                for table in (self._trackers, self._attempts):
                    while len(table) > 4096:
                        table.popitem(last=False)
            return tracker
