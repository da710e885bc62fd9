"""DeepSeekMoE: shared experts on every token plus routed experts chosen by the router.

Besides its output, the layer reports what auxiliary-loss-free balancing and the
sequence-wise balance loss need (model/balancing.py): each expert's load in this batch
and this layer's sequence-wise balance term sum_i f_i P_i.
"""

import keras
from keras import ops

from model.config import ModelConfig
from model.experts import RoutedExperts, expert_counts
from model.mlp import SwiGLUMLP
from model.router import Router


def sequence_balance_term(scores, expert_indices, batch: int, cfg: ModelConfig):
    """V3 paper eqs. 17-20 without alpha: mean over sequences of sum_i f_i P_i, with
    f_i = N_r / (K_r T) * #{t: i in TopK(t)} and P_i = mean_t s_i,t / sum_j s_j,t.

    scores [batch * T, E] float32; expert_indices [batch * T, K].
    """
    e, k = cfg.n_routed_experts, cfg.num_experts_per_tok
    normalised = scores / ops.sum(scores, axis=-1, keepdims=True)
    probability = ops.mean(ops.reshape(normalised, (batch, -1, e)), axis=1)                  # P [b, E]
    chosen = ops.sum(ops.one_hot(expert_indices, e, dtype="float32"), axis=1)               # [b*T, E]
    fraction = ops.mean(ops.reshape(chosen, (batch, -1, e)), axis=1) * (e / k)              # f [b, E]
    return ops.mean(ops.sum(fraction * probability, axis=-1))


class DeepSeekMoE(keras.layers.Layer):
    def __init__(self, cfg: ModelConfig, expert_matmul_impl: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cfg = cfg
        self.gate = Router(cfg, name="gate")
        self.experts = RoutedExperts(cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size,
                                     cfg.initializer_range, expert_matmul_impl, name="experts",
                                     dtype=self.dtype_policy)
        self.shared_experts = None
        if cfg.n_shared_experts:
            self.shared_experts = SwiGLUMLP(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts,
                                            cfg.initializer_range, name="shared_experts", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.gate.build(input_shape)
        self.experts.build(input_shape)
        if self.shared_experts is not None:
            self.shared_experts.build(input_shape)

    def call(self, x):
        """x [b, s, hidden] -> (y [b, s, hidden], {"load": [E] float32, "balance": scalar,
        "dropped": assignments an expert-parallel capacity dropped, int32 scalar})."""
        batch = ops.shape(x)[0]
        flat = ops.reshape(x, (-1, self.cfg.hidden_size))
        indices, weights, scores = self.gate(flat)
        y, dropped = self.experts.dispatch(flat, indices, weights)
        if self.shared_experts is not None:
            y = y + self.shared_experts(flat)
        load = ops.cast(expert_counts(ops.reshape(indices, (-1,)), self.cfg.n_routed_experts), "float32")
        aux = {"load": load, "balance": sequence_balance_term(scores, indices, batch, self.cfg), "dropped": dropped}
        return ops.reshape(y, ops.shape(x)), aux
