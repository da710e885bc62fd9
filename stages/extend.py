"""Stages `extend_32k` and `extend_128k`: YaRN context extension (V3 paper §4.3), the
pretraining trainer on longer sequences, starting from the upstream stage's checkpoint,
with rope_scaling turned on in the model config it saves.

The names keep the full-scale meaning (4K -> 32K -> 128K); configs/tiny.yaml scales the
lengths down (256 -> 1024 -> 4096) with the same YaRN rules.
"""

import dataclasses

from model.config import ModelConfig
from stages.pretrain import train_stage
from stages.trainer.config import TrainingConfig


@dataclasses.dataclass(frozen=True)
class ExtendConfig(TrainingConfig):
    # YaRN, as config_671B.json: factor 40 over the 4K pretraining context
    rope_factor: float = 40.0
    original_max_position_embeddings: int = 4096
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float = 1.0
    mscale_all_dim: float = 1.0


def extended_config(upstream_model_dir: str, cfg: ExtendConfig) -> ModelConfig:
    base = ModelConfig.from_hf(upstream_model_dir)
    scaling = {"type": "yarn", "factor": cfg.rope_factor,
               "original_max_position_embeddings": cfg.original_max_position_embeddings,
               "beta_fast": cfg.beta_fast, "beta_slow": cfg.beta_slow, "mscale": cfg.mscale,
               "mscale_all_dim": cfg.mscale_all_dim}
    return base.replace(rope_scaling=scaling, max_position_embeddings=max(
        base.max_position_embeddings, int(cfg.rope_factor * cfg.original_max_position_embeddings)))


def _extend(ctx, upstream: str):
    parent = ctx.inputs[upstream]
    return train_stage(ctx, extended_config(parent.model_dir, ctx.config), init_checkpoint=parent.checkpoint)


def run_32k(ctx):
    return _extend(ctx, "pretrain")


def run_128k(ctx):
    return _extend(ctx, "extend_32k")
