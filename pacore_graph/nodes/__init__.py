"""The graph's nodes, one module each, named as the node: prepare, trajectory, compact,
synthesize, answer."""

from pacore_graph.nodes.answer import answer
from pacore_graph.nodes.compact import compact
from pacore_graph.nodes.prepare import prepare
from pacore_graph.nodes.synthesize import TokenCounter, estimate_tokens, synthesize
from pacore_graph.nodes.trajectory import TrajectoryNode, TrajectoryTask

__all__ = [
    "TokenCounter",
    "TrajectoryNode",
    "TrajectoryTask",
    "answer",
    "compact",
    "estimate_tokens",
    "prepare",
    "synthesize",
]
