"""``pacore eval``: the paper's tables (accuracy and TTC of PaCoRe against a single
trajectory and self-consistency) on any backend and benchmark file. math-verify and
matplotlib are imported only to grade and plot. In use: docs/eval.md, "From Python"."""

from pacore_graph.eval.dataset import SAMPLE, DatasetError, Problem, load_problems
from pacore_graph.eval.grading import Grade, extract_answer, grade
from pacore_graph.eval.report import summarize, write_report
from pacore_graph.eval.runner import EvalResult, EvalSpec, run_eval
from pacore_graph.eval.settings import Setting, build_settings

__all__ = [
    "SAMPLE",
    "DatasetError",
    "EvalResult",
    "EvalSpec",
    "Grade",
    "Problem",
    "Setting",
    "build_settings",
    "extract_answer",
    "grade",
    "load_problems",
    "run_eval",
    "summarize",
    "write_report",
]
