"""Multi-head Latent Attention (DeepSeek-V2/V3), with two paths over the same weights:

- `call`: the naive path for training; per-head K/V are expanded from the latent.
- `call_absorbed`: the decoding path; W_UK is absorbed into the query and W_UV applied
  after attention, so the cache holds only the normalised latent (kv_lora_rank) and the
  shared roped key (qk_rope_head_dim) per token: 576 values per layer for V3.

Shapes: b batch, s queries, t keys, h heads, r kv_lora_rank, p qk_rope_head_dim,
n qk_nope_head_dim, v v_head_dim.
"""

import functools

import keras
from keras import ops

from model.config import ModelConfig
from model.linear import Linear
from model.masks import causal_mask, mask_bias
from model.rmsnorm import RMSNorm
from model.rope import apply_rope, yarn_mscale

def softmax_scale(cfg: ModelConfig) -> float:
    """qk_head_dim ** -0.5, times mscale(factor, mscale_all_dim) ** 2 under YaRN (as
    transformers' DeepseekV3Attention; 192**-0.5 * 1.3689**2 = 0.1352 for V3)."""
    scale = cfg.qk_head_dim ** -0.5
    yarn = cfg.rope_scaling
    if yarn is not None and yarn["mscale_all_dim"]:
        scale *= yarn_mscale(yarn["factor"], yarn["mscale_all_dim"]) ** 2
    return scale


def _fused_causal_attention(q_nope, q_pe, k_nope, k_pe, value, scale):
    """jax.nn.dot_product_attention (cuDNN flash attention for 16-bit inputs on GPU, XLA
    elsewhere) over [nope; rope] heads. It needs one head dim for q, k and v, so the values
    are zero-padded to qk_head_dim and the padding sliced off after. -> [b, s, h, v]."""
    import jax

    heads, dtype = q_nope.shape[2], value.dtype
    query = ops.cast(ops.concatenate([q_nope, ops.cast(q_pe, q_nope.dtype)], axis=-1), dtype)
    k_pe = ops.broadcast_to(k_pe[:, :, None, :], (*ops.shape(k_pe)[:2], heads, k_pe.shape[-1]))
    key = ops.cast(ops.concatenate([k_nope, ops.cast(k_pe, k_nope.dtype)], axis=-1), dtype)
    v_dim = value.shape[-1]
    padded = ops.pad(value, [(0, 0), (0, 0), (0, 0), (0, query.shape[-1] - v_dim)])
    use_cudnn = _cudnn_attention_compiles(query.shape[-1], str(query.dtype))
    out = jax.nn.dot_product_attention(query, key, padded, scale=scale, is_causal=True,
                                       implementation="cudnn" if use_cudnn else "xla")
    return out[..., :v_dim]


@functools.lru_cache(maxsize=None)
def _cudnn_attention_compiles(head_dim: int, dtype: str) -> bool:
    """Whether cuDNN's fused attention takes this head dim and dtype here: compiled once on
    a small problem, because an unsupported case fails only when the whole step compiles."""
    import jax

    if jax.devices()[0].platform != "gpu" or dtype not in ("bfloat16", "float16"):
        return False
    shape = jax.ShapeDtypeStruct((1, 256, 2, head_dim), dtype)
    attend = functools.partial(jax.nn.dot_product_attention, is_causal=True, implementation="cudnn")
    try:
        jax.jit(jax.grad(lambda q, k, v: attend(q, k, v).astype("float32").sum())).lower(shape, shape, shape).compile()
        return True
    except Exception:  # any refusal (shape, version, driver) means: use the XLA path
        return False


class MultiHeadLatentAttention(keras.layers.Layer):
    def __init__(self, cfg: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self._convert_input_args = False  # keep the float32 RoPE cos/sin out of autocasting
        self.cfg = cfg
        self.scale = softmax_scale(cfg)
        init = keras.initializers.RandomNormal(stddev=cfg.initializer_range)
        dense = dict(kernel_initializer=init, dtype=self.dtype_policy)
        heads = cfg.num_attention_heads
        if cfg.q_lora_rank is None:
            self.q_proj = Linear(heads * cfg.qk_head_dim, name="q_proj", **dense)
        else:
            self.q_a_proj = Linear(cfg.q_lora_rank, name="q_a_proj", **dense)
            self.q_a_layernorm = RMSNorm(cfg.rms_norm_eps, name="q_a_layernorm", dtype=self.dtype_policy)
            self.q_b_proj = Linear(heads * cfg.qk_head_dim, name="q_b_proj", **dense)
        self.kv_a_proj_with_mqa = Linear(cfg.kv_lora_rank + cfg.qk_rope_head_dim,
                                                     name="kv_a_proj_with_mqa", **dense)
        self.kv_a_layernorm = RMSNorm(cfg.rms_norm_eps, name="kv_a_layernorm", dtype=self.dtype_policy)
        self.kv_b_proj = Linear(heads * (cfg.qk_nope_head_dim + cfg.v_head_dim),
                                            name="kv_b_proj", **dense)
        self.o_proj = Linear(cfg.hidden_size, name="o_proj", **dense)

    def build(self, input_shape):
        cfg = self.cfg
        if cfg.q_lora_rank is None:
            self.q_proj.build(input_shape)
        else:
            self.q_a_proj.build(input_shape)
            self.q_a_layernorm.build((None, cfg.q_lora_rank))
            self.q_b_proj.build((None, cfg.q_lora_rank))
        self.kv_a_proj_with_mqa.build(input_shape)
        self.kv_a_layernorm.build((None, cfg.kv_lora_rank))
        self.kv_b_proj.build((None, cfg.kv_lora_rank))
        self.o_proj.build((None, cfg.num_attention_heads * cfg.v_head_dim))

    # ------------------------------------------------------------------ shared pieces
    def _queries(self, x, cos, sin):
        """x [b, s, hidden] -> q_nope [b, s, h, n], roped q_pe [b, s, h, p]."""
        cfg = self.cfg
        if cfg.q_lora_rank is None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = ops.reshape(q, (*ops.shape(x)[:2], cfg.num_attention_heads, cfg.qk_head_dim))
        q_nope, q_pe = q[..., :cfg.qk_nope_head_dim], q[..., cfg.qk_nope_head_dim:]
        return q_nope, apply_rope(q_pe, cos[:, :, None, :], sin[:, :, None, :])

    def latent(self, x, cos, sin):
        """What the absorbed cache stores for x [b, s, hidden]: the normalised latent
        [b, s, r] and the roped key shared by all heads [b, s, p]."""
        cfg = self.cfg
        kv = self.kv_a_proj_with_mqa(x)
        c_kv, k_pe = kv[..., :cfg.kv_lora_rank], kv[..., cfg.kv_lora_rank:]
        return self.kv_a_layernorm(c_kv), apply_rope(k_pe, cos, sin)

    def _attend(self, scores, mask_bias):
        """scores [b, h, s, t] (already scaled), mask_bias [b or 1, s, t] (model.masks)
        -> float32 probabilities."""
        return ops.softmax(ops.cast(scores, "float32") + mask_bias[:, None, :, :], axis=-1)

    # ------------------------------------------------------------------ naive path
    def call(self, x, cos, sin, mask):
        """Training path. x [b, s, hidden]; cos/sin [b, s, p/2]; mask [b or 1, s, s], the
        additive bias of model.masks, or None for plain causal attention (on JAX: a fused
        attention kernel that never holds the [s, s] scores)."""
        cfg = self.cfg
        q_nope, q_pe = self._queries(x, cos, sin)
        c_kv, k_pe = self.latent(x, cos, sin)
        kv = ops.reshape(self.kv_b_proj(c_kv), (*ops.shape(x)[:2], cfg.num_attention_heads,
                                                 cfg.qk_nope_head_dim + cfg.v_head_dim))
        k_nope, value = kv[..., :cfg.qk_nope_head_dim], kv[..., cfg.qk_nope_head_dim:]
        if mask is None and keras.backend.backend() == "jax":
            out = _fused_causal_attention(q_nope, q_pe, k_nope, k_pe, value, self.scale)
            return self.o_proj(ops.reshape(out, (*ops.shape(x)[:2], -1)))
        if mask is None:
            mask = mask_bias(causal_mask(ops.shape(x)[1]))
        # q.k over the concatenated [nope; rope] head dim, with the rope key shared by heads
        scores = (ops.einsum("bshn,bthn->bhst", q_nope, k_nope)
                  + ops.einsum("bshp,btp->bhst", q_pe, k_pe)) * self.scale
        probs = ops.cast(self._attend(scores, mask), value.dtype)
        out = ops.einsum("bhst,bthv->bshv", probs, value)
        return self.o_proj(ops.reshape(out, (*ops.shape(x)[:2], -1)))

    # ------------------------------------------------------------------ absorbed path
    def call_absorbed(self, x, cos, sin, cache, start, mask):
        """Decoding path over a compressed cache.

        cache: (c_kv [b, T, r], k_pe [b, T, p]) with T slots; x's s tokens are written at
        slots [start, start + s) and attend through mask [b, s, T] (additive bias).
        Returns (output [b, s, hidden], updated cache).
        """
        cfg = self.cfg
        q_nope, q_pe = self._queries(x, cos, sin)
        c_new, pe_new = self.latent(x, cos, sin)
        c_cache = ops.slice_update(cache[0], (0, start, 0), ops.cast(c_new, cache[0].dtype))
        pe_cache = ops.slice_update(cache[1], (0, start, 0), ops.cast(pe_new, cache[1].dtype))
        w_kv_b = ops.reshape(ops.cast(self.kv_b_proj.kernel, self.compute_dtype),
                             (cfg.kv_lora_rank, cfg.num_attention_heads, cfg.qk_nope_head_dim + cfg.v_head_dim))
        w_uk, w_uv = w_kv_b[..., :cfg.qk_nope_head_dim], w_kv_b[..., cfg.qk_nope_head_dim:]
        q_latent = ops.einsum("bshn,rhn->bshr", q_nope, w_uk)  # W_UK absorbed into q
        scores = (ops.einsum("bshr,btr->bhst", q_latent, c_cache)
                  + ops.einsum("bshp,btp->bhst", q_pe, pe_cache)) * self.scale
        probs = ops.cast(self._attend(scores, mask), c_cache.dtype)
        out_latent = ops.einsum("bhst,btr->bshr", probs, c_cache)
        out = ops.einsum("bshr,rhv->bshv", out_latent, w_uv)   # W_UV after attention
        return self.o_proj(ops.reshape(out, (*ops.shape(x)[:2], -1))), (c_cache, pe_cache)
