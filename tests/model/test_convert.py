"""model/convert.py: HF checkpoint import/export without torch.

Round trips bit for bit (fp32 and bf16, sharded, MTP included), transformers' fused expert
layout, FP8 block dequantization, error messages that name the file and the tensor,
atomic writes, and the `seekforge convert` commands.
"""

import json
import os
import shutil

import ml_dtypes
import numpy as np
import pytest

from model import fp8_blocks
from model.config import ModelConfig, yarn_scaling
from model.convert import CheckpointError, load_hf, save_hf
from model.safetensors_io import TensorReader, list_tensors, write_file
from model.transformer import DeepSeekV3CausalLM

CFG = ModelConfig(
    vocab_size=96, hidden_size=160, intermediate_size=200, moe_intermediate_size=48, num_hidden_layers=2,
    first_k_dense_replace=1, num_attention_heads=2, q_lora_rank=40, kv_lora_rank=24, qk_nope_head_dim=8,
    qk_rope_head_dim=4, v_head_dim=8, n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2,
    n_group=2, topk_group=1, rope_scaling=yarn_scaling(4, 64), max_position_embeddings=256,
    num_nextn_predict_layers=1, initializer_range=0.05)
IDS = np.arange(16, dtype="int32").reshape(2, 8) % CFG.vocab_size


# ---------------------------------------------------------------- helpers
def read_checkpoint(directory) -> dict[str, np.ndarray]:
    tensors = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".safetensors"):
            with TensorReader(os.path.join(directory, name)) as reader:
                for info in list_tensors(os.path.join(directory, name)):
                    tensors[info.name] = reader.get(info.name)
    return tensors


def write_checkpoint(directory, tensors: dict, config: dict) -> None:
    """One-file checkpoint with the given tensors and config.json."""
    os.makedirs(directory, exist_ok=True)
    write_file(os.path.join(directory, "model.safetensors"), tensors)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A random model (non-zero router biases) and its fp32 hub checkpoint, in 3+ shards."""
    model = DeepSeekV3CausalLM(CFG)
    rng = np.random.default_rng(0)
    for moe in model.moe_layers():
        moe.gate.e_score_correction_bias.assign(rng.normal(0, 0.3, CFG.n_routed_experts).astype("float32"))
    directory = tmp_path_factory.mktemp("ref") / "fp32"
    save_hf(model, directory, max_shard_bytes=400_000)
    return model, directory, np.asarray(model(IDS))


# ---------------------------------------------------------------- round trips
def test_fp32_round_trip_is_bitwise_and_sharded(reference, tmp_path):
    model, directory, logits = reference
    files = os.listdir(directory)
    assert "model.safetensors.index.json" in files and sum(f.endswith(".safetensors") for f in files) >= 3
    original = read_checkpoint(directory)
    assert "model.layers.2.shared_head.head.weight" in original     # MTP layer with its copies
    assert original["model.layers.1.mlp.experts.3.down_proj.weight"].shape == (160, 48)
    loaded = load_hf(directory)
    np.testing.assert_array_equal(np.asarray(loaded(IDS)), logits)
    save_hf(loaded, tmp_path / "again", max_shard_bytes=10**9)
    assert sorted(os.listdir(tmp_path / "again")) == ["config.json", "model.safetensors"]
    assert_bitwise_equal(original, read_checkpoint(tmp_path / "again"))


def test_bf16_checkpoint_loaded_in_float32_saves_back_bitwise(reference, tmp_path):
    model, _, _ = reference
    save_hf(model, tmp_path / "bf16", dtype="bfloat16")
    original = read_checkpoint(tmp_path / "bf16")
    assert original["model.embed_tokens.weight"].dtype == ml_dtypes.bfloat16
    assert original["model.layers.1.mlp.gate.e_score_correction_bias"].dtype == np.float32
    loaded = load_hf(tmp_path / "bf16")
    assert loaded.embed_tokens.embeddings.dtype == "float32"
    save_hf(loaded, tmp_path / "back")
    assert_bitwise_equal(original, read_checkpoint(tmp_path / "back"))


# ---------------------------------------------------------------- layouts
def fuse_experts(tensors: dict, layer: int) -> dict:
    """The layout transformers keeps in memory: experts.gate_up_proj [E, 2I, H] (gate
    rows first) and experts.down_proj [E, H, I]."""
    prefix = f"model.layers.{layer}.mlp.experts"
    experts = range(CFG.n_routed_experts)
    fused = {k: v for k, v in tensors.items() if not k.startswith(prefix + ".")}
    fused[prefix + ".gate_up_proj"] = np.stack([np.concatenate(
        [tensors[f"{prefix}.{e}.gate_proj.weight"], tensors[f"{prefix}.{e}.up_proj.weight"]]) for e in experts])
    fused[prefix + ".down_proj"] = np.stack([tensors[f"{prefix}.{e}.down_proj.weight"] for e in experts])
    return fused


def test_fused_expert_layout_loads_like_the_hub_layout(reference, tmp_path):
    model, directory, logits = reference
    tensors = fuse_experts(fuse_experts(read_checkpoint(directory), 1), 2)  # main MoE layer and MTP
    write_checkpoint(tmp_path, tensors, CFG.to_hf())
    loaded = load_hf(tmp_path)
    np.testing.assert_array_equal(np.asarray(loaded(IDS)), logits)
    save_hf(loaded, tmp_path / "hub")
    assert_bitwise_equal(read_checkpoint(directory), read_checkpoint(tmp_path / "hub"))


def test_fp8_weights_are_dequantized_block_by_block(reference, tmp_path):
    _, directory, _ = reference
    tensors = read_checkpoint(directory)
    quantized, expected = {}, {}
    for name, value in tensors.items():
        linear = value.ndim == 2 and name.endswith("proj.weight")
        if not linear:
            quantized[name] = expected[name] = value
            continue
        weight, scale = fp8_blocks.quantize(value)
        quantized[name], quantized[name + "_scale_inv"] = weight, scale
        # independent reference: expand each block's scale over its 128x128 block
        full_scale = np.kron(scale, np.ones((128, 128), np.float32))[:value.shape[0], :value.shape[1]]
        expected[name] = weight.astype(np.float32) * full_scale
        assert np.max(np.abs(expected[name] - value)) <= np.abs(value).max() / 8  # E4M3: 3 mantissa bits
    assert quantized["model.layers.0.mlp.gate_proj.weight_scale_inv"].shape == (2, 2)  # 200x160: partial blocks
    config = {**CFG.to_hf(), "quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
                                                     "weight_block_size": [128, 128]}}
    write_checkpoint(tmp_path / "fp8", quantized, config)
    write_checkpoint(tmp_path / "expected", expected, CFG.to_hf())
    got, want = load_hf(tmp_path / "fp8"), load_hf(tmp_path / "expected")
    for a, b in zip(got.weights, want.weights):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value), err_msg=a.path)
    save_hf(got, tmp_path / "saved")
    saved = read_checkpoint(tmp_path / "saved")
    assert saved["model.layers.0.mlp.gate_proj.weight"].dtype == ml_dtypes.bfloat16  # FP8 is saved as bf16
    assert not any(name.endswith("_scale_inv") for name in saved)


def test_dequantize_matches_a_per_element_reference():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(5, 7)).astype(ml_dtypes.float8_e4m3fn)
    scale = rng.uniform(0.5, 2, size=(3, 2)).astype(np.float32)
    got = fp8_blocks.dequantize(weight, scale, block=(2, 4))
    want = np.array([[float(weight[i, j]) * scale[i // 2, j // 4] for j in range(7)] for i in range(5)])
    np.testing.assert_allclose(got, want, rtol=1e-7)


# ---------------------------------------------------------------- MTP and shared copies
def test_checkpoint_without_mtp_loads_without_mtp(reference, tmp_path):
    _, directory, logits = reference
    tensors = {k: v for k, v in read_checkpoint(directory).items() if not k.startswith("model.layers.2.")}
    write_checkpoint(tmp_path, tensors, CFG.to_hf())
    with pytest.warns(UserWarning, match="no MTP layer"):
        loaded = load_hf(tmp_path)
    assert loaded.cfg.num_nextn_predict_layers == 0 and not loaded.mtp_layers
    np.testing.assert_array_equal(np.asarray(loaded(IDS)), logits)
    with pytest.raises(CheckpointError, match="model.layers.2"):
        load_hf(tmp_path, mtp="require")


def test_mtp_copy_that_differs_from_the_main_embedding_warns(reference, tmp_path):
    _, directory, _ = reference
    tensors = read_checkpoint(directory)
    tensors["model.layers.2.embed_tokens.weight"] = tensors["model.layers.2.embed_tokens.weight"] + 1
    write_checkpoint(tmp_path, tensors, CFG.to_hf())
    with pytest.warns(UserWarning, match="model.layers.2.embed_tokens.weight.*differs"):
        load_hf(tmp_path)


# ---------------------------------------------------------------- bad input
@pytest.fixture
def single_file(reference, tmp_path):
    _, directory, _ = reference
    return read_checkpoint(directory), tmp_path / "bad"


def test_missing_tensor_is_named(single_file):
    tensors, bad = single_file
    del tensors["model.layers.1.mlp.experts.2.up_proj.weight"]
    write_checkpoint(bad, tensors, CFG.to_hf())
    with pytest.raises(CheckpointError, match=r"missing.*model\.layers\.1\.mlp\.experts\.2\.up_proj\.weight"):
        load_hf(bad)


def test_unexpected_tensor_names_file_and_tensor(single_file):
    tensors, bad = single_file
    tensors["model.layers.0.self_attn.rotary.inv_freq"] = np.zeros(3, np.float32)
    write_checkpoint(bad, tensors, CFG.to_hf())
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'model\.layers\.0\.self_attn\.rotary"):
        load_hf(bad)


def test_wrong_shape_names_file_tensor_and_shapes(single_file):
    tensors, bad = single_file
    tensors["model.layers.0.self_attn.kv_b_proj.weight"] = np.zeros((32, 20), np.float32)
    write_checkpoint(bad, tensors, CFG.to_hf())
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'model\.layers\.0\.self_attn\.kv_b_proj"
                                              r"\.weight' has shape \[32, 20\], but config\.json implies \[32, 24\]"):
        load_hf(bad)


def test_config_that_does_not_match_the_weights(reference, tmp_path):
    _, directory, _ = reference
    shutil.copytree(directory, tmp_path / "ckpt")
    with open(tmp_path / "ckpt" / "config.json") as f:
        config = json.load(f)
    config["num_attention_heads"] = 4
    with open(tmp_path / "ckpt" / "config.json", "w") as f:
        json.dump(config, f)
    with pytest.raises(CheckpointError, match=r"model-\d{5}-of-\d{5}\.safetensors: tensor 'model\.layers\.0\."
                                              r"self_attn\.\w+\.weight' has shape \[32, 24\], but config\.json "
                                              r"implies \[64, 24\]; the config does not match the weights"):
        load_hf(tmp_path / "ckpt")


def test_fp8_weight_without_scale_is_an_error(single_file):
    tensors, bad = single_file
    name = "model.layers.0.mlp.up_proj.weight"
    tensors[name] = tensors[name].astype(ml_dtypes.float8_e4m3fn)
    write_checkpoint(bad, tensors, CFG.to_hf())
    with pytest.raises(CheckpointError, match=r"FP8 tensor 'model\.layers\.0\.mlp\.up_proj\.weight' has no"):
        load_hf(bad)


def test_index_listing_a_missing_shard_is_an_error(reference, tmp_path):
    _, directory, _ = reference
    shutil.copytree(directory, tmp_path / "ckpt")
    os.remove(sorted((tmp_path / "ckpt").glob("model-00002-*.safetensors"))[0])
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json: lists model-00002-of"):
        load_hf(tmp_path / "ckpt")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="config.json: no such file"):
        load_hf(tmp_path)


# ---------------------------------------------------------------- atomic writes
def test_save_refuses_a_non_empty_directory_and_leaves_nothing_on_failure(reference, tmp_path, monkeypatch):
    model, _, _ = reference
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not empty"):
        save_hf(model, tmp_path / "taken")
    assert os.listdir(tmp_path / "taken") == ["keep.txt"]

    import model.convert as convert

    calls = []

    def failing_write(path, tensors):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        write_file(path, tensors)

    monkeypatch.setattr(convert, "write_file", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save_hf(model, tmp_path / "new", max_shard_bytes=400_000)
    assert sorted(os.listdir(tmp_path)) == ["taken"]  # no half-written or temporary directory


# ---------------------------------------------------------------- CLI
def test_cli_from_hf_to_hf_round_trip_is_bitwise(reference, tmp_path):
    from stages.cli import main

    model, _, _ = reference
    save_hf(model, tmp_path / "hf", dtype="bfloat16")
    assert main(["convert", "from-hf", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    assert sorted(os.listdir(tmp_path / "ours")) == ["config.json", "hf_dtypes.json", "model.weights.h5"]
    assert main(["convert", "to-hf", str(tmp_path / "ours"), str(tmp_path / "back")]) == 0
    assert_bitwise_equal(read_checkpoint(tmp_path / "hf"), read_checkpoint(tmp_path / "back"))


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    from stages.cli import main

    assert main(["convert", "from-hf", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "not a directory" in capsys.readouterr().err
