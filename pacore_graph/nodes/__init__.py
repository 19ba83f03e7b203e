"""The graph's nodes, one module each: prepare, trajectory, compact, synthesize, answer."""

from pacore_graph.nodes.answer import answer
from pacore_graph.nodes.compaction import make_compact_node, route_after_compact
from pacore_graph.nodes.prepare import make_prepare_node
from pacore_graph.nodes.synthesis import fan_out, make_synthesize_node
from pacore_graph.nodes.trajectory import TrajectoryTask, make_trajectory_node

__all__ = [
    "TrajectoryTask",
    "answer",
    "fan_out",
    "make_compact_node",
    "make_prepare_node",
    "make_synthesize_node",
    "make_trajectory_node",
    "route_after_compact",
]
