"""Per-layer compute costs, per token: measured (a JSON file) or estimated from FLOPs.

The model is cut into pieces that each stage holds some of:
  attention       MLA projections + causal attention core, one per decoder layer
  dense_mlp       SwiGLU MLP of the first first_k_dense_replace layers
  moe_mlp         router + shared experts + the K routed experts a token visits
  head            final RMSNorm + output head + cross-entropy (once, plus once per MTP module)
  mtp_projection  an MTP module's eh_proj (its block counts as attention + moe_mlp)
FLOPs follow model/flops.py (2 per multiply-add; the pieces of one model sum to its
forward_flops_per_token with MTP, a test checks). Backward = 2 x forward; of it, the
weight-gradient part W equals the forward FLOPs of the piece's weight matrices (the
attention core has none). Recompute adds forward work to the backward: "selective"
(V3) the MLA up-projections (q_b_proj, kv_b_proj; norms and SwiGLU are elementwise and
left out), "full" the whole forward.

A costs file (JSON) gives measured times instead:
  {"device": "h200", "preset": "small", "seq_len": 4096, "source": "...",
   "pieces": {"moe_mlp": {"tokens": 106496, "forward_backward_ms": 30.86}, ...}}
each piece with "forward_ms" (and optionally "backward_ms", default 2 x forward) or
"forward_backward_ms" (split 1 : 2). The weight-gradient share and the recompute
overhead are taken from the FLOP ratios above. Times scale linearly with tokens, so a
file is valid for its preset, sequence length and device only.
"""

from __future__ import annotations

import dataclasses
import json

from model.config import ModelConfig
from model.flops import attention_flops_per_token

PIECES = ("attention", "dense_mlp", "moe_mlp", "head", "mtp_projection")


@dataclasses.dataclass(frozen=True)
class PieceFlops:
    forward: float            # per token
    weight_matmuls: float     # the part with weights: the forward FLOPs W repeats
    selective_recompute: float


def piece_flops(cfg: ModelConfig, seq_len: int) -> dict[str, PieceFlops]:
    h, heads = cfg.hidden_size, cfg.num_attention_heads
    if cfg.q_lora_rank is None:
        q, q_up = h * heads * cfg.qk_head_dim, 0
    else:
        q_up = cfg.q_lora_rank * heads * cfg.qk_head_dim
        q = h * cfg.q_lora_rank + q_up
    kv_up = cfg.kv_lora_rank * heads * (cfg.qk_nope_head_dim + cfg.v_head_dim)
    projections = q + h * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) + kv_up + heads * cfg.v_head_dim * h
    core = attention_flops_per_token(cfg, seq_len)
    expert = 3 * h * cfg.moe_intermediate_size
    moe = cfg.n_routed_experts * h + (cfg.n_shared_experts + cfg.num_experts_per_tok) * expert
    dense = 3 * h * cfg.intermediate_size
    return {
        "attention": PieceFlops(2 * projections + core, 2 * projections, 2 * (q_up + kv_up)),
        "dense_mlp": PieceFlops(2 * dense, 2 * dense, 0.0),
        "moe_mlp": PieceFlops(2 * moe, 2 * moe, 0.0),
        "head": PieceFlops(2 * h * cfg.vocab_size, 2 * h * cfg.vocab_size, 0.0),
        "mtp_projection": PieceFlops(2 * 2 * h * h, 2 * 2 * h * h, 0.0),
    }


@dataclasses.dataclass(frozen=True)
class PieceCost:
    """Seconds per token of one piece."""
    forward: float
    backward: float           # input + weight gradients, recompute not included
    weight: float             # the W part of backward
    selective_recompute: float


@dataclasses.dataclass(frozen=True)
class LayerCosts:
    pieces: dict[str, PieceCost]
    source: str               # where the numbers come from, printed with every estimate
    estimate: bool            # True: derived from FLOPs and an assumed efficiency

    def chunk(self, counts: dict[str, int], tokens: int, recompute: str) -> tuple[float, float, float]:
        """(forward, backward, weight) seconds of one micro-batch of `tokens` through a
        stage holding `counts[piece]` of each piece; recompute work goes to the backward."""
        f = b = w = 0.0
        for piece, n in counts.items():
            c = self.pieces[piece]
            extra = c.forward if recompute == "full" else c.selective_recompute if recompute == "selective" else 0.0
            f += n * c.forward
            b += n * (c.backward + extra)
            w += n * c.weight
        return f * tokens, b * tokens, w * tokens


def roofline_costs(cfg: ModelConfig, seq_len: int, achieved_tflops: float, label: str) -> LayerCosts:
    """Seconds = FLOPs / achieved FLOP/s, the same rate for every piece: an estimate."""
    rate = achieved_tflops * 1e12
    pieces = {}
    for name, fl in piece_flops(cfg, seq_len).items():
        pieces[name] = PieceCost(fl.forward / rate, 2 * fl.forward / rate, fl.weight_matmuls / rate,
                                 fl.selective_recompute / rate)
    return LayerCosts(pieces, label, estimate=True)


def load_costs(path: str, cfg: ModelConfig, seq_len: int) -> LayerCosts:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such costs file (--costs)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    pieces_in = data.get("pieces")
    if not isinstance(pieces_in, dict):
        raise ValueError(f"{path}: needs a 'pieces' object mapping piece names to timings")
    if data.get("seq_len", seq_len) != seq_len:
        raise ValueError(f"{path}: measured at seq_len {data['seq_len']}, planning for --seq-len {seq_len}")
    flops = piece_flops(cfg, seq_len)
    out = {}
    for name, entry in pieces_in.items():
        if name not in PIECES:
            raise ValueError(f"{path}: pieces.{name}: unknown piece; known: {', '.join(PIECES)}")
        tokens = entry.get("tokens")
        if not isinstance(tokens, (int, float)) or tokens <= 0:
            raise ValueError(f"{path}: pieces.{name}.tokens must be a positive number")
        if "forward_ms" in entry:
            forward = entry["forward_ms"]
            backward = entry.get("backward_ms", 2 * forward)
        elif "forward_backward_ms" in entry:
            forward = entry["forward_backward_ms"] / 3
            backward = 2 * forward
        else:
            raise ValueError(f"{path}: pieces.{name} needs forward_ms or forward_backward_ms")
        fl = flops[name]
        per_token = 1e-3 / tokens
        out[name] = PieceCost(forward * per_token, backward * per_token,
                              forward * per_token * fl.weight_matmuls / fl.forward,
                              forward * per_token * fl.selective_recompute / fl.forward)
    # a piece the file lacks is scaled from a measured one by FLOPs (noted in the source)
    missing = [p for p in PIECES if p not in out]
    if missing:
        ref = max(out, key=lambda p: flops[p].forward)
        rate = flops[ref].forward / out[ref].forward
        for name in missing:
            fl = flops[name]
            out[name] = PieceCost(fl.forward / rate, 2 * fl.forward / rate, fl.weight_matmuls / rate,
                                  fl.selective_recompute / rate)
    source = f"{path}: {data.get('source', 'measured')}"
    if missing:
        source += f" ({', '.join(missing)} scaled by FLOPs from {ref})"
    return LayerCosts(out, source, estimate=False)
