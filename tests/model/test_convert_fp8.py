"""save_hf(dtype="fp8"): DeepSeek-V3's hub FP8 layout, read back by load_hf and transformers.

The error bound. Per weight it is derived: a FP8 weight is stored as v = W / S with
S = amax(|block|) / 448, so |v| <= 448, and float8_e4m3fn rounds v to nearest with 3
mantissa bits: |error| <= 2^-4 |v| for normal numbers (|v| >= 2^-6) and <= 2^-10 (half the
subnormal spacing 2^-9) below. Times S: |W' - W| <= max(2^-4 |W|, 2^-10 S). bfloat16 keeps
8 significant bits: |W' - W| <= 2^-8 |W|. The logits have no closed-form bound (the error
goes through attention, SwiGLU and routing), so the test separates the two: the round-trip
model must equal, to 1e-5, the original with its weights rounded in numpy (all of the
logit error is weight rounding), and that rounding moves the logits by a relative
Frobenius error of 5.3-6.5% (max |diff| <= 11% of max |logit|), measured over 12 seeds on
each backend with every expert chosen (a top-k that can flip makes single tokens jump);
tested at 10% and 20%.
"""

import json
import math
import os

import keras
import ml_dtypes
import numpy as np
import pytest

from model import fp8_blocks
from model.config import ModelConfig, yarn_scaling
from model.convert import load_hf, save_hf
from model.safetensors_io import list_tensors
from model.transformer import DeepSeekV3CausalLM
from tests.model.test_convert import CFG, IDS, assert_bitwise_equal, read_checkpoint, write_checkpoint

FP8 = np.dtype(ml_dtypes.float8_e4m3fn)
BF16 = np.dtype(ml_dtypes.bfloat16)
MAX_SHARD_BYTES = 150_000
HUB_QUANTIZATION_CONFIG = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                           "weight_block_size": [128, 128]}


def hub_fp8_names(cfg) -> set[str]:
    """The tensors the hub checkpoint stores in FP8, listed by hand (not through
    fp8_blocks.stored_in_fp8): each decoder layer's Linear weights, the MTP layer's too,
    but not the MTP eh_proj."""
    names = set()
    for layer in range(cfg.num_hidden_layers + cfg.num_nextn_predict_layers):
        p = f"model.layers.{layer}."
        names |= {f"{p}self_attn.{n}.weight" for n in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj",
                                                       "o_proj")}
        if layer < cfg.first_k_dense_replace:
            mlps = ["mlp."]
        else:
            mlps = ["mlp.shared_experts."] + [f"mlp.experts.{e}." for e in range(cfg.n_routed_experts)]
        names |= {f"{p}{m}{n}.weight" for m in mlps for n in ("gate_proj", "up_proj", "down_proj")}
    return names


def random_model(cfg, seed):
    """A random model with non-zero router biases."""
    keras.utils.set_random_seed(seed)
    model = DeepSeekV3CausalLM(cfg)
    rng = np.random.default_rng(seed)
    for moe in model.moe_layers():
        moe.gate.e_score_correction_bias.assign(rng.normal(0, 0.3, cfg.n_routed_experts).astype("float32"))
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(model, its float32 checkpoint, its FP8 checkpoint in several shards)."""
    model = random_model(CFG, seed=0)
    root = tmp_path_factory.mktemp("fp8")
    save_hf(model, root / "fp32")
    save_hf(model, root / "fp8", dtype="fp8", max_shard_bytes=MAX_SHARD_BYTES)
    return model, root / "fp32", root / "fp8"


# ---------------------------------------------------------------- the layout
def test_fp8_tensors_scales_and_config_are_the_hubs(saved):
    _, fp32_dir, fp8_dir = saved
    tensors, plain = read_checkpoint(fp8_dir), read_checkpoint(fp32_dir)
    fp8_names = hub_fp8_names(CFG)
    scales = {name for name in tensors if name.endswith(".weight_scale_inv")}
    assert scales == {name.removesuffix(".weight") + ".weight_scale_inv" for name in fp8_names}
    assert set(tensors) - scales == set(plain)  # the same hub names, MTP copies included
    for name, value in tensors.items():
        if name in fp8_names:
            assert value.dtype == FP8, name
        elif name in scales:
            weight = tensors[name.removesuffix("_scale_inv")]
            assert value.dtype == np.float32, name
            assert value.shape == (math.ceil(weight.shape[0] / 128), math.ceil(weight.shape[1] / 128)), name
        elif name.endswith("mlp.gate.e_score_correction_bias"):
            assert value.dtype == np.float32, name
        else:
            assert value.dtype == BF16, name
    for name in ("model.layers.2.eh_proj.weight", "model.layers.1.mlp.gate.weight", "lm_head.weight",
                 "model.layers.2.shared_head.head.weight", "model.layers.2.self_attn.kv_a_layernorm.weight"):
        assert tensors[name].dtype == BF16, name                                 # hub: not FP8
    assert tensors["model.layers.0.mlp.gate_proj.weight_scale_inv"].shape == (2, 2)  # [200, 160]: partial blocks
    with open(fp8_dir / "config.json") as f:
        config = json.load(f)
    assert config["quantization_config"] == HUB_QUANTIZATION_CONFIG
    assert config["dtype"] == "bfloat16"


def test_fp8_shards_count_scale_bytes_and_the_index_lists_scales(saved):
    _, _, fp8_dir = saved
    files = sorted(f for f in os.listdir(fp8_dir) if f.endswith(".safetensors"))
    assert len(files) >= 3
    where = {info.name: file for file in files for info in list_tensors(str(fp8_dir / file))}
    with open(fp8_dir / "model.safetensors.index.json") as f:
        index = json.load(f)
    assert index["weight_map"] == where
    tensors = read_checkpoint(fp8_dir)
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in tensors.values())
    for file in files:
        names = [name for name, f in where.items() if f == file]
        assert len(names) == 1 or sum(tensors[n].nbytes for n in names) <= MAX_SHARD_BYTES, file
    for name in where:
        if name.endswith("_scale_inv"):
            assert where[name] == where[name.removesuffix("_scale_inv")], name  # a weight and its scale together


def test_every_weight_is_within_its_rounding_bound(saved):
    _, fp32_dir, fp8_dir = saved
    tensors, original = read_checkpoint(fp8_dir), read_checkpoint(fp32_dir)
    for name, want in original.items():
        got = tensors[name]
        if got.dtype == FP8:
            scale = tensors[name + "_scale_inv"]
            # amax / 448 per block, computed here with 128x128 slices
            for i in range(scale.shape[0]):
                for j in range(scale.shape[1]):
                    block = want[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128]
                    assert scale[i, j] == np.float32(np.abs(block).max()) / np.float32(448), name
            full_scale = np.kron(scale, np.ones((128, 128), np.float32))[:want.shape[0], :want.shape[1]]
            error = np.abs(got.astype(np.float32) * full_scale - want)
            bound = np.maximum(np.abs(want) * 2.0**-4, full_scale * 2.0**-10) * (1 + 2.0**-20)  # + float32 slack
        elif got.dtype == BF16:
            error, bound = np.abs(got.astype(np.float32) - want), np.abs(want) * 2.0**-8
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)  # the router bias stays float32
            continue
        assert np.all(error <= bound), f"{name}: worst error / bound {np.max(error / np.maximum(bound, 1e-30)):.3g}"


def test_quantize_matches_a_per_block_reference():
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(5, 7)).astype(np.float32)
    weight[:2, :4] = 0                                       # an all-zero block gets scale 1
    quantized, scale = fp8_blocks.quantize(weight, block=(2, 4))
    assert quantized.dtype == FP8 and scale.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            rows, cols = slice(2 * i, 2 * i + 2), slice(4 * j, 4 * j + 4)
            amax = np.abs(weight[rows, cols]).max()
            want_scale = amax / np.float32(448) if amax > 0 else np.float32(1)
            assert scale[i, j] == want_scale
            want = (weight[rows, cols] / want_scale).astype(FP8)
            assert quantized[rows, cols].tobytes() == want.tobytes()


def test_float8_dtype_names_other_than_fp8_are_refused(saved, tmp_path):
    model, _, _ = saved
    with pytest.raises(ValueError, match="dtype='fp8'"):
        save_hf(model, tmp_path / "cast", dtype="float8_e4m3fn")  # would drop the scales
    assert not os.path.exists(tmp_path / "cast")


# ---------------------------------------------------------------- round trips
def rounded_in_numpy(tensors: dict, fp8_names: set) -> dict:
    """Float32 tensors rounded as save_hf(dtype="fp8") rounds them: FP8 block
    quantization, or bfloat16 (the router bias stays float32)."""
    out = {}
    for name, value in tensors.items():
        if name in fp8_names:
            out[name] = fp8_blocks.dequantize(*fp8_blocks.quantize(value))
        elif name.endswith("e_score_correction_bias"):
            out[name] = value
        else:
            out[name] = value.astype(BF16).astype(np.float32)
    return out


def test_round_trip_logits_equal_numpy_rounding_and_stay_near_the_original(tmp_path):
    cfg = CFG.replace(num_experts_per_tok=CFG.n_routed_experts, n_group=1, topk_group=1)  # no top-k flips
    model = random_model(cfg, seed=1)
    save_hf(model, tmp_path / "fp32")
    save_hf(model, tmp_path / "fp8", dtype="fp8")
    write_checkpoint(tmp_path / "rounded", rounded_in_numpy(read_checkpoint(tmp_path / "fp32"), hub_fp8_names(cfg)),
                     cfg.to_hf())
    loaded, rounded = load_hf(tmp_path / "fp8"), load_hf(tmp_path / "rounded")
    for a, b in zip(loaded.weights, rounded.weights):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value), err_msg=a.path)
    original, got = np.asarray(model(IDS)), np.asarray(loaded(IDS))
    assert np.max(np.abs(got - np.asarray(rounded(IDS)))) <= 1e-5
    assert np.linalg.norm(got - original) <= 0.10 * np.linalg.norm(original)
    assert np.max(np.abs(got - original)) <= 0.20 * np.max(np.abs(original))


def test_fp8_loaded_and_saved_as_fp8_again_is_unchanged(saved, tmp_path):
    _, _, fp8_dir = saved
    save_hf(load_hf(fp8_dir), tmp_path / "again", dtype="fp8", max_shard_bytes=MAX_SHARD_BYTES)
    first, again = read_checkpoint(fp8_dir), read_checkpoint(tmp_path / "again")
    for name in [n for n in first if n.endswith("_scale_inv")]:
        # 448 * S / 448 may round S by an ulp; the FP8 codes it rescales stay the same
        np.testing.assert_array_max_ulp(first.pop(name), again.pop(name), maxulp=1)
    assert_bitwise_equal(first, again)
    assert sorted(os.listdir(fp8_dir)) == sorted(os.listdir(tmp_path / "again"))


def test_cli_to_hf_dtype_fp8_quantizes_a_float_model(saved, tmp_path):
    from stages.cli import main

    _, fp32_dir, fp8_dir = saved
    assert main(["convert", "from-hf", str(fp32_dir), str(tmp_path / "ours")]) == 0
    assert main(["convert", "to-hf", str(tmp_path / "ours"), str(tmp_path / "hf"), "--dtype", "fp8"]) == 0
    assert_bitwise_equal(read_checkpoint(fp8_dir), read_checkpoint(tmp_path / "hf"))  # one shard here, same tensors
    with open(tmp_path / "hf" / "config.json") as f:
        assert json.load(f)["quantization_config"] == HUB_QUANTIZATION_CONFIG


# ---------------------------------------------------------------- transformers
# transformers 5.24 dequantizes FP8 on a machine without a GPU (FineGrainedFP8Config(
# dequantize=True); it needs accelerate installed), but derives the block from the scale
# grid (rows // scale_rows), so only dims that are multiples of 128, or at most 128, come
# out right: these do (256 = 2 blocks). (V3's own kv_a_proj_with_mqa [576, 7168] fails there:
# "Weight shape (576, 7168) not divisible by scale grid (5, 56)".)
ALIGNED = ModelConfig(
    vocab_size=96, hidden_size=64, intermediate_size=256, moe_intermediate_size=32, num_hidden_layers=2,
    first_k_dense_replace=1, num_attention_heads=2, q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=16,
    qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2,
    n_group=2, topk_group=1, routed_scaling_factor=2.5, rope_scaling=yarn_scaling(4, 64),
    max_position_embeddings=256, num_nextn_predict_layers=1, initializer_range=0.1)


def assert_transformers_logits_match_load_hf(cfg, directory):
    """save_hf(dtype="fp8") of a random model, then transformers' logits on it vs load_hf's."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    save_hf(random_model(cfg, seed=3), directory, dtype="fp8")
    ids = np.random.default_rng(3).integers(0, cfg.vocab_size, size=(2, 16))
    expected = np.asarray(load_hf(directory)(ids))
    hf_model, info = transformers.AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, output_loading_info=True,
        quantization_config=transformers.FineGrainedFP8Config(dequantize=True))
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert all(k.startswith(f"model.layers.{cfg.num_hidden_layers}.") for k in info["unexpected_keys"])  # MTP
    with torch.no_grad():
        got = hf_model.eval()(torch.tensor(ids)).logits.numpy()
    assert np.max(np.abs(got - expected)) <= 1e-4  # measured 1.8e-6


@pytest.mark.slow
def test_transformers_loads_the_fp8_checkpoint_on_cpu(tmp_path):
    assert_transformers_logits_match_load_hf(ALIGNED, tmp_path / "fp8")


@pytest.mark.slow
@pytest.mark.xfail(strict=True, raises=AssertionError, reason="transformers 5.24 dequantizes a partial 128x128 "
                                                              "block with the wrong block size (200 rows in 2 "
                                                              "blocks -> blocks of 100)")
def test_transformers_reads_partial_blocks(tmp_path):
    assert_transformers_logits_match_load_hf(ALIGNED.replace(intermediate_size=200), tmp_path / "fp8")
