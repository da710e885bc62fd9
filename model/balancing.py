"""Auxiliary-loss-free load balancing (V3 paper §2.1.2) and its diagnostics.

Defaults from the paper: bias update speed gamma = 0.001 (for the first 14.3T tokens,
then 0) and sequence-wise balance loss weight alpha = 0.0001.
"""

from keras import ops

DEFAULT_GAMMA = 1e-3
DEFAULT_ALPHA = 1e-4


def bias_update(load, gamma: float = DEFAULT_GAMMA):
    """gamma * sign(mean_load - load_i): overloaded experts' biases go down, underloaded up."""
    load = ops.cast(load, "float32")
    return gamma * ops.sign(ops.mean(load, axis=-1, keepdims=True) - load)


def max_violation(load):
    """MaxVio = max_i load_i / mean_load - 1 (per row of load [..., E]); 0 is perfect balance."""
    load = ops.cast(load, "float32")
    return ops.max(load, axis=-1) / ops.mean(load, axis=-1) - 1.0
