"""`seekforge model ...`: inspect model presets without allocating them."""

import json
import os

from model.config import (PRESETS, ModelConfig, count_parameters, decoder_layer_shapes,
                          kv_cache_values_per_token, mtp_layer_shapes)


def register(subparsers) -> None:
    model = subparsers.add_parser("model", help="inspect model configurations")
    commands = model.add_subparsers(dest="model_command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="shapes and parameter counts of a preset or config.json, "
                                            "computed from the config alone")
    info.add_argument("preset", help=f"a preset ({', '.join(PRESETS)}) or a path to a HF config.json")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    info.set_defaults(handler=info_command)


def load_config(name: str) -> ModelConfig:
    """A preset by name, or a Hugging Face config.json by path."""
    if name in PRESETS:
        return ModelConfig.from_preset(name)
    if not os.path.exists(name):
        raise ValueError(f"{name!r} is neither a preset ({', '.join(PRESETS)}) nor a config.json path")
    return ModelConfig.from_hf(name)


def _block_summary(shapes: dict) -> list[str]:
    """Weight shapes of one block, the routed experts folded into one line."""
    lines, experts = [], {}
    for name, shape in shapes.items():
        parts = name.split(".")
        if parts[:2] == ["mlp", "experts"]:
            key = ".".join(parts[3:])
            experts.setdefault(key, [shape, 0])[1] += 1
            continue
        lines.append(f"    {name:45s} {list(shape)}")
    for key, (shape, count) in experts.items():
        lines.append(f"    {'mlp.experts.{0..' + str(count - 1) + '}.' + key:45s} {list(shape)} x {count}")
    return lines


def info_command(args) -> int:
    cfg = load_config(args.preset)
    counts = count_parameters(cfg)
    cache = kv_cache_values_per_token(cfg)
    if args.json:
        print(json.dumps({"config": cfg.to_hf(), "parameters": counts, "kv_cache_per_token_per_layer": cache}))
        return 0
    print(f"{args.preset}: DeepSeek-V3 architecture")
    print(f"  layers {cfg.num_hidden_layers} ({cfg.first_k_dense_replace} dense, {cfg.num_moe_layers} MoE) "
          f"+ {cfg.num_nextn_predict_layers} MTP; hidden {cfg.hidden_size}; vocab {cfg.vocab_size}")
    print(f"  MLA: {cfg.num_attention_heads} heads, q_lora_rank {cfg.q_lora_rank}, kv_lora_rank {cfg.kv_lora_rank}, "
          f"qk_nope {cfg.qk_nope_head_dim} + qk_rope {cfg.qk_rope_head_dim}, v {cfg.v_head_dim}")
    print(f"  MoE: {cfg.n_routed_experts} routed + {cfg.n_shared_experts} shared experts of "
          f"{cfg.moe_intermediate_size}, {cfg.num_experts_per_tok} per token, {cfg.n_group} groups "
          f"(top {cfg.topk_group}), routed_scaling_factor {cfg.routed_scaling_factor}")
    rope = f"YaRN {dict(cfg.rope_scaling)}" if cfg.rope_scaling else "plain RoPE"
    print(f"  positions: rope_theta {cfg.rope_theta:g}, {rope}, max_position_embeddings {cfg.max_position_embeddings}")
    print("  weights (HF names, [out, in]):")
    print(f"    model.embed_tokens.weight                     {[cfg.vocab_size, cfg.hidden_size]}")
    if cfg.first_k_dense_replace:
        print(f"  dense block (layers 0..{cfg.first_k_dense_replace - 1}):")
        print("\n".join(_block_summary(decoder_layer_shapes(cfg, 0))))
    if cfg.num_moe_layers:
        print(f"  MoE block (layers {cfg.first_k_dense_replace}..{cfg.num_hidden_layers - 1}):")
        print("\n".join(_block_summary(decoder_layer_shapes(cfg, cfg.first_k_dense_replace))))
    if cfg.num_nextn_predict_layers:
        own = ("enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight")
        shapes = mtp_layer_shapes(cfg, 0, with_shared_copies=False)
        print(f"  MTP module (layers {cfg.num_hidden_layers}..): one MoE block as above, embedding and head "
              "shared with the main model, plus:")
        print("\n".join(_block_summary({k: shapes[k] for k in own})))
    print(f"  parameters: total {counts['total']:,}  activated {counts['activated']:,}  MTP {counts['mtp']:,}")
    print(f"  KV cache per token per layer: {cache['mla']} values (MLA, absorbed) vs {cache['mha']} for "
          f"multi-head K/V of the same heads: {cache['reduction']:.1%} smaller; "
          f"{cache['mla'] * cfg.num_hidden_layers * 2 / 1000:.1f} KB/token in bf16 over {cfg.num_hidden_layers} layers")
    return 0
