"""``pacore solve``'s progress on stderr: a tqdm bar per round on a terminal, else one plain
line per event, fed by the graph's custom stream and by `RetryWatcher` (retried calls)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TextIO
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from pacore_graph.retry import describe_failure
from pacore_graph.secrets import redact
from pacore_graph.trajectories import latest_trajectories

Mode = Literal["bar", "lines", "off"]
"""bar: a live line per round (a terminal); lines: one line per event; off: status only."""


def _retries(n: int) -> str:
    return f"{n} retry" if n == 1 else f"{n} retries"


@dataclass
class RoundCount:
    """What one round has done so far (in this process, plus what a resume found saved)."""

    round: int
    k: int
    finished: int = 0
    failed: int = 0
    stopped: int = 0
    tokens: int = 0
    retries: int = 0
    done: bool = False


class SolveProgress:
    """A run's progress on ``stream`` without ``secrets``, in the `Mode` ``shown``
    (``--progress``, None when not given) asks for; in ``bar`` mode a tqdm bar per round."""

    def __init__(self, stream: TextIO, shown: bool | None, secrets: list[str]) -> None:
        self.stream = stream
        self.mode: Mode = (
            "off" if shown is False else "bar" if stream.isatty() else "lines" if shown else "off"
        )
        self.secrets = secrets
        self.vector: tuple[int, ...] = ()
        self.current: RoundCount | None = None
        self.calls: RetryWatcher | None = None  # the model calls in flight, when watched
        self._bar: Any = None  # the current round's tqdm, while its line is open

    def status(self, text: str) -> None:
        """A line that is always shown (backend, thread), above any live bar."""
        text = redact(text, self.secrets)
        if self._bar is not None:
            self._bar.write(text, file=self.stream)  # clears the bar, writes, redraws it
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _event_line(self, text: str) -> None:
        if self.mode == "lines":  # no bar to write above
            self.status(text)

    def _bar_format(self, c: RoundCount) -> str:
        rounds = f"/{len(self.vector)}" if self.vector else ""
        running = self.calls.in_flight(c.round) if self.calls else 0
        parts = [
            f"round {c.round}{rounds} [{{bar:20}}] {c.finished}/{c.k}"
            + (f", {running} running" if running else ""),
            f"{c.tokens:,} tokens",
            "{elapsed_s:.1f}s",
            _retries(c.retries),
            f"{c.failed} failed",
        ]
        if c.stopped:
            parts.append(f"{c.stopped} stopped")
        return " | ".join(parts)

    def draw(self) -> None:
        """Redraws the live bar of an unfinished round (its elapsed time moves)."""
        c = self.current
        if self.mode != "bar" or c is None or c.done:
            return
        done = c.finished + c.failed + c.stopped
        if self._bar is None:
            from tqdm import tqdm  # not at import: `pacore eval --help` needs none of it

            # A terminal that never set its size reports 0 x 0: to tqdm, no room for a bar and
            # no rows to show it on. One bar is shown at a time: any size will do.
            columns = os.get_terminal_size(self.stream.fileno()).columns or 80
            self._bar = tqdm(
                total=c.k,
                initial=done,
                file=self.stream,
                bar_format=self._bar_format(c),
                ascii="-#",
                ncols=max(20, columns) - 1,
                nrows=24,
                mininterval=0,
            )
        else:
            self._bar.bar_format, self._bar.n = self._bar_format(c), done
            self._bar.refresh()

    def close(self) -> None:
        """Ends a live bar left open, so what follows starts on a new line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def answering(self) -> None:
        """The answer is printing on this terminal: the live bar stops; status lines stay."""
        if self.mode == "bar":
            self.close()
            self.mode = "off"

    def resume(self, thread: str, values: Mapping[str, Any]) -> None:
        """Says what an interrupted thread's state (``aget_state(...).values``) already holds,
        ``thread t: resuming round 2/3: 1 of 4 trajectories already saved``; seeds the round."""
        vector = tuple(values.get("round_vector") or ())
        self.vector = vector or self.vector
        r = values.get("round")
        if not isinstance(r, int) or not 1 <= r <= len(vector):
            self.status(f"thread {thread}: resuming: no trajectory was saved yet")
            return
        latest = latest_trajectories(values.get("trajectories") or [])
        finished = [t for t in latest if t["status"] == "finished"]
        current = [t for t in finished if t["round"] == r]
        earlier = len(finished) - len(current)
        self.status(
            f"thread {thread}: resuming round {r}/{len(vector)}: {len(current)} of "
            f"{vector[r - 1]} trajectories already saved"
            + (f" (+{earlier} from earlier rounds)" if earlier else "")
        )
        tokens = sum(t["completion_tokens"] or 0 for t in current)
        self.current = RoundCount(r, vector[r - 1], finished=len(current), tokens=tokens)
        self.draw()

    def event(self, event: Any) -> None:
        """One ``get_stream_writer`` event of the graph."""
        if not isinstance(event, dict):
            return
        kind, r, c = event.get("type"), event.get("round"), self.current
        if isinstance(r, int) and (kind == "round_started" or c is None or c.round != r):
            # A new round, or one whose start this process did not see (a resume).
            self.vector = tuple(event.get("round_vector") or self.vector)
            k = event.get("k") or (self.vector[r - 1] if 0 < r <= len(self.vector) else 1)
            self.close()
            c = self.current = RoundCount(r, k)
        if c is None:
            return
        if kind == "round_started":
            self._event_line(f"round {r}: {c.k} trajectories")
        elif kind == "trajectory_finished":
            c.finished += 1
            c.tokens += event.get("completion_tokens") or 0
        elif kind == "trajectory_failed":
            c.failed += 1
            self._event_line(f"round {r} #{event['index']} failed: {event['error']}")
        elif kind == "trajectory_stopped":
            c.stopped += 1
        elif kind == "round_finished":
            # The node's totals are authoritative (they include what a resume found saved).
            c.tokens = event.get("completion_tokens") or c.tokens
            c.failed, c.stopped = event.get("failed", c.failed), event.get("stopped", c.stopped)
            c.finished = max(c.finished, event["k"] - c.failed - c.stopped)
            extra = "".join(f", {event[k]} {k}" for k in ("failed", "stopped") if event.get(k))
            if c.retries:
                extra += f", {_retries(c.retries)}"
            budget = event.get("budget_exhausted")
            self._event_line(
                f"round {r} done: {event['references']} references, "
                f"{event['completion_tokens']} tokens{extra}"
                + (f"; budget {budget} ran out" if budget else "")
            )
        self.draw()  # a finished round's last redraw: its line stays
        if kind == "round_finished":
            c.done = True
            self.close()

    def retry(self, round_number: int, index: int, error: str | None) -> None:
        """A trajectory's call is being made again (LangGraph's retry policy)."""
        c = self.current
        if c is not None and c.round == round_number:
            c.retries += 1
        cause = f" after {error}" if error else ""
        self._event_line(f"round {round_number} #{index} retrying{cause}")
        self.draw()


class RetryWatcher(BaseCallbackHandler):
    """Reports a trajectory's second and later model calls as ``report(round, index, error)``,
    with the error that failed the call before."""

    run_inline = True  # called on the event loop, in order: no locking needed
    ignore_chain = True
    ignore_agent = True
    ignore_retriever = True
    ignore_custom_event = True

    def __init__(self, report: Callable[[int, int, str | None], None]) -> None:
        super().__init__()
        self.report = report
        self.calls: dict[tuple[int, int], int] = {}
        self._runs: dict[UUID, tuple[int, int]] = {}
        self._errors: dict[tuple[int, int], str] = {}

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Counts the call of a trajectory (the node tags it with its round and index)."""
        meta = metadata or {}
        r, i = meta.get("pacore_round"), meta.get("pacore_index")
        if not isinstance(r, int) or not isinstance(i, int):
            return
        key = (r, i)
        self._runs[run_id] = key
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.calls[key] > 1:
            self.report(r, i, self._errors.pop(key, None))

    def in_flight(self, round_number: int) -> int:
        """The calls of round ``round_number`` that have started and not yet ended."""
        return sum(r == round_number for r, _ in self._runs.values())

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Forgets a call that returned."""
        self._runs.pop(run_id, None)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Keeps why a call failed, for the retry that may follow."""
        key = self._runs.pop(run_id, None)
        if key is not None and isinstance(error, Exception):
            self._errors[key] = describe_failure(error)
