"""Python's garbage collector in a process that is pacore's alone (the ``pacore`` commands,
``pacore serve``, ``pacore mcp``); a library leaves its host's collector as it is."""

import gc


def tune_collector() -> None:
    """Freezes what is alive now (imports, app, graph) and makes full collections rare."""
    # A full pass walks every trajectory in flight, ~220 objects each (LangGraph's tasks,
    # LangChain's callback managers). At 256 problems x [32,4,1] (benchmarks/run.py --only
    # scale, idle 2 cores) the collector took 10.6 s of 19.9 s CPU; after a freeze with
    # thresholds of 10,000 it took 2.7 s, with 100,000 about 1.1 s, peak RSS the same.
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
