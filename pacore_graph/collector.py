"""Python's garbage collector in a process that is pacore's alone (the ``pacore`` commands,
``pacore serve``, ``pacore mcp``); a library leaves its host's collector as it is."""

import gc


def tune_collector() -> None:
    """Freezes what is alive now (imports, app, graph) and makes full collections rare."""
    # A full pass walks every trajectory in flight, ~220 objects each (LangGraph's tasks,
    # LangChain's callback managers): at 256 problems x [32,4,1] the wall went from 1.9x
    # the official pipeline's to 0.95x with this (benchmarks/run.py --only scale).
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)
