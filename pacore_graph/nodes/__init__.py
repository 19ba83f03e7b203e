"""The graph's nodes, one module each, named as the node: prepare, trajectory, compact,
synthesize, answer."""
