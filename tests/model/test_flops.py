"""Model FLOPs per token: the weight part is twice the activated matrix parameters
(an independent route through count_parameters), attention grows with the context."""

import pytest

from model.config import PRESETS, ModelConfig, count_parameters
from model.flops import attention_flops_per_token, forward_flops_per_token, training_flops_per_token


def non_matmul_parameters(cfg: ModelConfig) -> int:
    """Embedding (a lookup) and norm weights: activated parameters that do no matrix work."""
    norms = cfg.num_hidden_layers * 2 * cfg.hidden_size + cfg.hidden_size + cfg.num_hidden_layers * cfg.kv_lora_rank
    if cfg.q_lora_rank:
        norms += cfg.num_hidden_layers * cfg.q_lora_rank
    return cfg.vocab_size * cfg.hidden_size + norms


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_weight_flops_are_twice_the_activated_matrix_parameters(preset):
    cfg = ModelConfig.from_preset(preset)
    activated = count_parameters(cfg)["activated"]
    attention = cfg.num_hidden_layers * attention_flops_per_token(cfg, 1)
    assert forward_flops_per_token(cfg, 1, mtp=False) - attention == 2 * (activated - non_matmul_parameters(cfg))


def test_v3_numbers():
    cfg = ModelConfig.from_preset("v3-671b")
    forward = forward_flops_per_token(cfg, 4096, mtp=False)
    # ~2 x 37B activated parameters, plus causal attention over 4K: 61 layers x 2 x 128 x 320 x 2048.5
    assert forward == pytest.approx(2 * (37_552_282_624 - non_matmul_parameters(cfg)) + 61 * 2 * 128 * 320 * 2048.5)
    assert 0.08e12 < forward < 0.09e12
    assert training_flops_per_token(cfg, 4096, mtp=False) == 3 * forward
    assert forward_flops_per_token(cfg, 4096) > forward  # MTP adds a block and a head
