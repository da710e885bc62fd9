"""A small model, batches and single-device reference runs for the parallel tests."""

import jax
import keras
import numpy as np

from model.config import ModelConfig
from model.transformer import DeepSeekV3CausalLM
from stages.trainer import jax_parallel
from stages.trainer.adamw import make_optimizer
from stages.trainer.config import DistributionConfig, TrainingConfig
from stages.trainer.jax_step import ParallelStep

# tiny's routing (16 experts, 4 per token, 4 groups of which 2 kept) in 2 layers
MODEL = ModelConfig.from_preset("tiny").replace(num_hidden_layers=2, vocab_size=512)
SEQ_LEN, SEQUENCES = 32, 16


def training_config(**distribution) -> TrainingConfig:
    return TrainingConfig(seq_len=SEQ_LEN, global_batch_size=SEQUENCES, warmup_steps=0, learning_rate=1e-3,
                          distribution=DistributionConfig(**distribution))


def batch(seed: int = 0, micro_batches: int = 1) -> dict:
    """Packed rows of two documents each, so segments and position resets are exercised."""
    rng = np.random.default_rng(seed)
    shape = (micro_batches, SEQUENCES, SEQ_LEN)
    tokens = rng.integers(2, MODEL.vocab_size, shape).astype(np.int32)
    segments = np.where(np.arange(SEQ_LEN) < SEQ_LEN // 2 + 3, 1, 2).astype(np.int32)
    segments = np.broadcast_to(segments, shape).copy()
    positions = np.where(segments == 1, np.arange(SEQ_LEN), np.arange(SEQ_LEN) - (SEQ_LEN // 2 + 3))
    return {"token_ids": tokens, "segment_ids": segments, "position_ids": positions.astype(np.int32),
            "loss_mask": np.ones(shape, np.int32)}


def reference_values(cfg: TrainingConfig, seed: int = 0):
    """Initial (trainable, non-trainable, optimizer) values as numpy, from a fixed seed."""
    keras.utils.set_random_seed(seed)
    model = DeepSeekV3CausalLM(MODEL)
    step = ParallelStep(model, make_optimizer(cfg, model), cfg)
    return jax.tree.map(np.asarray, step.initial_state())


def single_device_step(cfg: TrainingConfig) -> ParallelStep:
    keras.utils.set_random_seed(0)
    model = DeepSeekV3CausalLM(MODEL)
    return ParallelStep(model, make_optimizer(cfg, model), cfg)


def mesh_step(cfg: TrainingConfig) -> ParallelStep:
    mesh = jax_parallel.make_mesh(cfg.distribution)
    with jax_parallel.expert_parallel(mesh, cfg.distribution):
        keras.utils.set_random_seed(0)
        model = DeepSeekV3CausalLM(MODEL)
        optimizer = make_optimizer(cfg, model)
    return ParallelStep(model, optimizer, cfg, mesh)
