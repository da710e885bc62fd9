"""Multi-Token Prediction module k (V3 paper §2.2, eqs. 21-23):

    h'_i = eh_proj([enorm(Emb(t_{i+k})); hnorm(h^{k-1}_i)])     (embedding first, as the
    h^k_i = TransformerBlock_k(h'_i)                             hub checkpoint's eh_proj
    logits^k_i = OutHead(shared_head.norm(h^k_i))               expects: vLLM, MaxText)

The embedding and the output head are the main model's (shared); h^0 is the main model's
last hidden state before its final norm.
"""

import keras
from keras import ops

from model.config import ModelConfig
from model.decoder import DecoderLayer
from model.rmsnorm import RMSNorm


class MTPModule(keras.layers.Layer):
    def __init__(self, cfg: ModelConfig, depth: int, expert_matmul_impl: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self._convert_input_args = False  # keep the float32 RoPE cos/sin out of autocasting
        policy = self.dtype_policy
        self.enorm = RMSNorm(cfg.rms_norm_eps, name="enorm", dtype=policy)
        self.hnorm = RMSNorm(cfg.rms_norm_eps, name="hnorm", dtype=policy)
        self.eh_proj = keras.layers.Dense(
            cfg.hidden_size, use_bias=False, name="eh_proj", dtype=policy,
            kernel_initializer=keras.initializers.RandomNormal(stddev=cfg.initializer_range))
        self.block = DecoderLayer(cfg, cfg.num_hidden_layers + depth, expert_matmul_impl, name="block", dtype=policy)
        self.shared_head_norm = RMSNorm(cfg.rms_norm_eps, name="shared_head_norm", dtype=policy)
        self.hidden_size = cfg.hidden_size

    def build(self, input_shape):
        self.enorm.build(input_shape)
        self.hnorm.build(input_shape)
        self.eh_proj.build((None, 2 * self.hidden_size))
        self.block.build(input_shape)
        self.shared_head_norm.build(input_shape)

    def call(self, previous_hidden, next_token_embeddings, cos, sin, mask):
        """-> (h^k [b, s, hidden] before shared_head.norm, MoE aux)."""
        h = self.eh_proj(ops.concatenate([self.enorm(next_token_embeddings), self.hnorm(previous_hidden)], axis=-1))
        return self.block(h, cos, sin, mask)
