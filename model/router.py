"""DeepSeek-V3's router ("noaux_tc" top-k with group limiting), in float32.

1. scores = sigmoid(x W^T), float32.
2. The non-trainable bias e_score_correction_bias is added for SELECTION only.
3. Groups are scored by the sum of their top-2 biased scores; all but the best
   topk_group groups are masked with -inf (a 0 fill would let negative biased scores
   pick experts of masked groups: a bug fixed in the official repo, vLLM and transformers).
4. Top-k experts by biased score; their weights are the UNBIASED scores, normalised to
   sum 1 when norm_topk_prob, then times routed_scaling_factor.
"""

import keras
from keras import ops

from model.config import ModelConfig


class Router(keras.layers.Layer):
    def __init__(self, cfg: ModelConfig, **kwargs):
        kwargs["dtype"] = "float32"  # routing is numerically sensitive; never autocast
        super().__init__(**kwargs)
        self.cfg = cfg

    def build(self, input_shape):
        cfg = self.cfg
        # [experts, hidden], the HF layout of mlp.gate.weight
        self.weight = self.add_weight(
            name="weight", shape=(cfg.n_routed_experts, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=cfg.initializer_range))
        self.e_score_correction_bias = self.add_weight(
            name="e_score_correction_bias", shape=(cfg.n_routed_experts,),
            initializer="zeros", trainable=False,
            # every replica applies the same update (loads are summed over replicas first),
            # so under tf.distribute the first replica's value stands for all
            aggregation="only_first_replica")

    def call(self, x):
        """x [tokens, hidden] -> (expert indices [tokens, k] int32, weights [tokens, k]
        float32, scores [tokens, experts] float32)."""
        cfg = self.cfg
        scores = ops.sigmoid(ops.matmul(ops.cast(x, "float32"), ops.transpose(self.weight)))
        biased = scores + self.e_score_correction_bias
        if cfg.n_group > 1:
            grouped = ops.reshape(biased, (-1, cfg.n_group, cfg.n_routed_experts // cfg.n_group))
            group_scores = ops.sum(ops.top_k(grouped, 2)[0], axis=-1)           # [tokens, groups]
            _, kept_groups = ops.top_k(group_scores, cfg.topk_group)
            group_kept = ops.sum(ops.one_hot(kept_groups, cfg.n_group), axis=1) > 0
            expert_kept = ops.reshape(
                ops.broadcast_to(group_kept[:, :, None], ops.shape(grouped)), ops.shape(biased))
            biased = ops.where(expert_kept, biased, float("-inf"))
        _, indices = ops.top_k(biased, cfg.num_experts_per_tok)
        weights = ops.take_along_axis(scores, indices, axis=-1)
        if cfg.norm_topk_prob:
            weights = weights / (ops.sum(weights, axis=-1, keepdims=True) + 1e-20)
        return ops.cast(indices, "int32"), weights * cfg.routed_scaling_factor, scores
