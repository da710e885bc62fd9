"""Import and export Hugging Face DeepSeek-V3 checkpoints (config.json + safetensors).

    model = load_hf("DeepSeek-V3-dir")          # hub layout, transformers' fused layout, FP8
    save_hf(model, "out-dir")                   # hub layout, sharded, written atomically

Loading streams: every file header is checked first (names, shapes, config agreement,
nothing read yet), then tensors are read one at a time and assigned into the Keras
variables. Peak memory is the model plus about one tensor (plus, for per-expert tensors,
the stacked variable of the layer being filled).

Dtypes round-trip: the dtype each tensor had on disk is recorded on the model
(`model.hf_dtypes`), and save_hf writes each tensor back in it unless told otherwise, so
a bf16 checkpoint loaded in float32 and saved again is bitwise identical. FP8 weights are
dequantized on load (model.fp8_blocks) and saved as bfloat16, unless save_hf is given
dtype="fp8": then the hub's FP8 layout is written (block-quantized weights, their
weight_scale_inv, quantization_config in config.json).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings

import numpy as np

from model import fp8_blocks
from model.config import ModelConfig, hf_weight_shapes
from model.hf_layout import fused_expert_names, fused_shape, hub_targets, split_fused_experts
from model.safetensors_io import NUMPY_DTYPES, TensorInfo, TensorReader, list_tensors, write_file

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
_SCALE_SUFFIX = fp8_blocks.SCALE_SUFFIX
_FP8_CODES = {"F8_E4M3", "F8_E5M2"}
_FP8 = NUMPY_DTYPES["F8_E4M3"]        # what save_hf(dtype="fp8") writes, as the hub
_ROUTER_BIAS = "e_score_correction_bias"  # a float32 buffer in every implementation


class CheckpointError(ValueError):
    """The checkpoint cannot be loaded; the message names the file and the tensor."""


# ============================================================================ load
def load_hf(path, dtype=None, mtp: str = "auto"):
    """Load a Hugging Face DeepSeek-V3 checkpoint directory into a DeepSeekV3CausalLM.

    dtype: the Keras dtype policy of the model ("float32" by default, "bfloat16", ...).
    mtp: "auto" loads the MTP layers when the checkpoint has them and otherwise builds
    the model without MTP (transformers' save_pretrained writes none), with a warning;
    "require" makes missing MTP tensors an error; "drop" never loads them.
    """
    from model.transformer import DeepSeekV3CausalLM  # Keras loads only when needed

    directory = os.fspath(path)
    if mtp not in ("auto", "require", "drop"):
        raise ValueError(f"mtp must be 'auto', 'require' or 'drop', got {mtp!r}")
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: not a directory")
    config_path = os.path.join(directory, CONFIG_FILE)
    with_config = _read_json(config_path)
    cfg = ModelConfig.from_hf(config_path)
    block = tuple((with_config.get("quantization_config") or {}).get("weight_block_size", fp8_blocks.DEFAULT_BLOCK))
    stored = _inventory(directory)
    plan = _Plan(cfg, stored, block, mtp, directory)
    model = DeepSeekV3CausalLM(plan.cfg, dtype=dtype)
    _stream_into(model, plan)
    return model


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def _inventory(directory: str) -> dict[str, TensorInfo]:
    """Every stored tensor, name -> where it is, from the index (when there is one) and
    the file headers. Nothing is read beyond the headers."""
    index_path = os.path.join(directory, INDEX_FILE)
    if os.path.exists(index_path):
        weight_map = _read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index_path}: no 'weight_map' object")
        files = sorted(set(weight_map.values()))
    elif os.path.exists(os.path.join(directory, SINGLE_FILE)):
        weight_map, files = None, [SINGLE_FILE]
    else:
        raise CheckpointError(f"{directory}: neither {SINGLE_FILE} nor {INDEX_FILE} found")
    stored: dict[str, TensorInfo] = {}
    for name in files:
        file_path = os.path.join(directory, name)
        if not os.path.exists(file_path):
            raise CheckpointError(f"{index_path}: lists {name}, which does not exist")
        for info in list_tensors(file_path):
            if info.name in stored:
                raise CheckpointError(f"{file_path}: tensor {info.name!r} is also stored in {stored[info.name].file}")
            if info.dtype not in NUMPY_DTYPES:
                raise CheckpointError(f"{file_path}: tensor {info.name!r} has unsupported dtype {info.dtype}")
            stored[info.name] = info
    if weight_map is not None:
        for name, file in weight_map.items():
            if name not in stored:
                raise CheckpointError(f"{os.path.join(directory, file)}: tensor {name!r} listed in "
                                      f"{INDEX_FILE} is not in the file")
    return stored


class _Plan:
    """What to load, checked against config.json before anything is read.

    loads: stored name -> hub names it provides (one, or E/2E for a fused tensor).
    scales: stored FP8 weight name -> its scale_inv TensorInfo.
    """

    def __init__(self, cfg: ModelConfig, stored: dict[str, TensorInfo], block, mtp: str, directory: str):
        self.block, self.directory, self.stored = block, directory, stored
        self.scales: dict[str, TensorInfo] = {}
        provides: dict[str, list[str]] = {}
        for name, info in stored.items():
            if name.endswith(_SCALE_SUFFIX):
                weight = name[: -len(_SCALE_SUFFIX)]
                if weight not in stored:
                    raise CheckpointError(f"{info.file}: tensor {name!r} scales {weight!r}, which is not stored")
                self.scales[weight] = info
                continue
            provides[name] = fused_expert_names(name, cfg.n_routed_experts) or [name]
        self.cfg, skipped_prefixes = self._choose_mtp(cfg, provides, mtp)
        expected = hf_weight_shapes(self.cfg)
        self.loads = {name: hub for name, hub in provides.items() if not name.startswith(skipped_prefixes)}
        self._check(expected)

    def _choose_mtp(self, cfg: ModelConfig, provides, mtp: str):
        mtp_prefixes = tuple(f"model.layers.{cfg.num_hidden_layers + d}." for d in range(cfg.num_nextn_predict_layers))
        if not mtp_prefixes:
            return cfg, ()
        present = any(name.startswith(mtp_prefixes) for hub in provides.values() for name in hub)
        if mtp == "require" or (mtp == "auto" and present):
            return cfg, ()
        if mtp == "auto":
            warnings.warn(f"{self.directory}: config.json has num_nextn_predict_layers="
                          f"{cfg.num_nextn_predict_layers} but the checkpoint holds no MTP layer "
                          "(transformers saves none); loading the model without MTP", stacklevel=3)
        return cfg.replace(num_nextn_predict_layers=0), mtp_prefixes

    def _check(self, expected: dict[str, tuple[int, ...]]) -> None:
        cfg, seen = self.cfg, set()
        for name, hub in self.loads.items():
            info = self.stored[name]
            unexpected = [h for h in hub if h not in expected]
            if unexpected:
                raise CheckpointError(f"{info.file}: tensor {name!r} is not part of a DeepSeek-V3 model with "
                                      f"this {CONFIG_FILE} (num_hidden_layers={cfg.num_hidden_layers}, "
                                      f"first_k_dense_replace={cfg.first_k_dense_replace}, "
                                      f"num_nextn_predict_layers={cfg.num_nextn_predict_layers})")
            if len(hub) > 1:
                want = fused_shape(name, cfg.hidden_size, cfg.moe_intermediate_size, cfg.n_routed_experts)
            else:
                want = expected[name]
            if info.shape != want:
                raise CheckpointError(f"{info.file}: tensor {name!r} has shape {list(info.shape)}, but "
                                      f"{CONFIG_FILE} implies {list(want)}; the config does not match the weights")
            if info.dtype in _FP8_CODES:
                self._check_scale(name, info)
            doubled = seen.intersection(hub)
            if doubled:
                raise CheckpointError(f"{info.file}: tensor {name!r} provides {sorted(doubled)[0]!r}, "
                                      "which another tensor (fused or per-expert) already provides")
            seen.update(hub)
        missing = [name for name in expected if name not in seen]
        if missing:
            raise CheckpointError(f"{self.directory}: {len(missing)} tensor(s) that {CONFIG_FILE} implies are missing "
                                  f"from the checkpoint, first {missing[:5]}; is {CONFIG_FILE} the checkpoint's own?")

    def _check_scale(self, name: str, info: TensorInfo) -> None:
        scale = self.scales.get(name)
        if scale is None:
            raise CheckpointError(f"{info.file}: FP8 tensor {name!r} has no {name + _SCALE_SUFFIX!r}")
        if len(info.shape) != 2:
            raise CheckpointError(f"{info.file}: FP8 tensor {name!r} is not 2-D; block scales need [out, in]")
        want = fp8_blocks.scale_shape(info.shape, self.block)
        if scale.shape != want:
            raise CheckpointError(f"{scale.file}: tensor {scale.name!r} has shape {list(scale.shape)}, expected "
                                  f"{list(want)} for {list(info.shape)} in {self.block[0]}x{self.block[1]} blocks")


class _Assigner:
    """Puts hub-layout arrays into the model's variables. Per-expert tensors are collected
    into a buffer of their stacked variable, assigned once every expert has arrived."""

    def __init__(self, model):
        self.targets = hub_targets(model)
        self.buffers: dict[int, tuple[np.ndarray, set[int]]] = {}

    def put(self, name: str, array: np.ndarray) -> None:
        target = self.targets[name]
        variable = target.variable
        value = array.T if target.transpose else array
        dtype = np.dtype(variable.dtype)
        if target.expert is None:
            variable.assign(value.astype(dtype, copy=False))  # no copy when the dtype already fits
            return
        buffer, filled = self.buffers.setdefault(id(variable), (np.empty(variable.shape, dtype), set()))
        buffer[target.expert] = value
        filled.add(target.expert)
        if len(filled) == variable.shape[0]:
            variable.assign(buffer)
            del self.buffers[id(variable)]


def _read(reader: TensorReader, info: TensorInfo, plan: _Plan, readers) -> np.ndarray:
    array = reader.get(info.name)
    if info.dtype in _FP8_CODES:
        scale = plan.scales[info.name]
        array = fp8_blocks.dequantize(array, readers(scale.file).get(scale.name), plan.block)
    return array


def _stream_into(model, plan: _Plan) -> None:
    assigner = _Assigner(model)
    dtypes: dict[str, str] = {}
    copies: list[tuple[str, TensorInfo]] = []
    by_file: dict[str, list[str]] = {}
    for name in plan.loads:
        by_file.setdefault(plan.stored[name].file, []).append(name)
    readers: dict[str, TensorReader] = {}  # an FP8 scale may sit in another shard

    def reader_of(path: str) -> TensorReader:
        if path not in readers:
            readers[path] = TensorReader(path)
        return readers[path]

    for file, names in by_file.items():
        for name in names:
            info = plan.stored[name]
            target = assigner.targets.get(name)
            dtypes.update(dict.fromkeys(plan.loads[name], NUMPY_DTYPES[info.dtype].name))
            if target is not None and target.shared_with is not None:
                copies.append((name, info))  # compared once the main tensor is in
                continue
            array = _read(reader_of(file), info, plan, reader_of)
            pieces = split_fused_experts(name, array) if len(plan.loads[name]) > 1 else [(name, array)]
            for hub_name, piece in pieces:
                assigner.put(hub_name, piece)
            del array, pieces
        readers.clear()  # one shard mapped at a time
    if assigner.buffers:  # _Plan's completeness check makes this unreachable
        raise CheckpointError(f"{plan.directory}: some experts of a stacked expert tensor were never loaded")
    _check_shared_copies(assigner.targets, copies)
    model.hf_dtypes = dtypes


def _check_shared_copies(targets, copies) -> None:
    """The MTP layer's embed_tokens / shared_head.head are copies of the main model's; the
    model shares one tensor, so a copy that differs cannot be represented: warn."""
    for name, info in copies:
        main = _hub_value(targets[targets[name].shared_with])
        with TensorReader(info.file) as reader:
            copy = reader.get(name).astype(main.dtype)
        if not np.array_equal(copy, main):
            warnings.warn(f"{info.file}: tensor {name!r} differs from {targets[name].shared_with!r} (max abs "
                          f"difference {np.max(np.abs(copy - main)):.3g}); the MTP module uses the main model's "
                          "shared tensor", stacklevel=4)


# ============================================================================ save
DEFAULT_MAX_SHARD_BYTES = 4 * 1024**3


def save_hf(model, path, dtype=None, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, overwrite: bool = False) -> None:
    """Write `model` as a Hugging Face DeepSeek-V3 checkpoint directory (hub layout:
    per-expert tensors, the MTP layers with their embed_tokens / shared_head.head
    copies), sharded with an index when larger than max_shard_bytes.

    dtype: None writes each tensor in the dtype it was loaded from (model.hf_dtypes;
    FP8 becomes bfloat16) or else in its variable's dtype; a dtype name ("bfloat16")
    writes every tensor in it except the router's e_score_correction_bias (float32);
    "fp8" writes the hub's FP8 layout: the tensors fp8_blocks.stored_in_fp8 names as
    float8_e4m3fn with a float32 "<name>_scale_inv" per 128x128 block, the rest bfloat16
    (router bias float32). Shards count the scales' bytes, and the index lists them.
    The directory appears complete or not at all: it is written beside its final place
    and renamed.
    """
    destination = os.path.abspath(os.fspath(path))
    if os.path.exists(destination) and os.listdir(destination) and not overwrite:
        raise CheckpointError(f"{destination}: exists and is not empty (pass overwrite=True to replace it)")
    targets = hub_targets(model)
    shapes = hf_weight_shapes(model.cfg, include_mtp=bool(model.mtp_layers))
    dtypes = {name: _save_dtype(name, targets, dtype, getattr(model, "hf_dtypes", {})) for name in shapes}
    sizes = {name: _stored_bytes(shape, dtypes[name]) for name, shape in shapes.items()}
    shards = _plan_shards(sizes, max_shard_bytes)
    parent = os.path.dirname(destination)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.tmp-", dir=parent)
    try:
        values = _ValueCache()
        weight_map = {}
        for index, names in enumerate(shards):
            file = SINGLE_FILE if len(shards) == 1 else f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
            arrays = {}
            for name in names:
                arrays.update(_stored_tensors(name, values.hub_array(targets, name), dtypes[name]))
            write_file(os.path.join(staging, file), arrays)
            weight_map.update(dict.fromkeys(arrays, file))
            del arrays
        if len(shards) > 1:
            index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
            _write_json(os.path.join(staging, INDEX_FILE), index)
        config = model.cfg.to_hf()
        if dtype == "fp8":
            config["quantization_config"] = dict(fp8_blocks.QUANTIZATION_CONFIG)
            config["dtype"] = "bfloat16"  # what the hub says: the unquantized tensors' and compute dtype
        else:
            config["dtype"] = _dominant_dtype(dtypes)
        _write_json(os.path.join(staging, CONFIG_FILE), config)
        _publish(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _save_dtype(name: str, targets, dtype, loaded: dict) -> np.dtype:
    if dtype == "fp8":
        if name.endswith(_ROUTER_BIAS):
            return np.dtype("float32")
        return _FP8 if fp8_blocks.stored_in_fp8(name) else np.dtype("bfloat16")
    if dtype is not None:
        if "float8" in np.dtype(dtype).name:  # a bare cast would drop the block scales
            raise ValueError(f"dtype {dtype!r}: write FP8 checkpoints with dtype='fp8' (block-scaled, hub layout)")
        return np.dtype("float32" if name.endswith(_ROUTER_BIAS) else dtype)
    if name in loaded:
        stored = np.dtype(loaded[name])
        return np.dtype("bfloat16") if "float8" in stored.name else stored  # FP8 is not re-quantized
    target = targets[name]
    variable = target.variable if target.shared_with is None else targets[target.shared_with].variable
    return np.dtype(variable.dtype)


def _stored_bytes(shape, dtype: np.dtype) -> int:
    """Bytes on disk, an FP8 weight's float32 block scales included."""
    nbytes = math.prod(shape) * dtype.itemsize
    if dtype == _FP8:
        nbytes += math.prod(fp8_blocks.scale_shape(shape)) * 4
    return nbytes


def _stored_tensors(name: str, value: np.ndarray, dtype: np.dtype) -> dict[str, np.ndarray]:
    """The tensor(s) one hub name is written as: itself, or an FP8 weight and its scales."""
    if dtype != _FP8:
        return {name: value.astype(dtype)}
    weight, scale = fp8_blocks.quantize(value)
    return {name: weight, name + _SCALE_SUFFIX: scale}


def _plan_shards(sizes: dict[str, int], max_shard_bytes: int) -> list[list[str]]:
    shards, current, size = [], [], 0
    for name, nbytes in sizes.items():
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    if current:
        shards.append(current)
    return shards


def _dominant_dtype(dtypes: dict) -> str:
    counts: dict[str, int] = {}
    for d in dtypes.values():
        counts[d.name] = counts.get(d.name, 0) + 1
    return max(counts, key=counts.get)


def _hub_value(target) -> np.ndarray:
    """A whole variable's value in the hub layout ([out, in] for Linear weights)."""
    import keras

    value = keras.ops.convert_to_numpy(target.variable.value)
    return value.T if target.transpose and target.expert is None else value


class _ValueCache:
    """Variable values as numpy, kept for the few variables in use: a layer's three
    stacked expert variables are sliced E times each, and the shared copies reuse the
    embedding and head."""

    def __init__(self, keep: int = 4):
        self.keep, self.values = keep, {}

    def hub_array(self, targets, name: str) -> np.ndarray:
        target = targets[name]
        if target.shared_with is not None:
            target = targets[target.shared_with]
        key = id(target.variable)
        if key not in self.values:
            if len(self.values) >= self.keep:
                self.values.pop(next(iter(self.values)))
            import keras

            self.values[key] = keras.ops.convert_to_numpy(target.variable.value)
        value = self.values[key]
        if target.expert is not None:
            value = value[target.expert]
        return value.T if target.transpose else value


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def _publish(staging: str, destination: str) -> None:
    """Rename the finished directory into place; an existing one is moved aside first and
    removed only after the new one is in."""
    old = None
    if os.path.exists(destination):
        old = destination + f".old-{os.getpid()}"
        os.rename(destination, old)
    os.rename(staging, destination)
    if old:
        shutil.rmtree(old, ignore_errors=True)
