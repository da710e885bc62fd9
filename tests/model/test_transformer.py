"""The causal LM as a whole: causality, packed documents, MTP wiring, generation."""

import keras
import numpy as np
import pytest
from keras import ops

from model.transformer import DeepSeekV3CausalLM
from tests.model.helpers import random_tokens, small_config


def logits_of(model, tokens, **kwargs):
    return ops.convert_to_numpy(model(tokens, **kwargs))


def test_output_shape_and_dtype(tiny_model):
    logits = tiny_model(random_tokens((2, 9), tiny_model.cfg.vocab_size))
    assert tuple(logits.shape) == (2, 9, tiny_model.cfg.vocab_size)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


def test_weights_match_the_hf_layout_count(tiny_model):
    from model.config import count_parameters

    counts = count_parameters(tiny_model.cfg)
    trainable = sum(int(np.prod(v.shape)) for v in tiny_model.trainable_variables)
    assert trainable == counts["total"] + counts["mtp"]
    biases = [v for v in tiny_model.non_trainable_variables if "e_score_correction_bias" in v.path]
    assert len(biases) == tiny_model.cfg.num_moe_layers + tiny_model.cfg.num_nextn_predict_layers


def test_causality(tiny_model):
    tokens = random_tokens((2, 16), tiny_model.cfg.vocab_size)
    changed = tokens.copy()
    changed[:, 10:] = random_tokens((2, 6), tiny_model.cfg.vocab_size, seed=9)
    before, after = logits_of(tiny_model, tokens), logits_of(tiny_model, changed)
    np.testing.assert_allclose(after[:, :10], before[:, :10], atol=1e-6)
    assert np.abs(after[:, 10:] - before[:, 10:]).max() > 1e-3


def test_packed_documents_do_not_see_each_other(tiny_model):
    vocab = tiny_model.cfg.vocab_size
    doc_a, doc_b = random_tokens((1, 5), vocab, seed=1), random_tokens((1, 7), vocab, seed=2)
    packed = np.concatenate([doc_a, doc_b], axis=1)
    segments = np.array([[1] * 5 + [2] * 7], "int32")
    positions = np.array([list(range(5)) + list(range(7))])
    logits = logits_of(tiny_model, packed, segment_ids=segments, position_ids=positions)
    np.testing.assert_allclose(logits[:, :5], logits_of(tiny_model, doc_a), atol=2e-5)
    np.testing.assert_allclose(logits[:, 5:], logits_of(tiny_model, doc_b), atol=2e-5)
    # and without segment ids the second document does see the first
    unmasked = logits_of(tiny_model, packed, position_ids=positions)
    assert np.abs(unmasked[:, 5:] - logits[:, 5:]).max() > 1e-3


def test_mtp_combines_hidden_state_with_the_next_token(tiny_model):
    """MTP depth 1 at position i reads token i+1 (and predicts i+2); the main logits at
    position i never depend on token i+1."""
    tokens = random_tokens((1, 12), tiny_model.cfg.vocab_size)
    out = tiny_model(tokens, return_aux=True)
    assert len(out["mtp_logits"]) == 1
    assert tuple(out["mtp_logits"][0].shape) == tuple(out["logits"].shape)
    changed = tokens.copy()
    changed[0, 6] = (tokens[0, 6] + 1) % tiny_model.cfg.vocab_size
    out2 = tiny_model(changed, return_aux=True)
    main, main2 = ops.convert_to_numpy(out["logits"]), ops.convert_to_numpy(out2["logits"])
    mtp, mtp2 = ops.convert_to_numpy(out["mtp_logits"][0]), ops.convert_to_numpy(out2["mtp_logits"][0])
    np.testing.assert_allclose(main2[0, :6], main[0, :6], atol=1e-6)
    np.testing.assert_allclose(mtp2[0, :5], mtp[0, :5], atol=1e-6)
    assert np.abs(mtp2[0, 5] - mtp[0, 5]).max() > 1e-4  # position 5 embeds token 6
    loads = ops.convert_to_numpy(out["expert_loads"])
    cfg = tiny_model.cfg
    assert loads.shape == (cfg.num_moe_layers + cfg.num_nextn_predict_layers, cfg.n_routed_experts)
    np.testing.assert_array_equal(loads.sum(-1), 12 * cfg.num_experts_per_tok)


def test_tied_embeddings_and_mixed_precision():
    keras.utils.set_random_seed(0)
    cfg = small_config(tie_word_embeddings=True)
    model = DeepSeekV3CausalLM(cfg, dtype="mixed_bfloat16")
    assert model.lm_head is None
    out = model(random_tokens((2, 8), cfg.vocab_size), return_aux=True)
    assert keras.backend.standardize_dtype(out["logits"].dtype) == "float32"
    assert np.isfinite(ops.convert_to_numpy(out["logits"])).all()
    assert model.moe_layers()[0].gate.compute_dtype == "float32"
    assert model.decoder_layers[1].self_attn.compute_dtype == "bfloat16"


# -------------------------------------------------------------------------- generate
@pytest.mark.slow
def test_batched_greedy_equals_one_by_one(tiny_model):
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    batched = tiny_model.generate(prompts, 6, eos_token_id=-1)
    for prompt, row in zip(prompts, batched):
        assert row == tiny_model.generate([prompt], 6, eos_token_id=-1)[0]
        assert len(row) == 6


def test_greedy_follows_the_naive_argmax(tiny_model):
    prompt = [3, 4, 5, 6]
    generated = tiny_model.generate([prompt], 5, eos_token_id=-1)[0]
    sequence = list(prompt)
    for _ in range(5):
        sequence.append(int(logits_of(tiny_model, np.array([sequence], "int32"))[0, -1].argmax()))
    assert generated == sequence[len(prompt):]


def test_stops_at_eos(tiny_model):
    first = tiny_model.generate([[3, 4, 5]], 8, eos_token_id=-1)[0]
    stop_token = first[2]
    stopped = tiny_model.generate([[3, 4, 5], [9, 10]], 8, eos_token_id=stop_token)
    assert stopped[0] == first[:first.index(stop_token) + 1]


@pytest.mark.slow
def test_sampling_is_reproducible_and_top_p_narrows(tiny_model):
    prompts = [[3, 4, 5], [6, 7]]
    a = tiny_model.generate(prompts, 6, temperature=1.0, seed=7, eos_token_id=-1)
    b = tiny_model.generate(prompts, 6, temperature=1.0, seed=7, eos_token_id=-1)
    c = tiny_model.generate(prompts, 6, temperature=1.0, seed=8, eos_token_id=-1)
    assert a == b and a != c
    # a nucleus this small keeps only the top token: sampling becomes greedy
    assert tiny_model.generate(prompts, 6, temperature=1.0, top_p=1e-9, eos_token_id=-1) == \
        tiny_model.generate(prompts, 6, eos_token_id=-1)


def test_generate_rejects_bad_input(tiny_model):
    with pytest.raises(ValueError, match="at least one token"):
        tiny_model.generate([[]], 3)
    with pytest.raises(ValueError, match="token ids must lie"):
        tiny_model.generate([[tiny_model.cfg.vocab_size]], 3)
    with pytest.raises(ValueError, match="top_p"):
        tiny_model.generate([[1]], 3, top_p=0)
