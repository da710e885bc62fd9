"""`seekforge convert ...`: move checkpoints between Hugging Face and seekforge.

    seekforge convert from-hf SRC_DIR DST_DIR    # HF DeepSeek-V3 checkpoint -> seekforge
    seekforge convert to-hf SRC_DIR DST_DIR      # seekforge -> HF (hub layout, sharded)
    seekforge convert to-hf SRC_DIR DST_DIR --dtype fp8   # ... in the hub's block-scaled FP8

The seekforge format, for now, is a directory with
    config.json        the model config (HF field names, ModelConfig.to_hf())
    model.weights.h5   Keras weights (model.save_weights)
    hf_dtypes.json     the dtype each tensor had in the HF checkpoint it came from, so that
                       to-hf writes it back bit for bit (absent: the variables' dtypes)
Both directions write into a temporary directory beside DST_DIR and rename it into place.
"""

import json
import os
import shutil
import tempfile


WEIGHTS_FILE = "model.weights.h5"
CONFIG_FILE = "config.json"
DTYPES_FILE = "hf_dtypes.json"


def register(subparsers) -> None:
    convert = subparsers.add_parser("convert", help="convert checkpoints to and from Hugging Face")
    commands = convert.add_subparsers(dest="convert_command", required=True, metavar="COMMAND")
    from_hf = commands.add_parser("from-hf", help="a HF DeepSeek-V3 checkpoint directory -> seekforge format")
    from_hf.add_argument("src", help="directory with config.json and *.safetensors (hub, fused or FP8 layout)")
    from_hf.add_argument("dst", help="output directory (must not exist or be empty)")
    from_hf.add_argument("--mtp", choices=["auto", "require", "drop"], default="auto",
                         help="MTP layers: load when present (auto), insist on them, or leave them out")
    from_hf.set_defaults(handler=from_hf_command)
    to_hf = commands.add_parser("to-hf", help="a seekforge directory -> HF DeepSeek-V3 checkpoint (hub layout)")
    to_hf.add_argument("src", help=f"directory with {CONFIG_FILE} and {WEIGHTS_FILE}")
    to_hf.add_argument("dst", help="output directory (must not exist or be empty)")
    to_hf.add_argument("--dtype", default=None,
                       help="write every tensor in this dtype (e.g. bfloat16, float32; the router's "
                            "e_score_correction_bias stays float32), or 'fp8': DeepSeek-V3's hub FP8 layout "
                            "(the decoder layers' Linear weights as float8_e4m3fn, each with a float32 "
                            "weight_scale_inv per 128x128 block, everything else bfloat16), quantized from "
                            "the current weights; default: each tensor in the dtype it was loaded from HF "
                            "(FP8 ones as bfloat16)")
    to_hf.add_argument("--max-shard-gb", type=float, default=4.0, help="largest safetensors shard, GiB")
    to_hf.set_defaults(handler=to_hf_command)


def _require_empty(path: str) -> None:
    if os.path.exists(path) and os.listdir(path):
        raise ValueError(f"{path}: exists and is not empty")


def from_hf_command(args) -> int:
    from model.convert import load_hf

    destination = os.path.abspath(args.dst)
    _require_empty(destination)
    model = load_hf(args.src, mtp=args.mtp)
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.tmp-", dir=os.path.dirname(destination))
    try:
        model.save_weights(os.path.join(staging, WEIGHTS_FILE))
        _write_json(os.path.join(staging, CONFIG_FILE), model.cfg.to_hf())
        _write_json(os.path.join(staging, DTYPES_FILE), dict(model.hf_dtypes))
        if os.path.exists(destination):
            os.rmdir(destination)  # empty, checked above
        os.rename(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"{args.src} -> {destination} ({model.count_params():,} parameters)")
    return 0


def to_hf_command(args) -> int:
    from model.convert import save_hf
    from stages.artifact_types import load_model_dir

    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not os.path.exists(os.path.join(args.src, name)):
            raise ValueError(f"{os.path.join(args.src, name)}: no such file (is {args.src} a seekforge directory?)")
    _require_empty(os.path.abspath(args.dst))
    model = load_model_dir(args.src)
    dtypes_path = os.path.join(args.src, DTYPES_FILE)
    if os.path.exists(dtypes_path):
        with open(dtypes_path, encoding="utf-8") as f:
            model.hf_dtypes = json.load(f)
    save_hf(model, args.dst, dtype=args.dtype, max_shard_bytes=int(args.max_shard_gb * 1024**3), overwrite=True)
    print(f"{args.src} -> {os.path.abspath(args.dst)}")
    return 0


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
