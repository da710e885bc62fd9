"""Model FLOPs per token, from the config alone (for MFU).

Forward, per token, counting a multiply-add as 2 FLOPs and only what the model must do:
- every projection a token goes through: 2 x (its weights), with MLA's real shapes
  (q_a/q_b or q_proj, kv_a_proj_with_mqa, kv_b_proj, o_proj), the dense SwiGLU in the
  first layers, and in MoE layers the router, the shared experts and only the
  num_experts_per_tok routed experts the token is sent to;
- attention: q.k over qk_head_dim and p.v over v_head_dim for every head against the
  keys the token may see; causal, so a sequence of S tokens averages (S + 1) / 2 keys;
- the output head (2 x hidden x vocab), and with `mtp` the MTP modules (eh_proj, one
  MoE block and the shared head each).
The embedding lookup and norms are not matrix work and are left out. Training counts
backward as twice the forward: 3x in all.
"""

from model.config import ModelConfig


def _attention_projections(cfg: ModelConfig) -> int:
    h, heads = cfg.hidden_size, cfg.num_attention_heads
    q = h * heads * cfg.qk_head_dim if cfg.q_lora_rank is None else \
        h * cfg.q_lora_rank + cfg.q_lora_rank * heads * cfg.qk_head_dim
    return (q + h * (cfg.kv_lora_rank + cfg.qk_rope_head_dim)
            + cfg.kv_lora_rank * heads * (cfg.qk_nope_head_dim + cfg.v_head_dim) + heads * cfg.v_head_dim * h)


def _moe_weights_per_token(cfg: ModelConfig) -> int:
    expert = 3 * cfg.hidden_size * cfg.moe_intermediate_size
    return cfg.n_routed_experts * cfg.hidden_size + (cfg.n_shared_experts + cfg.num_experts_per_tok) * expert


def attention_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Scores and weighted values of one layer, averaged over a causal sequence."""
    keys = (seq_len + 1) / 2
    return 2 * cfg.num_attention_heads * (cfg.qk_head_dim + cfg.v_head_dim) * keys


def forward_flops_per_token(cfg: ModelConfig, seq_len: int, mtp: bool = True) -> float:
    dense_mlp = 3 * cfg.hidden_size * cfg.intermediate_size
    weights = (cfg.num_hidden_layers * _attention_projections(cfg)
               + cfg.first_k_dense_replace * dense_mlp + cfg.num_moe_layers * _moe_weights_per_token(cfg)
               + cfg.hidden_size * cfg.vocab_size)
    layers = cfg.num_hidden_layers
    if mtp:
        depth = cfg.num_nextn_predict_layers
        weights += depth * (2 * cfg.hidden_size * cfg.hidden_size + _attention_projections(cfg)
                            + _moe_weights_per_token(cfg) + cfg.hidden_size * cfg.vocab_size)
        layers += depth
    return 2 * weights + layers * attention_flops_per_token(cfg, seq_len)


def training_flops_per_token(cfg: ModelConfig, seq_len: int, mtp: bool = True) -> float:
    """Forward + backward (2x forward)."""
    return 3 * forward_flops_per_token(cfg, seq_len, mtp)


def model_flops_utilisation(cfg: ModelConfig, seq_len: int, tokens_per_second: float, peak_flops: float,
                            mtp: bool = True) -> float:
    return training_flops_per_token(cfg, seq_len, mtp) * tokens_per_second / peak_flops
