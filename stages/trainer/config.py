"""Trainer settings, shared by every training stage's config section. Defaults are the
DeepSeek-V3 paper's (§4.2) where it gives one; the presets in configs/ scale them."""

import dataclasses

PRECISIONS = ("float32", "bf16", "fp8")   # model.fp8.dtype_policy maps them to Keras dtype policies


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with a warmup -> constant -> cosine learning rate; shared by every stage
    that updates weights (the trainer, GRPO, logit distillation)."""
    steps: int = 100                    # optimizer steps
    learning_rate: float = 2.2e-4
    warmup_steps: int = 2000
    constant_steps: int = 0             # after warmup, before the cosine decay starts
    decay_steps: int = 0                # cosine from learning_rate to final_learning_rate
    final_learning_rate: float = 2.2e-5
    adam_beta_1: float = 0.9
    adam_beta_2: float = 0.95
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.1
    clip_norm: float = 1.0              # global gradient norm, over all replicas
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 10
    jit_compile: bool = False           # XLA for the forward/backward

    def __post_init__(self):
        for name in ("steps", "checkpoint_every", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "constant_steps", "decay_steps", "final_learning_rate", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("learning_rate", "clip_norm", "adam_epsilon"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("adam_beta_1", "adam_beta_2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class DistributionConfig:
    """The device mesh of the JAX trainer (stages/trainer/jax_parallel.py); the TensorFlow
    trainer uses `strategy` instead and accepts only the default (1 x 1) mesh here.

    Mesh axes: "data" (replicas of the dense part) x "expert" (routed experts split over
    it). Tokens are split over both: each device routes its own tokens (V3: EP64 whose
    ranks are also data-parallel ranks for attention)."""
    data: int = 1                       # -1: every device not used by the expert axis
    expert: int = 1                     # expert-parallel degree; divides n_routed_experts
    zero: int = 1                       # 0: replicated states; 1: optimizer states sharded over
                                        # every device (ZeRO-1, V3); 3: dense weights too (FSDP)
    capacity_factor: float = 0.0        # 0: dropless all-to-all; > 0: rows per peer capped, drops counted
    devices_per_node: int = 8           # for node-limited routing: router groups must map onto nodes

    def __post_init__(self):
        if self.data < 1 and self.data != -1:
            raise ValueError(f"data must be >= 1 or -1 (all remaining devices), got {self.data}")
        if self.expert < 1:
            raise ValueError(f"expert must be >= 1, got {self.expert}")
        if self.zero not in (0, 1, 3):
            raise ValueError(f"zero must be 0, 1 or 3, got {self.zero}")
        if self.capacity_factor < 0:
            raise ValueError(f"capacity_factor must be >= 0 (0: dropless), got {self.capacity_factor}")
        if self.devices_per_node < 1:
            raise ValueError(f"devices_per_node must be >= 1, got {self.devices_per_node}")

    @property
    def is_default(self) -> bool:
        return self.data in (1, -1) and self.expert == 1


@dataclasses.dataclass(frozen=True)
class TrainingConfig(OptimizerConfig):
    seq_len: int = 256                  # tokens per training sequence
    global_batch_size: int = 8          # sequences per optimizer step, over all replicas
    micro_batches: int = 1              # gradient accumulation: the global batch in this many passes
    batch_ramp_steps: int = 0           # optional ramp of the batch size (V3: 3072 -> 15360)
    batch_ramp_start: int = 0           # sequences per step at step 0 when ramping
    # objective
    mtp_lambda: float = 0.3             # 0.3 for the first 10T tokens, then 0.1
    balance_alpha: float = 1e-4         # sequence-wise balance loss weight
    bias_update_gamma: float = 1e-3     # 0 turns auxiliary-loss-free balancing off
    mask_documents: bool = True         # packed documents do not attend to each other
    # execution
    strategy: str = "default"           # default | mirrored | multi_worker (TF_CONFIG)
    input_sharding: str = "batches"     # how workers split the data: batches (exact) | files (at scale)
    precision: str = "float32"          # float32 | bf16 (bf16 compute, float32 master weights) |
                                        # fp8 (bf16 + DeepSeek-V3's FP8 GEMMs: model/fp8.py)
    remat: bool = False                 # recompute each block's activations in backward
    distribution: DistributionConfig = DistributionConfig()   # the JAX trainer's mesh

    def __post_init__(self):
        super().__post_init__()
        for name in ("seq_len", "global_batch_size", "micro_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.global_batch_size % self.micro_batches:
            raise ValueError(f"global_batch_size ({self.global_batch_size}) is not divisible by "
                             f"micro_batches ({self.micro_batches})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.strategy not in ("default", "mirrored", "multi_worker"):
            raise ValueError(f"strategy must be default, mirrored or multi_worker, got {self.strategy!r}")
        if self.batch_ramp_steps and not 0 < self.batch_ramp_start <= self.global_batch_size:
            raise ValueError("batch_ramp_start must be in (0, global_batch_size] when batch_ramp_steps > 0")
