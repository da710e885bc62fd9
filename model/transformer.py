"""DeepSeekV3CausalLM: embedding -> decoder blocks (dense, then MoE) -> norm -> head,
plus the MTP modules, with a naive (training) and an absorbed-cache (decoding) path.

    model = DeepSeekV3CausalLM(ModelConfig.from_preset("tiny"))
    logits = model(token_ids)                                   # [b, s, vocab] float32
    out = model(token_ids, segment_ids=seg, return_aux=True)    # + mtp_logits, expert_loads, balance
    model.generate([[5, 6, 7]], max_new_tokens=20)
"""

import keras
import numpy as np
from keras import ops

from model.balancing import bias_update
from model.config import ModelConfig
from model.decoder import DecoderLayer
from model.masks import cache_mask, causal_mask, mask_bias
from model.mtp import MTPModule
from model.rmsnorm import RMSNorm
from model.rope import rope_attention_factor, rope_cos_sin, rope_inverse_frequencies


class DeepSeekV3CausalLM(keras.Model):
    def __init__(self, cfg: ModelConfig, expert_matmul_impl: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cfg = cfg
        policy = self.dtype_policy
        init = keras.initializers.RandomNormal(stddev=cfg.initializer_range)
        self.embed_tokens = keras.layers.Embedding(cfg.vocab_size, cfg.hidden_size, embeddings_initializer=init,
                                                   name="embed_tokens", dtype=policy)
        self.decoder_layers = [DecoderLayer(cfg, i, expert_matmul_impl, name=f"layers_{i}", dtype=policy)
                               for i in range(cfg.num_hidden_layers)]
        self.norm = RMSNorm(cfg.rms_norm_eps, name="norm", dtype=policy)
        self.lm_head = None
        if not cfg.tie_word_embeddings:
            self.lm_head = keras.layers.Dense(cfg.vocab_size, use_bias=False, kernel_initializer=init,
                                              name="lm_head", dtype=policy)
        self.mtp_layers = [MTPModule(cfg, d, expert_matmul_impl, name=f"mtp_{d}", dtype=policy)
                           for d in range(cfg.num_nextn_predict_layers)]
        self.inverse_frequencies = rope_inverse_frequencies(cfg).astype(np.float32)
        self.attention_factor = rope_attention_factor(cfg)
        self.build((None, None))

    def build(self, input_shape):
        hidden = (None, None, self.cfg.hidden_size)
        self.embed_tokens.build(input_shape)
        for layer in [*self.decoder_layers, *self.mtp_layers]:
            layer.build(hidden)
        self.norm.build(hidden)
        if self.lm_head is not None:
            self.lm_head.build(hidden)
        self.built = True

    # ------------------------------------------------------------------ pieces
    def moe_layers(self):
        """Every DeepSeekMoE layer, main model first then MTP, in expert_loads order."""
        blocks = [*self.decoder_layers, *(m.block for m in self.mtp_layers)]
        return [b.mlp for b in blocks if b.is_moe]

    def head(self, h):
        """Output head on normalised hidden states -> float32 logits."""
        if self.lm_head is None:
            logits = ops.matmul(h, ops.transpose(ops.cast(self.embed_tokens.embeddings, h.dtype)))
        else:
            logits = self.lm_head(h)
        return ops.cast(logits, "float32")

    def _rope(self, positions):
        return rope_cos_sin(self.inverse_frequencies, positions, self.attention_factor)

    # ------------------------------------------------------------------ training path
    def call(self, token_ids, segment_ids=None, position_ids=None, return_aux=False):
        """token_ids [b, s] -> logits [b, s, vocab] (float32).

        segment_ids [b, s]: packed documents attend only within their own segment.
        position_ids [b, s]: RoPE positions (default 0..s-1; pass resets for packing).
        return_aux: return a dict with logits, mtp_logits (one per MTP depth), hidden
        (last hidden state before the final norm), expert_loads [moe layers, E],
        balance (the sum over MoE layers of the sequence-wise balance term, without alpha)
        and dropped_assignments (0 unless expert parallelism runs with a capacity).
        """
        seq_len = ops.shape(token_ids)[1]
        if position_ids is None:
            position_ids = ops.arange(seq_len)[None, :]
        cos, sin = self._rope(position_ids)
        # plain causal attention on JAX is left to a fused kernel (mask None: model/attention.py)
        plain_causal = segment_ids is None and keras.backend.backend() == "jax"
        mask = None if plain_causal else mask_bias(causal_mask(seq_len, segment_ids))
        h = self.embed_tokens(token_ids)
        aux = []
        for layer in self.decoder_layers:
            h, layer_aux = layer(h, cos, sin, mask)
            if layer_aux:
                aux.append(layer_aux)
        logits = self.head(self.norm(h))
        if not return_aux:
            return logits
        hidden, mtp_logits, previous = h, [], h
        for depth, module in enumerate(self.mtp_layers, start=1):
            # at position i, depth k combines h^{k-1}_i with the embedding of t_{i+k}
            shifted = ops.concatenate([token_ids[:, depth:], ops.zeros_like(token_ids[:, :depth])], axis=1)
            previous, layer_aux = module(previous, self.embed_tokens(shifted), cos, sin, mask)
            aux.append(layer_aux)
            mtp_logits.append(self.head(module.shared_head_norm(previous)))
        return {
            "logits": logits,
            "mtp_logits": mtp_logits,
            "hidden": hidden,
            "expert_loads": ops.stack([a["load"] for a in aux]) if aux else None,
            "balance": sum(a["balance"] for a in aux) if aux else ops.zeros(()),
            "dropped_assignments": sum(a["dropped"] for a in aux) if aux else ops.zeros((), "int32"),
        }

    # ------------------------------------------------------------------ balancing
    def update_router_biases(self, expert_loads, gamma: float = 1e-3):
        """Auxiliary-loss-free balancing: bias_i += gamma * sign(mean_load - load_i) for
        every MoE layer. expert_loads [moe layers, E] must be the loads of the whole step
        (summed over micro-batches and replicas) so every replica applies the same update."""
        for index, moe in enumerate(self.moe_layers()):
            bias = moe.gate.e_score_correction_bias
            bias.assign(bias + bias_update(expert_loads[index], gamma))

    # ------------------------------------------------------------------ decoding path
    def init_cache(self, batch_size: int, length: int, dtype="float32"):
        """Per main layer, the absorbed-MLA cache: normalised latent [b, T, kv_lora_rank]
        and roped key [b, T, qk_rope_head_dim]."""
        cfg = self.cfg
        return [(ops.zeros((batch_size, length, cfg.kv_lora_rank), dtype),
                 ops.zeros((batch_size, length, cfg.qk_rope_head_dim), dtype))
                for _ in self.decoder_layers]

    def decode(self, token_ids, position_ids, cache, start: int, key_valid):
        """Run token_ids [b, s] written at cache slots [start, start + s) through the
        absorbed path. key_valid [b, T] marks filled, non-padding slots (these tokens'
        slots included). Returns (logits [b, s, vocab] float32, updated cache)."""
        seq_len = ops.shape(token_ids)[1]
        cos, sin = self._rope(position_ids)
        query_slots = ops.broadcast_to(start + ops.arange(seq_len)[None, :], ops.shape(token_ids))
        mask = mask_bias(cache_mask(query_slots, key_valid))
        h = self.embed_tokens(token_ids)
        new_cache = []
        for layer, layer_cache in zip(self.decoder_layers, cache):
            h, layer_cache = layer.call_absorbed(h, cos, sin, layer_cache, start, mask)
            new_cache.append(layer_cache)
        return self.head(self.norm(h)), new_cache

    def generate(self, prompts, max_new_tokens: int, **kwargs):
        """Batched generation with the compressed cache; see model.generate.generate."""
        from model.generate import generate

        return generate(self, prompts, max_new_tokens, **kwargs)
