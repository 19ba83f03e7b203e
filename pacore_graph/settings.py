"""The settings in force inside a node: graph defaults with the run's context laid over them."""

from __future__ import annotations

from langgraph.runtime import get_runtime

from pacore_graph.context import PaCoReContext, merge_context


def run_settings(defaults: PaCoReContext) -> PaCoReContext:
    """``defaults`` overridden by this run's ``context=`` (call from inside a node)."""
    return merge_context(defaults, get_runtime(PaCoReContext).context)
