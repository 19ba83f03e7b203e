"""What an eval compares: PaCoRe round vectors and the baselines (one trajectory, ``sc@N``)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from pacore_graph.rounds import PRESETS, resolve_rounds

SettingKind = Literal["pacore", "single", "sc"]

_SC = re.compile(r"sc@(\d+)")


class SettingError(ValueError):
    """A baseline or round spec that names no setting."""


@dataclass(frozen=True)
class Setting:
    """One row of the results table: ``kind`` (``sc``: majority vote over N trajectories),
    a stable ``name`` for thread ids, files and rows (``pacore:32,4``, ``sc@16``), the
    ``round_vector`` (PaCoRe's with the final 1, a baseline's ``(N,)``) and the ``named``
    label ``--label`` gave it (not part of its identity: a relabelled row reuses its threads)."""

    kind: SettingKind
    name: str
    round_vector: tuple[int, ...]
    named: str | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        """How the table names it: its ``named`` label, else ``PaCoRe low``,
        ``PaCoRe [32, 4]``, ``single``, ``SC@16``."""
        if self.named:
            return self.named
        if self.kind == "pacore":
            spec = self.name.removeprefix("pacore:")
            return f"PaCoRe {spec}" if spec in PRESETS else f"PaCoRe [{spec.replace(',', ', ')}]"
        return "single" if self.kind == "single" else f"SC@{self.round_vector[0]}"

    @property
    def first_k(self) -> int:
        """Trajectories of the first round (PaCoRe) or samples (baselines)."""
        return self.round_vector[0]


def pacore_setting(spec: str) -> Setting:
    """A PaCoRe setting from a ``--rounds`` value; InvalidRoundsError if it is none."""
    vector = resolve_rounds(spec)
    text = spec.strip().lower()
    name = text if text in PRESETS else ",".join(map(str, vector[:-1]))
    return Setting("pacore", f"pacore:{name}", tuple(vector))


def baseline_setting(spec: str) -> Setting:
    """A baseline from a ``--baseline`` value, ``single`` or ``sc@N``; else SettingError."""
    text = spec.strip().lower()
    if text == "single":
        return Setting("single", "single", (1,))
    if (match := _SC.fullmatch(text)) and int(match.group(1)) >= 1:
        n = int(match.group(1))
        return Setting("sc", f"sc@{n}", (n,))
    raise SettingError(f"unknown baseline {spec!r}: use single or sc@N (N >= 1), e.g. sc@16")


def build_settings(
    rounds: Iterable[str], baselines: Iterable[str] = (), labels: Sequence[str] = ()
) -> list[Setting]:
    """Baselines first, then PaCoRe settings, each once, as Table 2 of the paper lists them;
    the n-th of ``labels`` names the n-th of ``rounds``.

    Raises:
        SettingError: No setting at all, or more labels than rounds.
        InvalidRoundsError: A bad round vector.
    """
    pacore = list(map(pacore_setting, rounds))
    if len(labels) > len(pacore):
        raise SettingError(f"{len(labels)} --label for {len(pacore)} --rounds: one label a row")
    pacore = [replace(s, named=n) for s, n in itertools.zip_longest(pacore, labels)]
    given = [*map(baseline_setting, baselines), *pacore]
    settings = list(dict.fromkeys(given))  # equal names are equal settings
    if not settings:
        raise SettingError("nothing to evaluate: give --rounds and/or --baseline")
    return settings
