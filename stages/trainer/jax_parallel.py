"""The JAX trainer's device mesh and where every array of the training state lives.

    mesh = make_mesh(DistributionConfig(data=2, expert=4))        # keras DeviceMesh
    with expert_parallel(mesh, cfg):                              # keras.distribution set
        model = DeepSeekV3CausalLM(...)                           # experts created sharded
    shardings = state_shardings(model, optimizer, mesh, zero=1)

Layouts (axis "data" x "expert"; tokens are split over both):
- routed experts [E, ...]: E over "expert" (each device holds E / ep experts), through a
  keras.distribution LayoutMap, so they are created sharded rather than gathered first;
- other weights: replicated (ZeRO-0/1), or split over every device (ZeRO-3 / FSDP) on
  their first evenly divisible dimension;
- optimizer states (AdamW moments): replicated (ZeRO-0), else split over every device
  (ZeRO-1, the V3 recipe): an expert moment over "expert" on E and over "data" on the
  next divisible dimension, a dense one over both axes together;
- a batch [micro-batches, sequences, seq_len]: sequences over ("data", "expert").
XLA's SPMD partitioner then inserts the all-reduces, reduce-scatters and all-gathers.
"""

import contextlib
import re

import jax
import keras
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from model.expert_parallel import EXPERT_AXIS
from stages.trainer.config import DistributionConfig

DATA_AXIS = "data"
AXES = (DATA_AXIS, EXPERT_AXIS)
EXPERT_WEIGHT = re.compile(r"experts/(gate|up|down)_proj$")


def make_mesh(cfg: DistributionConfig, devices=None) -> keras.distribution.DeviceMesh:
    """A ("data", "expert") mesh over `devices` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) % cfg.expert:
        raise ValueError(f"distribution.expert ({cfg.expert}) does not divide the {len(devices)} devices")
    data = len(devices) // cfg.expert if cfg.data == -1 else cfg.data
    if data * cfg.expert != len(devices):
        raise ValueError(f"distribution.data x distribution.expert = {data} x {cfg.expert} = {data * cfg.expert} "
                         f"devices, but {len(devices)} are available (data: -1 takes the rest)")
    grid = np.array(devices, dtype=object).reshape(data, cfg.expert)
    return keras.distribution.DeviceMesh((data, cfg.expert), AXES, devices=grid)


def check_routing_fits_mesh(model_config, cfg: DistributionConfig) -> None:
    """Experts must split evenly; with node-limited routing (n_group > 1, V3: 8 groups, 4
    kept = at most 4 nodes per token) each router group must lie within one node, so the
    groups a token keeps bound the nodes it is sent to."""
    experts = model_config.n_routed_experts
    if experts % cfg.expert:
        raise ValueError(f"distribution.expert ({cfg.expert}) does not divide n_routed_experts ({experts})")
    nodes = max(1, cfg.expert // cfg.devices_per_node)
    if model_config.n_group > 1 and nodes > 1 and model_config.n_group % nodes:
        raise ValueError(f"node-limited routing: n_group ({model_config.n_group}) is not a multiple of the "
                         f"{nodes} nodes the expert axis spans ({cfg.expert} / devices_per_node "
                         f"{cfg.devices_per_node}), so a router group would straddle two nodes")


def nodes_per_token(expert_indices, num_experts: int, expert_devices: int, devices_per_node: int):
    """[tokens] how many distinct nodes each token's experts live on (contiguous placement:
    device d holds experts [d E/ep, (d+1) E/ep), node n devices [n g, (n+1) g))."""
    experts_per_node = num_experts // expert_devices * min(devices_per_node, expert_devices)
    nodes = np.asarray(expert_indices) // experts_per_node
    return np.array([len(set(row)) for row in nodes.reshape(len(nodes), -1)])


class ExpertParallel(keras.distribution.ModelParallel):
    """keras' ModelParallel plus the dispatch setting model/expert_parallel.py reads."""

    def __init__(self, layout_map, capacity_factor: float = 0.0):
        super().__init__(layout_map=layout_map, batch_dim_name=DATA_AXIS)
        self.capacity_factor = capacity_factor


@contextlib.contextmanager
def expert_parallel(mesh: keras.distribution.DeviceMesh, cfg: DistributionConfig):
    """Set the keras distribution: routed experts laid out over "expert" when created, and
    RoutedExperts dispatching by all-to-all while it is set."""
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*" + EXPERT_WEIGHT.pattern.rstrip("$")] = (EXPERT_AXIS, None, None)   # keys fullmatch paths
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(ExpertParallel(layout_map, cfg.capacity_factor))
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def _split(shape, mesh, used: tuple, axes: tuple) -> tuple:
    """The spec `used` plus `axes` on the first free dimension they divide evenly."""
    size = int(np.prod([mesh.shape[a] for a in axes]))
    spec = list(used) + [None] * (len(shape) - len(used))
    for dim, extent in enumerate(shape):
        if spec[dim] is None and extent % size == 0 and extent >= size:
            spec[dim] = axes if len(axes) > 1 else axes[0]
            return tuple(spec)
    return tuple(spec)


def weight_spec(path: str, shape, mesh, zero: int) -> P:
    if EXPERT_WEIGHT.search(path):
        return P(*_split(shape, mesh, (EXPERT_AXIS,), (DATA_AXIS,))) if zero >= 3 else P(EXPERT_AXIS)
    return P(*_split(shape, mesh, (), AXES)) if zero >= 3 and len(shape) > 1 else P()


def state_spec(path: str, shape, mesh, zero: int) -> P:
    """An optimizer state's spec: its weight's, further split when zero >= 1."""
    if zero == 0 or not shape:
        return weight_spec(path, shape, mesh, zero)
    if EXPERT_WEIGHT.search(path):
        return P(*_split(shape, mesh, (EXPERT_AXIS,), (DATA_AXIS,)))
    return P(*_split(shape, mesh, (), AXES))


def state_shardings(model, optimizer, mesh: keras.distribution.DeviceMesh, zero: int):
    """NamedShardings of the training state (trainable, non-trainable, optimizer values),
    in the order of model.trainable_variables, model.non_trainable_variables and
    optimizer.variables."""
    jax_mesh = mesh.backend_mesh

    def named(spec):
        return NamedSharding(jax_mesh, spec)

    trainable = [named(weight_spec(v.path, v.shape, jax_mesh, zero)) for v in model.trainable_variables]
    non_trainable = [named(weight_spec(v.path, v.shape, jax_mesh, zero)) for v in model.non_trainable_variables]
    weight_of = {_slot_key(v.path): v.path for v in model.trainable_variables}
    optimizer_specs = []
    for v in optimizer.variables:
        # a slot is named "<optimizer>/<its weight's path, / as _>_<slot>" (AdamW: momentum, velocity)
        weight = weight_of.get(v.path.split("/", 1)[-1].rsplit("_", 1)[0])
        optimizer_specs.append(named(state_spec(weight, v.shape, jax_mesh, zero) if weight else P()))
    return trainable, non_trainable, optimizer_specs


def _slot_key(path: str) -> str:
    return path.replace("/", "_")


def batch_sharding(mesh: keras.distribution.DeviceMesh) -> NamedSharding:
    """[micro-batches, sequences, seq_len]: sequences over every device."""
    return NamedSharding(mesh.backend_mesh, P(None, AXES))


def bytes_on_device(arrays, device) -> int:
    """What `device` holds of these arrays (their shards there), in bytes."""
    total = 0
    for array in jax.tree_util.tree_leaves(arrays):
        for shard in array.addressable_shards:
            if shard.device == device:
                total += shard.data.nbytes
    return total
