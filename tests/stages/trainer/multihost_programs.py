"""What multihost_launch runs in each process (jax is imported here, after XLA_FLAGS):
a sharded computation over a ("data", "expert") mesh, and sharded checkpoints of a state
shaped like the JAX trainer's (trainable, non_trainable, optimizer)."""

import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from stages.trainer import sharded_checkpoint

BOTH = ("data", "expert")
# name -> (shape, dtype, layout "saved", layout "other"); every sharded dim is a multiple of
# 8, so every layout fits both meshes used (2 x 4 and 4 x 2)
STATE = {
    "trainable": {
        "embed": ((16, 8), "float32", P(), P(BOTH)),
        "experts": ((8, 8, 4), "bfloat16", P("expert"), P(None, "data")),
        "dense": ((8, 16), "bfloat16", P(), P(None, "expert")),
    },
    "non_trainable": {
        "router_bias": ((8,), "float32", P(), P("expert")),
        "step": ((), "int32", P(), P()),
    },
    "optimizer": {   # ZeRO-1: moments split over every device
        "embed_m": ((16, 8), "float32", P(BOTH), P()),
        "experts_m": ((8, 8, 4), "float32", P("expert", "data"), P(BOTH)),
        "dense_v": ((8, 16), "float32", P(None, BOTH), P("data")),
    },
}


def make_mesh(data: int, expert: int) -> Mesh:
    # jax.devices() lists process 0's devices first: "data" rows are processes on 2 x 4
    return Mesh(np.array(jax.devices()).reshape(data, expert), BOTH)


def _dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def expected_values(seed: int) -> tuple:
    """The state's global values (numpy), as the trainer's tuple of lists."""
    rng = np.random.default_rng(seed)
    return tuple([rng.standard_normal(shape).astype(_dtype(dtype)) if dtype != "int32"
                  else np.asarray(seed * 1000 + 7, np.int32)
                  for shape, dtype, *_ in group.values()] for group in STATE.values())


def state_target(mesh: Mesh, layout: str) -> tuple:
    """jax.ShapeDtypeStructs with the layout's shardings."""
    column = {"saved": 2, "other": 3}[layout]
    return tuple([jax.ShapeDtypeStruct(spec[0], _dtype(spec[1]), sharding=NamedSharding(mesh, spec[column]))
                  for spec in group.values()] for group in STATE.values())


def make_state(mesh: Mesh, layout: str, seed: int) -> tuple:
    """jax.Arrays, except the scalar step: a host value, as a trainer's step counter may be."""
    return jax.tree.map(lambda value, target: value if value.ndim == 0 else jax.make_array_from_callback(
        value.shape, target.sharding, lambda index: value[index]), expected_values(seed), state_target(mesh, layout))


def check_state(state, seed: int) -> dict:
    """Per array path: are the values this process holds bit-equal to the expected ones?"""
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    report = {}
    for path, array, value in zip(paths, jax.tree.leaves(state), jax.tree.leaves(expected_values(seed))):
        report[path] = array.dtype == value.dtype and all(
            np.asarray(shard.data).tobytes() == np.ascontiguousarray(value[shard.index]).tobytes()
            for shard in array.addressable_shards)
    return report


# ---- launched functions ----

def global_computation(data: int, expert: int) -> dict:
    """An expert-parallel-like step: tokens over every device, experts over "expert",
    an all-to-all over every device and a sum over "data" (across processes on 2 x 4)."""
    from jax.experimental import multihost_utils

    from stages.trainer import multihost
    multihost.initialize_from_environment()   # again, as a second stage in one process would: a no-op
    mesh = make_mesh(data, expert)
    rng = np.random.default_rng(0)
    tokens_np, experts_np = rng.standard_normal((64, 8), np.float32), rng.standard_normal((8, 8, 4), np.float32)
    tokens = jax.make_array_from_callback(tokens_np.shape, NamedSharding(mesh, P(BOTH)), lambda i: tokens_np[i])
    experts = jax.make_array_from_callback(experts_np.shape, NamedSharding(mesh, P("expert")),
                                           lambda i: experts_np[i])

    def exchange(block):   # [8, 8] per device -> every device sends a row to every other
        mixed = jax.lax.all_to_all(block, BOTH, 0, 0, tiled=True)
        return mixed + jax.lax.psum(mixed, "data")

    @jax.jit
    def step(tokens, experts):
        mixed = jax.shard_map(exchange, mesh=mesh, in_specs=P(BOTH), out_specs=P(BOTH))(tokens)
        hidden = jnp.tanh(jnp.einsum("td,edf->etf", mixed, experts))   # [experts, tokens, F]
        return mixed, hidden.sum(axis=(1, 2)), (hidden ** 2).mean()

    mixed, per_expert, loss = step(tokens, experts)
    gather = lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)).tolist()
    return {"process_count": jax.process_count(), "device_count": jax.device_count(),
            "mixed": gather(mixed), "per_expert": gather(per_expert), "loss": float(gather(loss))}


def save_state(directory: str, steps: list[int], data: int, expert: int, seed: int, keep: int = 2,
               exit_after_writes: int | None = None) -> dict:
    """Saves the state (layout "saved") as each of `steps`; exit_after_writes: the process
    dies (os._exit) after that many file writes, as a killed save would."""
    if exit_after_writes is not None:
        write, count = sharded_checkpoint.FILES.write, [0]

        def dying_write(path, data):
            if count[0] == exit_after_writes:
                os._exit(9)
            count[0] += 1
            write(path, data)
        sharded_checkpoint.FILES.write = dying_write
    state = make_state(make_mesh(data, expert), "saved", seed)
    for step in steps:
        sharded_checkpoint.save(directory, step, state, keep=keep)
    return {"latest_step": sharded_checkpoint.latest_step(directory), "process": jax.process_index()}


def restore_state(directory: str, step: int, data: int, expert: int, layout: str, seed: int) -> dict:
    """Restores onto `layout` over a data x expert mesh; reports whether values, dtypes and
    shardings are the expected ones, and which shard files this process read needlessly
    (none of its devices' slices overlap them)."""
    reads = []
    read = sharded_checkpoint.FILES.read
    sharded_checkpoint.FILES.read = lambda path: reads.append(os.path.basename(path)) or read(path)
    target = state_target(make_mesh(data, expert), layout)
    state = sharded_checkpoint.restore(directory, step, target)
    manifest = sharded_checkpoint.read_manifest(directory, step)
    shards = {s["file"]: (a, s) for a in manifest["arrays"] for s in a["shards"]}
    targets = {jax.tree_util.keystr(p): t for p, t in jax.tree_util.tree_flatten_with_path(target)[0]}
    needless = []
    for name in (r for r in reads if r.endswith(".bin")):
        array, shard = shards[name]
        wanted = targets[array["path"]].sharding.addressable_devices_indices_map(tuple(array["shape"])).values()
        if not any(_overlaps(index, shard, array["shape"]) for index in wanted):
            needless.append(name)
    return {"values_equal": check_state(state, seed),
            "shardings_equal": all(a.sharding == t.sharding for a, t in zip(jax.tree.leaves(state),
                                                                             jax.tree.leaves(target))),
            "dtypes": [str(a.dtype) for a in jax.tree.leaves(state)],
            "files_read": sorted(r for r in reads if r.endswith(".bin")), "needless_reads": needless,
            "process": jax.process_index()}


def _overlaps(index, shard: dict, shape) -> bool:
    start, stop = sharded_checkpoint._bounds(index, shape)
    return all(max(a, s) < min(b, e) for a, b, s, e in zip(start, stop, shard["start"], shard["stop"]))


def restore_errors(directory: str, step: int, changes: list[str]) -> list[str]:
    """The CheckpointError message of a restore onto the saved layout changed as each of
    `changes` says (shape, dtype, tree, no_sharding, none)."""
    messages = []
    for change in changes:
        target = state_target(make_mesh(2, 4), "saved")
        trainable = target[0]
        if change == "shape":
            trainable[1] = jax.ShapeDtypeStruct((8, 8, 5), trainable[1].dtype, sharding=trainable[1].sharding)
        elif change == "dtype":
            trainable[1] = jax.ShapeDtypeStruct(trainable[1].shape, np.float32, sharding=trainable[1].sharding)
        elif change == "tree":
            target = (trainable[:2], target[1], target[2])
        elif change == "no_sharding":
            trainable[0] = jax.ShapeDtypeStruct(trainable[0].shape, trainable[0].dtype)
        try:
            sharded_checkpoint.restore(directory, step, target)
            messages.append("restored without an error")
        except sharded_checkpoint.CheckpointError as e:
            messages.append(str(e))
    return messages


def fail_in_process(process: int) -> None:
    """`process` fails; the others wait for it in a barrier (until the launcher kills them)."""
    from jax.experimental import multihost_utils
    if jax.process_index() == process:
        raise RuntimeError(f"process {process} fails on purpose")
    multihost_utils.sync_global_devices("never reached by the failing process")


def sleep(seconds: float) -> None:
    import time
    time.sleep(seconds)
