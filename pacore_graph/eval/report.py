"""Statistics and outputs: accuracy with a 95% interval, mean TTC, the paper-style table
(Markdown and CSV), the accuracy-vs-TTC plot, and the per-problem rows. What is measured,
and how the interval is computed: docs/eval.md, "What is measured"."""

from __future__ import annotations

import csv
import functools
import itertools
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacore_graph.eval._deps import require
from pacore_graph.eval.runner import EvalResult
from pacore_graph.eval.settings import Setting

ALL = "all"
"""The category name of the whole benchmark."""
UNCATEGORIZED = "uncategorized"
"""The column of the problems without a category, when others have one."""

FILES = {
    "rows": "results.jsonl",
    "pool": "pool.jsonl",
    "markdown": "table.md",
    "csv": "table.csv",
    "plot": "accuracy_vs_ttc.png",
    "manifest": "manifest.json",
    "wall": "wall_time.md",
}
"""What `write_report` writes into the output folder."""


@functools.cache
def t_quantile_975(df: int) -> float:
    """Student's t 97.5% quantile, exact to 1e-9: bisection on the closed form of
    P(|T| < sqrt(df) tan θ) (Abramowitz & Stegun 26.7.3-4, a finite series in θ)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    odd, low, high = df % 2, 0.0, math.pi / 2
    for _ in range(45):
        theta = (low + high) / 2
        c2, term, total = math.cos(theta) ** 2, math.cos(theta) if odd else 1.0, 0.0
        for k in range(1, df // 2 + 1):
            total, term = total + term, term * (2 * k - 1 + odd) / (2 * k + odd) * c2
        inside = math.sin(theta) * total
        inside = 2 / math.pi * (theta + inside) if odd else inside
        low, high = (theta, high) if inside < 0.95 else (low, theta)
    return math.sqrt(df) * math.tan((low + high) / 2)


def interval(pass_rates: Sequence[float]) -> tuple[float, float] | None:
    """95% interval, in percent, of the mean of per-problem pass rates (each in [0, 1]);
    None for fewer than two problems."""
    if len(pass_rates) < 2:
        return None
    mean = statistics.fmean(pass_rates)
    half = t_quantile_975(len(pass_rates) - 1) * statistics.stdev(pass_rates)
    half /= math.sqrt(len(pass_rates))
    return max(0.0, 100 * (mean - half)), min(100.0, 100 * (mean + half))


def format_ttc(tokens: float | None) -> str:
    """TTC as the paper writes it, in thousands: ``243k``, ``4.2k``, ``0.44k``."""
    if tokens is None:
        return "n/a"
    k = tokens / 1000
    return f"{k:.0f}k" if k >= 10 else f"{k:.1f}k" if k >= 1 else f"{k:.2f}k"


@dataclass
class SettingStats:
    """One setting on one ``category`` (`ALL`: all problems). ``accuracy``: pass@1 averaged
    over runs, in percent (``ci``: its 95% interval or None; ``run_accuracies``: each run's).
    ``mean_ttc``: mean TTC per problem over the rows that did not fail. Per round, None where
    no row has it: the mean answer ``agreement`` and ``cross_checking`` markers per trajectory.
    ``dropped``: references left out to fit ``context_limit``. ``emergent``: rows right while
    every input of the last synthesis was wrong, of ``all_inputs_wrong`` such rows.
    ``errors``: rows that failed (graded wrong)."""

    setting: Setting
    category: str
    problems: int
    runs: int
    accuracy: float
    ci: tuple[float, float] | None
    run_accuracies: list[float]
    mean_ttc: float | None
    agreement: list[float | None]
    cross_checking: list[float | None]
    dropped: int
    emergent: int
    all_inputs_wrong: int
    errors: int

    @property
    def emergent_rate(self) -> float | None:
        """``emergent / all_inputs_wrong``: how often synthesis was right with no right input."""
        return self.emergent / self.all_inputs_wrong if self.all_inputs_wrong else None

    @property
    def cell(self) -> str:
        """The paper's table cell: ``acc (TTC k)``."""
        return f"{self.accuracy:.1f} ({format_ttc(self.mean_ttc)})"


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _stats(setting: Setting, category: str, rows: list[dict[str, Any]], runs: int) -> SettingStats:
    by_problem: dict[str, list[bool]] = {}
    by_run: dict[int, list[bool]] = {}
    for row in rows:
        by_problem.setdefault(str(row["request_id"]), []).append(bool(row["correct"]))
        by_run.setdefault(row["run"], []).append(bool(row["correct"]))
    pass_rates = [statistics.fmean(v) for v in by_problem.values()]
    ttcs = [row["ttc_tokens"] for row in rows if row["ttc_tokens"] is not None]

    def per_round(key: str) -> list[float | None]:
        rounds = itertools.zip_longest(*(row.get(key) or [] for row in rows))  # None-padded
        return [_mean([v for v in values if v is not None]) for values in rounds]

    return SettingStats(
        setting=setting,
        category=category,
        problems=len(by_problem),
        runs=runs,
        accuracy=100 * statistics.fmean(pass_rates) if pass_rates else 0.0,
        ci=interval(pass_rates),
        run_accuracies=[100 * statistics.fmean(by_run[r]) for r in sorted(by_run)],
        mean_ttc=_mean(ttcs),
        agreement=per_round("agreement"),
        cross_checking=per_round("cross_checking"),
        dropped=sum(row.get("dropped_references") or 0 for row in rows),
        emergent=sum(1 for row in rows if row.get("emergent")),
        all_inputs_wrong=sum(1 for row in rows if row.get("all_inputs_wrong")),
        errors=sum(1 for row in rows if row.get("error")),
    )


def category_of(category: str | None) -> str:
    """The column a problem's (or row's) category counts in, `UNCATEGORIZED` for none."""
    return UNCATEGORIZED if category is None else category


def categories(result: EvalResult) -> list[str]:
    """The table's columns: `ALL`, then each category in file order, when any is named;
    problems without a category then have their own column, `UNCATEGORIZED`, so the
    columns add up to `ALL`."""
    if all(p.category is None for p in result.problems):
        return [ALL]
    return [ALL, *dict.fromkeys(category_of(p.category) for p in result.problems)]


def summarize(result: EvalResult) -> list[SettingStats]:
    """Stats of every setting on all problems and on each category, setting-major."""
    stats = []
    for setting in result.settings:
        rows = [r for r in result.rows if r["setting"] == setting.name]
        for category in categories(result):
            subset = [r for r in rows if category in (ALL, category_of(r.get("category")))]
            stats.append(_stats(setting, category, subset, result.runs))
    return stats


def wall_stats(result: EvalResult) -> dict[str, dict[str, Any]]:
    """How long each setting took, by name in table order (see `EvalResult.timings`):
    problem-runs ``timed``; ``mean``, ``median`` and ``max`` wall seconds of one (None when
    none was timed); their ``trajectories``, the ``stopped`` ones and ``stopped_fraction``
    (what the time saved cost), rounded for ``manifest.json``."""
    out = {}
    for setting in result.settings:
        timings = [t for t in result.timings if t["setting"] == setting.name]
        seconds = [t["wall_seconds"] for t in timings]
        count = sum(t["trajectories"] for t in timings)
        stopped = sum(t["stopped"] for t in timings)
        median = statistics.median(seconds) if seconds else None
        times = {"mean": _mean(seconds), "median": median, "max": max(seconds, default=None)}
        out[setting.name] = {
            "timed": len(seconds),
            **{k: None if v is None else round(v, 3) for k, v in times.items()},
            "trajectories": count,
            "stopped": stopped,
            "stopped_fraction": round(stopped / count, 4) if count else None,
        }
    return out


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]


def _ttc(stats: SettingStats) -> str:
    return "n/a" if stats.mean_ttc is None else f"{stats.mean_ttc:,.0f}"


def wall_table(stats: Sequence[SettingStats], walls: Mapping[str, Mapping[str, Any]]) -> str:
    """Accuracy and mean TTC (all problems) beside the wall time of a problem-run and the
    trajectories stopped (`wall_stats`), one row per setting."""
    header = ["setting", "accuracy %", "mean TTC (tokens)", "wall s: mean", "median", "max"]
    rows = []
    for s in (s for s in stats if s.category == ALL):
        w, fraction = walls[s.setting.name], walls[s.setting.name]["stopped_fraction"]
        stopped = f"{w['stopped']} ({100 * fraction:.1f}%)" if fraction is not None else "—"
        times = ["—" if w[k] is None else f"{w[k]:.1f}" for k in ("mean", "median", "max")]
        rows.append([s.setting.label, f"{s.accuracy:.1f}", _ttc(s), *times, w["timed"], stopped])
    return "\n".join(_table([*header, "timed", "stopped"], rows)) + "\n"


def _per_round(values: Iterable[float | None]) -> str:
    """``r1 0.50, r3 0.75``: the rounds with a value, or ``—``."""
    return ", ".join(f"r{i} {v:.2f}" for i, v in enumerate(values, 1) if v is not None) or "—"


def markdown_table(stats: Sequence[SettingStats]) -> str:
    """The paper-style table (``acc (TTC k)`` per category) and a details table."""
    cols = list(dict.fromkeys(s.category for s in stats))
    settings = list(dict.fromkeys(s.setting for s in stats))
    cell = {(s.setting.name, s.category): s for s in stats}
    sizes = {c: cell[(settings[0].name, c)].problems for c in cols}
    paper = _table(
        ["setting", "K", *(f"{c} ({sizes[c]})" for c in cols)],
        [
            [t.label, list(t.round_vector), *(cell[(t.name, c)].cell for c in cols)]
            for t in settings
        ],
    )
    header = ["setting", "accuracy %", "95% CI", "mean TTC (tokens)", "runs", "answer agreement"]
    header += ["cross-checking", "dropped refs", "emergent correctness", "failed"]
    details = []
    for setting in settings:
        s = cell[(setting.name, ALL)]
        ci = f"[{s.ci[0]:.1f}, {s.ci[1]:.1f}]" if s.ci else "—"
        numbers = [f"{s.accuracy:.1f}", ci, _ttc(s), s.runs]
        # Only rounds with K > 1: a lone trajectory always agrees with itself.
        pairs = zip(s.agreement, setting.round_vector, strict=False)
        agree = _per_round(a if k > 1 else None for a, k in pairs)
        pacore: list[Any] = ["—"] * 3  # cross-checking, dropped refs, emergent correctness
        if setting.kind == "pacore":
            rate = s.emergent_rate
            emergent = f"{s.emergent}/{s.all_inputs_wrong}"
            emergent += f" ({100 * rate:.1f}%)" if rate is not None else ""
            pacore = [_per_round(s.cross_checking), s.dropped, emergent]
        details.append([setting.label, *numbers, agree, *pacore, s.errors])
    return "\n".join([*paper, "", *_table(header, details)]) + "\n"


def _csv_row(s: SettingStats) -> dict[str, Any]:
    runs, pacore = s.run_accuracies, s.setting.kind == "pacore"
    return {
        "setting": s.setting.name,
        "label": s.setting.label,
        "kind": s.setting.kind,
        "round_vector": " ".join(map(str, s.setting.round_vector)),
        "category": s.category,
        "problems": s.problems,
        "runs": s.runs,
        "accuracy": round(s.accuracy, 4),
        "ci_low": round(s.ci[0], 4) if s.ci else "",
        "ci_high": round(s.ci[1], 4) if s.ci else "",
        "run_sd": round(statistics.stdev(runs), 4) if len(runs) > 1 else "",
        "mean_ttc": round(s.mean_ttc, 1) if s.mean_ttc is not None else "",
        "cell": s.cell,
        "agreement": " ".join("" if a is None else f"{a:.4f}" for a in s.agreement),
        "cross_checking": " ".join("" if c is None else f"{c:.4f}" for c in s.cross_checking),
        "dropped_references": s.dropped if pacore else "",
        "emergent": s.emergent if pacore else "",
        "all_inputs_wrong": s.all_inputs_wrong if pacore else "",
        "emergent_rate": "" if s.emergent_rate is None else round(s.emergent_rate, 4),
        "failed": s.errors,
    }


def write_csv(stats: Sequence[SettingStats], path: Path) -> None:
    """One row per (setting, category), numbers unformatted."""
    rows = [_csv_row(s) for s in stats]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


def plot(stats: Sequence[SettingStats], path: Path | None, title: str = "") -> Any:
    """Accuracy (0-100 %) against mean TTC (log x) of every setting on all problems, with
    95% intervals, settings of one kind joined in TTC order; saved to ``path`` and closed,
    or returned as a matplotlib Figure when ``path`` is None.

    Raises:
        EvalDependencyError: matplotlib is not installed.
    """
    matplotlib = require("matplotlib", "the accuracy-vs-TTC plot")
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    overall = [(s.mean_ttc, s) for s in stats if s.category == ALL and s.mean_ttc]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    styles = {
        "single": ("s", "tab:gray", "single trajectory"),
        "sc": ("o", "tab:blue", "self-consistency"),
        "pacore": ("D", "tab:red", "PaCoRe"),
    }
    for kind, (marker, color, name) in styles.items():
        points = sorted((p for p in overall if p[1].setting.kind == kind), key=lambda p: p[0])
        if not points:
            continue
        group = [s for _, s in points]
        errs = [
            [s.accuracy - s.ci[0] if s.ci else 0 for s in group],
            [s.ci[1] - s.accuracy if s.ci else 0 for s in group],
        ]
        ax.errorbar(
            [ttc for ttc, _ in points],
            [s.accuracy for s in group],
            yerr=errs,
            marker=marker,
            color=color,
            capsize=3,
            linestyle="-" if len(group) > 1 else "none",
            label=name,
            clip_on=False,  # a point at 0 or 100 % is drawn whole on the axis
        )
        for ttc, s in points:
            where: dict[str, Any] = {"textcoords": "offset points", "xytext": (5, 5), "fontsize": 8}
            ax.annotate(s.setting.label, (ttc, s.accuracy), **where)
    ax.set_xscale("log")
    # Ticks at 1, 2, 5 per decade, labelled like the table (4.2k, 243k), not as 10^x.
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: format_ttc(x)))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("mean TTC per problem (completion tokens, log scale)")
    ax.set_ylabel("accuracy (%), pass@1 averaged over runs")
    ax.set_ylim(0, 100)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    if path is None:
        return fig
    # The title is also the PNG's Title field, so a file found alone still says what it is.
    fig.savefig(path, metadata={"Title": title} if title else None)
    plt.close(fig)


POOL_FIELDS = frozenset(
    ["index", "content", "reasoning", "finish_reason", "prompt_tokens", "completion_tokens"]
)
"""What ``pool.jsonl`` keeps of each sample (no timings, so the file is reproducible)."""


def write_pool(result: EvalResult, path: Path) -> None:
    """Each problem's round-1 pool, so the draws in ``results.jsonl`` can be audited."""
    with path.open("w", encoding="utf-8") as handle:
        for problem in result.problems:
            if (samples := result.pools.get(problem.key)) is not None:
                kept = [{k: v for k, v in s.items() if k in POOL_FIELDS} for s in samples]
                row = {"request_id": problem.id, "samples": kept}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_report(
    result: EvalResult,
    out: str | Path,
    *,
    title: str = "",
    plot_png: bool = True,
    manifest: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Path]]:
    """Writes the rows, the pool, the tables, the plot (``plot_png``: needs matplotlib) and
    the manifest (from `build_manifest`; None writes none) of a `run_eval` result into the
    folder ``out`` (created).

    Returns:
        The Markdown table (``table.md``'s), and the paths written by kind (see `FILES`).
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    stats = summarize(result)
    off = {"pool": not result.pools, "plot": not plot_png, "manifest": manifest is None}
    paths = {kind: folder / name for kind, name in FILES.items() if not off.get(kind)}
    rows = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in result.rows)
    paths["rows"].write_text(rows, encoding="utf-8")
    if "pool" in paths:
        write_pool(result, paths["pool"])
    table = markdown_table(stats)
    paths["markdown"].write_text(table, encoding="utf-8")
    # Apart from table.md, which the same backend and seeds reproduce exactly.
    wall = wall_table(stats, wall_stats(result))
    paths["wall"].write_text(wall, encoding="utf-8")
    write_csv(stats, paths["csv"])
    if plot_png:
        plot(stats, paths["plot"], title)
    if manifest is not None:
        text = json.dumps(manifest, ensure_ascii=False, indent=2, default=str)
        paths["manifest"].write_text(text + "\n", encoding="utf-8")
    return table, paths
