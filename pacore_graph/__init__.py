"""PaCoRe (Parallel Coordinated Reasoning) as a LangGraph state machine."""

from pacore_graph.backends import ChatOpenAICompatible, model_from_env
from pacore_graph.compaction import (
    COMPACTIONS,
    Compaction,
    boxed_answer_compaction,
    order_references,
    reference_compaction,
)
from pacore_graph.context import PaCoReContext
from pacore_graph.errors import (
    BackendUnreachableError,
    BudgetExhaustedError,
    ContextLimitError,
    DamagedThreadError,
    InvalidInputError,
    InvalidRoundsError,
    InvalidSettingsError,
    LeaseLostError,
    PaCoReError,
    QuorumError,
    ThreadBusyError,
    ThreadConflictError,
)
from pacore_graph.graph import (
    CompiledPaCoReGraph,
    PaCoReGraph,
    create_pacore_graph,
    create_pacore_tool,
)
from pacore_graph.messages import build_round_messages
from pacore_graph.record import run_record, to_record, to_results_row
from pacore_graph.retry import DEFAULT_RETRY_POLICY, should_retry
from pacore_graph.rounds import PRESETS, resolve_rounds
from pacore_graph.state import PaCoReInput, PaCoReOutput, PaCoReRun, PaCoReState, RoundSummary
from pacore_graph.template import SYNTHESIS_TEMPLATE, render_synthesis_prompt
from pacore_graph.threads import ThreadStatus, arun_thread
from pacore_graph.tool import pacore_tool
from pacore_graph.trajectories import Trajectory

__all__ = [
    "COMPACTIONS",
    "DEFAULT_RETRY_POLICY",
    "PRESETS",
    "SYNTHESIS_TEMPLATE",
    "BackendUnreachableError",
    "BudgetExhaustedError",
    "ChatOpenAICompatible",
    "Compaction",
    "CompiledPaCoReGraph",
    "ContextLimitError",
    "DamagedThreadError",
    "InvalidInputError",
    "InvalidRoundsError",
    "InvalidSettingsError",
    "LeaseLostError",
    "PaCoReContext",
    "PaCoReError",
    "PaCoReGraph",
    "PaCoReInput",
    "PaCoReOutput",
    "PaCoReRun",
    "PaCoReState",
    "QuorumError",
    "RoundSummary",
    "ThreadBusyError",
    "ThreadConflictError",
    "ThreadStatus",
    "Trajectory",
    "arun_thread",
    "boxed_answer_compaction",
    "build_round_messages",
    "create_pacore_graph",
    "create_pacore_tool",
    "model_from_env",
    "order_references",
    "pacore_tool",
    "reference_compaction",
    "render_synthesis_prompt",
    "resolve_rounds",
    "run_record",
    "should_retry",
    "to_record",
    "to_results_row",
]
