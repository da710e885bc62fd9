"""Sharded, resumable checkpoints of a JAX training state: any pytree of jax.Arrays with
any shardings, over one process or many, as raw shard files plus one JSON manifest
(no orbax or tensorstore).

DIRECTORY/step_00000120/
    manifest.json     written last, by process 0: the tree's paths, and per array its
                      global shape, dtype and shards (file, global start/stop, bytes, crc32)
    00003.1.0.bin     array 3, process 1's first shard: raw C-order bytes

A save goes into DIRECTORY/.tmp-step_00000120, which process 0 renames once every
process has written its shards (sync_global_devices) and the manifest is complete: a
save killed at any point leaves nothing that latest_step() picks up. Each shard is
written once, by the process holding its replica 0. restore() builds every array with
jax.make_array_from_callback on the TARGET's sharding, each device reading only the
saved shards that overlap its slice, so any mesh or sharding restores any checkpoint of
the same shapes and dtypes.

Every process must see DIRECTORY (a shared volume: /work in the pods).
"""

import json
import math
import os
import re
import shutil
import zlib

import numpy as np

FORMAT = "seekforge.sharded_checkpoint/1"
MANIFEST = "manifest.json"
STEP_DIR = re.compile(r"^step_(\d+)$")
TEMPORARY_PREFIXES = (".tmp-", ".trash-")   # never a step directory; cleared by the next save


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, corrupt, or does not fit the target; the message
    names the file or the array path."""


class LocalFiles:
    """Every file access of this module, so that an fsspec filesystem can replace it."""

    def write(self, path: str, data) -> None:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())   # on disk before the rename publishes it

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def size(self, path: str) -> int | None:
        """Bytes, or None when missing."""
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return None

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return []

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def rename(self, source: str, target: str) -> None:
        os.rename(source, target)
        for directory in (target, os.path.dirname(target)):   # the new entries, durably
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def remove(self, path: str) -> None:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)


FILES = LocalFiles()


def step_directory(directory: str, step: int) -> str:
    return os.path.join(directory, f"step_{step:08d}")


# ---- saving ----

def save(directory: str, step: int, state, keep: int = 2) -> str:
    """Writes `state` (a pytree of arrays) as checkpoint `step` under `directory`; every
    process must call it with the same tree. Keeps the newest `keep` checkpoints. Returns
    the step directory."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    import jax
    paths, leaves, _ = _flatten(state)
    process = jax.process_index()
    final = step_directory(directory, step)
    temporary = os.path.join(directory, ".tmp-" + os.path.basename(final))
    if process == 0:
        FILES.remove(temporary)   # left by a save of this step that was killed
        FILES.makedirs(temporary)
    _barrier(f"seekforge checkpoint {step}: directory made")
    written = []
    for number, leaf in enumerate(leaves):
        for k, (start, stop, data) in enumerate(_owned_shards(leaf, process)):
            name = f"{number:05d}.{process}.{k}.bin"
            raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
            FILES.write(os.path.join(temporary, name), raw)
            written.append({"array": number, "file": name, "start": start, "stop": stop,
                            "bytes": int(raw.size), "crc32": zlib.crc32(raw)})
    FILES.write(os.path.join(temporary, f"shards.{process:05d}.json"), json.dumps(written).encode())
    _barrier(f"seekforge checkpoint {step}: shards written")
    if process == 0:
        manifest = _manifest(temporary, step, paths, leaves, jax.process_count())
        FILES.write(os.path.join(temporary, MANIFEST), json.dumps(manifest, indent=1).encode())
        _publish(temporary, final)
        _prune(directory, keep, step)
    _barrier(f"seekforge checkpoint {step}: published")   # no process goes on before it is visible
    return final


def _flatten(tree):
    import jax
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(path) for path, _ in flat], [leaf for _, leaf in flat], treedef


def _owned_shards(leaf, process: int):
    """(global start, global stop, numpy data) of each shard this process writes."""
    import jax
    if not isinstance(leaf, jax.Array):   # a host value: the same on every process
        if process == 0:
            value = np.asarray(leaf)
            yield [0] * value.ndim, list(value.shape), value
        return
    for shard in leaf.addressable_shards:
        if shard.replica_id == 0:   # exactly one device in all processes holds replica 0
            start, stop = _bounds(shard.index, leaf.shape)
            yield start, stop, np.asarray(shard.data)


def _bounds(index, shape) -> tuple[list[int], list[int]]:
    """A tuple of slices (a shard's index) as global start and stop per dimension."""
    index = tuple(index) + (slice(None),) * (len(shape) - len(index))
    bounds = [s.indices(n)[:2] for s, n in zip(index, shape)]
    return [a for a, _ in bounds], [b for _, b in bounds]


def _manifest(temporary: str, step: int, paths, leaves, process_count: int) -> dict:
    shards = [[] for _ in leaves]
    for p in range(process_count):
        listing = os.path.join(temporary, f"shards.{p:05d}.json")
        for entry in json.loads(FILES.read(listing)):
            shards[entry.pop("array")].append(entry)
            if FILES.size(os.path.join(temporary, entry["file"])) != entry["bytes"]:
                raise CheckpointError(f"{os.path.join(temporary, entry['file'])}: not written completely")
        FILES.remove(listing)
    arrays = []
    for path, leaf, parts in zip(paths, leaves, shards):
        shape = [int(n) for n in np.shape(leaf)]
        covered = sum(math.prod(b - a for a, b in zip(s["start"], s["stop"])) for s in parts)
        if covered != math.prod(shape):   # replica 0 of every slice must have been written once
            raise CheckpointError(f"{path}: the shards written cover {covered} of {math.prod(shape)} elements")
        dtype = np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        arrays.append({"path": path, "shape": shape, "dtype": dtype.name,
                       "shards": sorted(parts, key=lambda s: s["start"])})
    return {"format": FORMAT, "step": step, "process_count": process_count, "arrays": arrays}


def _publish(temporary: str, final: str) -> None:
    trash = os.path.join(os.path.dirname(final), ".trash-" + os.path.basename(final))
    if FILES.size(final) is not None:   # the same step saved again (a resumed run repeating it)
        FILES.remove(trash)
        FILES.rename(final, trash)
    FILES.rename(temporary, final)
    FILES.remove(trash)


def _prune(directory: str, keep: int, saved: int) -> None:
    """Keeps the `keep` newest steps (and the one just saved); clears killed saves."""
    steps = sorted((int(m.group(1)) for name in FILES.listdir(directory) if (m := STEP_DIR.match(name))),
                   reverse=True)
    for step in steps[keep:]:
        if step != saved:
            FILES.remove(step_directory(directory, step))
    for name in FILES.listdir(directory):
        if name.startswith(TEMPORARY_PREFIXES):
            FILES.remove(os.path.join(directory, name))


def _barrier(name: str) -> None:
    import jax
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


# ---- finding and reading ----

def latest_step(directory: str) -> int | None:
    """The newest complete checkpoint's step, or None when there is none. Killed saves
    (temporary directories) are ignored; a step directory whose manifest or shard files
    are missing or truncated is a CheckpointError naming the file."""
    steps = [int(m.group(1)) for name in FILES.listdir(directory) if (m := STEP_DIR.match(name))]
    if not steps:
        return None
    read_manifest(directory, max(steps))
    return max(steps)


def read_manifest(directory: str, step: int, check_files: bool = True) -> dict:
    """Checkpoint `step`'s manifest, after checking (check_files) that every shard file
    it lists has the size it says."""
    root = step_directory(directory, step)
    path = os.path.join(root, MANIFEST)
    advice = f"(delete {root} to resume from the previous checkpoint)"
    if FILES.size(path) is None:
        raise CheckpointError(f"{path}: missing, the checkpoint is incomplete {advice}")
    try:
        manifest = json.loads(FILES.read(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}) {advice}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("step") != step:
        raise CheckpointError(f"{path}: not the manifest of a {FORMAT} checkpoint of step {step} {advice}")
    for array in manifest["arrays"] if check_files else ():
        for shard in array["shards"]:
            file = os.path.join(root, shard["file"])
            size = FILES.size(file)
            if size != shard["bytes"]:
                found = "missing" if size is None else f"{size} bytes, the manifest says {shard['bytes']}"
                raise CheckpointError(f"{file}: {found} (array {array['path']}) {advice}")
    return manifest


def restore(directory: str, step: int, target):
    """Checkpoint `step` as a pytree shaped like `target`, whose leaves are
    jax.ShapeDtypeStruct (with sharding=) or arrays: every array comes back with the
    target leaf's sharding, shape and dtype, which may differ from the saved sharding."""
    import jax
    # each process checks only the files it reads (size and CRC32): no metadata storm at scale
    manifest = read_manifest(directory, step, check_files=False)
    root = step_directory(directory, step)
    paths, leaves, treedef = _flatten(target)
    saved = {array["path"]: array for array in manifest["arrays"]}
    missing, extra = [p for p in paths if p not in saved], [p for p in saved if p not in paths]
    if missing or extra:
        raise CheckpointError(f"{root}: the target's tree differs from the checkpoint's: "
                              f"not in the checkpoint: {missing[:8]}, not in the target: {extra[:8]}")
    arrays = []
    for path, leaf in zip(paths, leaves):
        entry = saved[path]
        shape, dtype = tuple(leaf.shape), np.dtype(leaf.dtype)
        saved_dtype = _dtype(entry["dtype"], path)
        if tuple(entry["shape"]) != shape or saved_dtype != dtype:
            raise CheckpointError(f"{path}: the checkpoint holds {saved_dtype.name}{list(entry['shape'])}, "
                                  f"the target is {dtype.name}{list(shape)}")
        sharding = getattr(leaf, "sharding", None)
        if sharding is None:
            raise CheckpointError(f"{path}: the target has no sharding (a jax.ShapeDtypeStruct needs sharding=)")
        arrays.append(jax.make_array_from_callback(shape, sharding, _SliceReader(root, entry, dtype).read,
                                                   dtype=dtype))
    return jax.tree_util.tree_unflatten(treedef, arrays)


def _dtype(name: str, path: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:   # bfloat16, float8_*: numpy knows them from ml_dtypes, not by name
        import ml_dtypes
        if hasattr(ml_dtypes, name):
            return np.dtype(getattr(ml_dtypes, name))
        raise CheckpointError(f"{path}: unknown dtype {name!r} in the manifest") from None


class _SliceReader:
    """One saved array: the callback of make_array_from_callback, reading the shards that
    overlap a device's slice (each file once, checksummed)."""

    def __init__(self, root: str, entry: dict, dtype: np.dtype):
        self.root, self.entry, self.dtype = root, entry, dtype
        self.shape = tuple(entry["shape"])
        self.loaded = {}

    def read(self, index) -> np.ndarray:
        start, stop = _bounds(index, self.shape)
        out = np.empty([b - a for a, b in zip(start, stop)], self.dtype)
        for shard in self.entry["shards"]:
            low = [max(a, s) for a, s in zip(start, shard["start"])]
            high = [min(b, e) for b, e in zip(stop, shard["stop"])]
            if any(lo >= hi for lo, hi in zip(low, high)):
                continue
            data = self._load(shard)
            out[tuple(slice(lo - a, hi - a) for lo, hi, a in zip(low, high, start))] = \
                data[tuple(slice(lo - s, hi - s) for lo, hi, s in zip(low, high, shard["start"]))]
        return out

    def _load(self, shard: dict) -> np.ndarray:
        if shard["file"] not in self.loaded:
            path = os.path.join(self.root, shard["file"])
            try:
                raw = FILES.read(path)
            except FileNotFoundError:
                raise CheckpointError(f"{path}: missing (array {self.entry['path']})") from None
            if len(raw) != shard["bytes"] or zlib.crc32(raw) != shard["crc32"]:
                raise CheckpointError(f"{path}: corrupt (size or CRC32 differs from the manifest; "
                                      f"array {self.entry['path']})")
            shape = [b - a for a, b in zip(shard["start"], shard["stop"])]
            self.loaded[shard["file"]] = np.frombuffer(raw, self.dtype).reshape(shape)
        return self.loaded[shard["file"]]
