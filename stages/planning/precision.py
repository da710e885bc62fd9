"""Training recipes: the bytes per parameter of each model state and what the backward
pass keeps of the activations.

Two named recipes:
- "deepseek-v3", the V3 paper's §3.3: BF16 weights for compute; FP32 gradients ("used
  for batch size accumulation") and FP32 master weights; AdamW's first and second
  moments in BF16 (§3.3.3 "Low-Precision Optimizer States"). Activations: inputs of
  the Linear layers cached in FP8 with 1x128 tile scales, the input of the Linear after
  attention in E5M6 (12 bits), the SwiGLU inputs in FP8 (§3.3.2 "Low-Precision
  Storage"); RMSNorm outputs, MLA up-projections (q, k, v) and SwiGLU outputs recomputed
  in the backward pass (§3.3.1, §3.3.2). All-to-all dispatch in FP8, combine in BF16
  (§3.3.2 "Low-Precision Communication").
- "bf16-fp32-adam", plain mixed precision as the ZeRO paper counts it (Rajbhandari et
  al. 2020, §3.1: 2 + 2 + 12 = 16 bytes per parameter): BF16 weights and gradients,
  FP32 master weights and both moments; every activation the backward needs kept in
  BF16 (what autodiff of model/ keeps); all-to-all in BF16.
"""

from __future__ import annotations

import dataclasses

FP8_TILE = 1 + 4 / 128          # an E4M3 value plus its share of one FP32 scale per 1x128 tile
RECOMPUTE = ("none", "selective", "full")


@dataclasses.dataclass(frozen=True)
class TrainingPrecision:
    name: str
    weight_bytes: float              # working copy used by forward and backward
    grad_bytes: float
    master_bytes: float              # optimizer's copy of the weights (0: the working copy is the master)
    moment_bytes: float              # each of AdamW's two moments
    activation_bytes: float = 2.0    # activations kept as they are (BF16)
    linear_input_bytes: float = 2.0  # cached inputs of Linear layers (and of the routed experts)
    attention_output_bytes: float = 2.0
    swiglu_input_bytes: float = 2.0
    dispatch_bytes: float = 2.0      # all-to-all: tokens to experts (forward) and output gradients (backward)
    combine_bytes: float = 2.0       # all-to-all: expert outputs back (forward) and input gradients (backward)
    recompute: str = "none"          # none | selective (the V3 list) | full (each layer from its input)
    # Apply the gating weight to the SwiGLU output on the expert side (the down-projection
    # is linear and has no bias, so the result is the same); its gradient then needs only
    # tensors already kept, so the K expert outputs need not be kept for the combine's
    # backward. False: the weighted sum after the combine, as model/experts.py computes it.
    gate_on_expert_side: bool = False

    def __post_init__(self):
        if self.recompute not in RECOMPUTE:
            raise ValueError(f"recompute (--recompute) must be one of {', '.join(RECOMPUTE)}, got {self.recompute!r}")

    @property
    def optimizer_bytes(self) -> float:
        return self.master_bytes + 2 * self.moment_bytes

    def with_recompute(self, recompute: str | None) -> "TrainingPrecision":
        return self if recompute is None else dataclasses.replace(self, recompute=recompute)


RECIPES: dict[str, TrainingPrecision] = {
    "deepseek-v3": TrainingPrecision(
        "deepseek-v3", weight_bytes=2, grad_bytes=4, master_bytes=4, moment_bytes=2,
        linear_input_bytes=FP8_TILE, attention_output_bytes=1.5, swiglu_input_bytes=FP8_TILE,
        dispatch_bytes=FP8_TILE, combine_bytes=2, recompute="selective", gate_on_expert_side=True),
    "bf16-fp32-adam": TrainingPrecision(
        "bf16-fp32-adam", weight_bytes=2, grad_bytes=2, master_bytes=4, moment_bytes=4),
}


def get_recipe(name: str) -> TrainingPrecision:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r} (--recipe); choose one of {', '.join(RECIPES)}") from None
