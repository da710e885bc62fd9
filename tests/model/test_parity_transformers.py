"""Parity with transformers' DeepseekV3ForCausalLM (PyTorch, CPU, float32).

Small random configs cover the branches that differ between implementations: q_lora on
and off, group-limited routing (n_group > 1, topk_group < n_group), dense-first layers
or none, norm_topk_prob on and off, routed_scaling_factor != 1, YaRN with factor > 1
(including mscale != mscale_all_dim, where the rope cos/sin carry an attention factor),
and a router bias large enough to change which experts are chosen.

Directions: transformers' save_pretrained -> load_hf (logits, greedy generation), and
save_hf -> transformers' from_pretrained (logits).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from model.config import ModelConfig, yarn_scaling  # noqa: E402
from model.convert import load_hf, save_hf  # noqa: E402
from model.transformer import DeepSeekV3CausalLM  # noqa: E402

VOCAB = 160
TOLERANCE = 1e-4

_BASE = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8,
    v_head_dim=16, n_routed_experts=8, num_experts_per_tok=3, max_position_embeddings=512,
    initializer_range=0.1,  # peaked logits: greedy tokens are not decided by 1e-6 ties
    bos_token_id=None, eos_token_id=None, pad_token_id=None)

CONFIGS = {
    "qlora-groups-yarn": dict(
        q_lora_rank=32, first_k_dense_replace=1, n_group=4, topk_group=2, norm_topk_prob=True,
        routed_scaling_factor=2.5,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0, "beta_fast": 32.0,
                         "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0,
                         "original_max_position_embeddings": 64}),
    "no-qlora-all-moe-plain-rope": dict(
        q_lora_rank=None, first_k_dense_replace=0, n_group=1, topk_group=1, norm_topk_prob=False,
        routed_scaling_factor=1.0, rope_parameters={"rope_type": "default", "rope_theta": 500.0}),
    "two-dense-yarn-attention-factor": dict(
        q_lora_rank=24, first_k_dense_replace=2, num_hidden_layers=4, n_group=2, topk_group=1,
        norm_topk_prob=True, routed_scaling_factor=1.7,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "beta_fast": 32.0,
                         "beta_slow": 1.0, "mscale": 0.707, "mscale_all_dim": 1.0,
                         "original_max_position_embeddings": 128}),
}


def _routers(hf_model):
    return [m for m in hf_model.modules() if type(m).__name__ == "DeepseekV3TopkRouter"]


def _make_hf_model(overrides: dict, seed: int):
    torch.manual_seed(seed)
    config = transformers.DeepseekV3Config(**{**_BASE, **overrides})
    model = transformers.DeepseekV3ForCausalLM(config).eval()
    with torch.no_grad():
        for router in _routers(model):
            router.e_score_correction_bias.copy_(torch.randn(config.n_routed_experts) * 0.3)
    return model


@pytest.fixture(scope="module", params=list(CONFIGS), ids=list(CONFIGS))
def pair(request, tmp_path_factory):
    """(transformers model, our model loaded from its save_pretrained directory)."""
    hf_model = _make_hf_model(CONFIGS[request.param], seed=len(request.param))
    directory = tmp_path_factory.mktemp(request.param)
    hf_model.save_pretrained(directory)
    with pytest.warns(UserWarning, match="no MTP layer"):
        ours = load_hf(directory)
    return hf_model, ours


def _hf_logits(hf_model, ids):
    with torch.no_grad():
        return hf_model(torch.tensor(ids)).logits.numpy()


def test_router_bias_changes_expert_selection(pair):
    """Guards the test itself: the random bias must matter, or a loader that dropped it
    would still pass."""
    hf_model, _ = pair
    router = _routers(hf_model)[0]
    hidden = torch.randn(64, hf_model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        biased = router(hidden)[2].sort(dim=-1).values
        saved = router.e_score_correction_bias.clone()
        router.e_score_correction_bias.zero_()
        unbiased = router(hidden)[2].sort(dim=-1).values
        router.e_score_correction_bias.copy_(saved)
    assert not torch.equal(biased, unbiased)


def test_logits_match_transformers(pair):
    hf_model, ours = pair
    ids = np.random.default_rng(1).integers(0, VOCAB, size=(3, 48))
    expected = _hf_logits(hf_model, ids)
    got = np.asarray(ours(ids))
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= TOLERANCE


@pytest.mark.slow
def test_greedy_generation_matches_transformers(pair):
    hf_model, ours = pair
    rng = np.random.default_rng(2)
    prompts = [rng.integers(0, VOCAB, size=9).tolist(), rng.integers(0, VOCAB, size=5).tolist()]
    ids = torch.zeros((2, 9), dtype=torch.long)
    mask = torch.zeros((2, 9), dtype=torch.long)
    for row, prompt in enumerate(prompts):  # left padding, as our generate pads
        ids[row, 9 - len(prompt):] = torch.tensor(prompt)
        mask[row, 9 - len(prompt):] = 1
    with torch.no_grad():
        out = hf_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=False,
                                pad_token_id=0)
    expected = out[:, 9:].tolist()
    got = ours.generate(prompts, max_new_tokens=20, eos_token_id=-1)
    assert got == expected


def test_save_hf_loads_in_transformers(tmp_path):
    """Our model (with MTP, a non-zero router bias) -> save_hf -> from_pretrained: same logits."""
    cfg = ModelConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
        first_k_dense_replace=1, num_attention_heads=4, q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=16,
        qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=3,
        n_group=4, topk_group=2, routed_scaling_factor=2.5, rope_scaling=yarn_scaling(8, 64),
        max_position_embeddings=512, num_nextn_predict_layers=1, initializer_range=0.1)
    ours = DeepSeekV3CausalLM(cfg)
    rng = np.random.default_rng(3)
    for moe in ours.moe_layers():
        moe.gate.e_score_correction_bias.assign(rng.normal(0, 0.3, cfg.n_routed_experts).astype("float32"))
    save_hf(ours, tmp_path / "hf")
    hf_model = transformers.DeepseekV3ForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = rng.integers(0, VOCAB, size=(2, 40))
    assert np.max(np.abs(np.asarray(ours(ids)) - _hf_logits(hf_model, ids))) <= TOLERANCE
