"""One pre-norm decoder block: h + MLA(norm(h)), then + MLP-or-MoE(norm(h))."""

import keras

from model.attention import MultiHeadLatentAttention
from model.config import ModelConfig
from model.mlp import SwiGLUMLP
from model.moe import DeepSeekMoE
from model.rmsnorm import RMSNorm


class DecoderLayer(keras.layers.Layer):
    def __init__(self, cfg: ModelConfig, layer_index: int, expert_matmul_impl: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self._convert_input_args = False  # keep the float32 RoPE cos/sin out of autocasting
        self.cfg, self.layer_index = cfg, layer_index
        policy = self.dtype_policy
        self.input_layernorm = RMSNorm(cfg.rms_norm_eps, name="input_layernorm", dtype=policy)
        self.self_attn = MultiHeadLatentAttention(cfg, name="self_attn", dtype=policy)
        self.post_attention_layernorm = RMSNorm(cfg.rms_norm_eps, name="post_attention_layernorm", dtype=policy)
        if cfg.is_moe_layer(layer_index):
            self.mlp = DeepSeekMoE(cfg, expert_matmul_impl, name="mlp", dtype=policy)
        else:
            self.mlp = SwiGLUMLP(cfg.hidden_size, cfg.intermediate_size, cfg.initializer_range, name="mlp", dtype=policy)

    @property
    def is_moe(self) -> bool:
        return isinstance(self.mlp, DeepSeekMoE)

    def build(self, input_shape):
        for layer in (self.input_layernorm, self.self_attn, self.post_attention_layernorm, self.mlp):
            layer.build(input_shape)

    def _feed_forward(self, h):
        out = self.mlp(self.post_attention_layernorm(h))
        if self.is_moe:
            out, aux = out
            return h + out, aux
        return h + out, {}  # a dense block has no routing statistics

    def call(self, h, cos, sin, mask):
        """Training path -> (h, MoE aux: {"load", "balance"}, empty for a dense block)."""
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        return self._feed_forward(h)

    def call_absorbed(self, h, cos, sin, cache, start, mask):
        """Decoding path over the compressed cache -> (h, updated cache)."""
        attn, cache = self.self_attn.call_absorbed(self.input_layernorm(h), cos, sin, cache, start, mask)
        h, _ = self._feed_forward(h + attn)
        return h, cache
