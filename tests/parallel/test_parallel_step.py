"""The JAX training step on a 2 (data) x 4 (expert) mesh equals the single-device step,
and each device holds its share of the state (measured from the arrays' shardings)."""

import numpy as np
import pytest

from model.config import ModelConfig
from stages.trainer import jax_parallel
from stages.trainer.config import DistributionConfig
from tests.parallel import helpers


@pytest.fixture(scope="module")
def single():
    cfg = helpers.training_config()
    step = helpers.single_device_step(cfg)
    state = step.place(helpers.reference_values(cfg))
    grads, grad_metrics = step.gradients(state, helpers.batch(micro_batches=2))
    new_state, metrics = step(state, helpers.batch(micro_batches=2))
    return {"grads": grads, "grad_metrics": grad_metrics, "state": new_state, "metrics": metrics}


def _mesh_run(**distribution):
    cfg = helpers.training_config(**distribution)
    step = helpers.mesh_step(cfg)
    state = step.place(helpers.reference_values(cfg))
    grads, grad_metrics = step.gradients(state, helpers.batch(micro_batches=2))
    new_state, metrics = step(state, helpers.batch(micro_batches=2))
    return {"step": step, "grads": grads, "grad_metrics": grad_metrics, "state": new_state, "metrics": metrics}


@pytest.fixture(scope="module")
def zero1(devices):
    return _mesh_run(data=2, expert=4, zero=1)


@pytest.fixture(scope="module")
def zero3(devices):
    return _mesh_run(data=2, expert=4, zero=3)


def _assert_same_step(run, single):
    for key in ("loss", "lm_loss", "mtp_loss", "balance_loss", "grad_norm"):
        np.testing.assert_allclose(float(run["metrics"][key]), float(single["metrics"][key]), rtol=2e-6,
                                   err_msg=key)
    # routing is identical, so the loads (and the bias updates made from them) are exact
    np.testing.assert_array_equal(np.asarray(run["metrics"]["expert_loads"]),
                                  np.asarray(single["metrics"]["expert_loads"]))
    assert int(run["metrics"]["dropped_assignments"]) == 0
    for got, expected in zip(run["grads"], single["grads"]):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=2e-8)
    for got, expected in zip(run["state"][1], single["state"][1]):        # router biases after the update
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    # weights after AdamW, from the ZeRO-sharded moments. Adam's first step is about
    # lr * g / (|g| + eps): where |g| is near eps, last-bit gradient differences move it
    # anywhere within the step's bound (lr x 1.01 with weight decay), so only there is the
    # bound asserted.
    lr = helpers.training_config().learning_rate
    for got, expected, grad in zip(run["state"][0], single["state"][0], single["grads"]):
        got, expected, clear = np.asarray(got), np.asarray(expected), np.abs(np.asarray(grad)) > 1e-6
        np.testing.assert_allclose(got[clear], expected[clear], rtol=0, atol=1e-6)
        assert np.all(np.abs(got - expected) <= 2.02 * lr)


def test_zero1_step_equals_single_device(zero1, single):
    _assert_same_step(zero1, single)


def test_zero3_step_equals_single_device(zero3, single):
    _assert_same_step(zero3, single)


def test_bias_updates_come_from_global_loads(zero1):
    """Every token of the 2 x 16 x 32 batch is counted once per MoE layer (one in the main
    model, one in MTP) for each of its 4 experts, whatever device routed it, and each
    layer's biases moved by gamma * sign(mean load - load) of those global loads."""
    loads = np.asarray(zero1["metrics"]["expert_loads"])
    assert loads.shape == (2, helpers.MODEL.n_routed_experts)
    np.testing.assert_array_equal(loads.sum(axis=1), 2 * helpers.SEQUENCES * helpers.SEQ_LEN * 4)
    gamma = helpers.training_config().bias_update_gamma
    biases = [np.asarray(zero1["state"][1][slot]) for slot in zero1["step"].bias_slots]
    for layer, bias in enumerate(biases):
        expected = gamma * np.sign(loads[layer].mean() - loads[layer])
        np.testing.assert_allclose(bias, expected, rtol=1e-6)


def _share(arrays, device) -> float:
    return jax_parallel.bytes_on_device(arrays, device) / sum(a.nbytes for a in arrays)


def _expert_weights(run):
    return [a for a, v in zip(run["state"][0], run["step"].model.trainable_variables)
            if jax_parallel.EXPERT_WEIGHT.search(v.path)]


def _scalars(arrays):
    return sum(a.nbytes for a in arrays if a.ndim == 0)


@pytest.mark.parametrize("device_index", [0, 5])
def test_zero1_shares_per_device(zero1, devices, device_index):
    """A quarter of the routed experts, an eighth of the optimizer state (all of it but
    AdamW's iteration counter and the like, which are scalars), all of the dense weights."""
    device = devices[device_index]
    assert _share(_expert_weights(zero1), device) == 0.25
    optimizer = zero1["state"][2]
    total = sum(a.nbytes for a in optimizer)
    assert jax_parallel.bytes_on_device(optimizer, device) == (total - _scalars(optimizer)) / 8 + _scalars(optimizer)
    dense = [a for a, v in zip(zero1["state"][0], zero1["step"].model.trainable_variables)
             if not jax_parallel.EXPERT_WEIGHT.search(v.path)]
    assert _share(dense, device) == 1.0


def test_zero3_shards_dense_weights_too(zero3, devices):
    """FSDP: every weight matrix split 8 ways (each dense one has a dimension divisible by
    8 in this model); only the 1-D norm weights stay whole."""
    model = zero3["step"].model
    for array, variable in zip(zero3["state"][0], model.trainable_variables):
        expected = 1.0 if len(variable.shape) == 1 else 1 / 8
        assert _share([array], devices[3]) == expected, variable.path


def test_mesh_must_match_devices_and_experts(devices):
    with pytest.raises(ValueError, match=r"distribution.data x distribution.expert = 2 x 2 = 4 devices, but 8"):
        jax_parallel.make_mesh(DistributionConfig(data=2, expert=2))
    with pytest.raises(ValueError, match=r"distribution.expert \(3\) does not divide the 8 devices"):
        jax_parallel.make_mesh(DistributionConfig(data=-1, expert=3))
    with pytest.raises(ValueError, match=r"does not divide n_routed_experts \(16\)"):
        jax_parallel.check_routing_fits_mesh(helpers.MODEL, DistributionConfig(expert=32))


def test_node_limited_routing_maps_groups_onto_nodes(devices):
    """V3 keeps 4 of 8 router groups and places one group per node, so a token reaches at
    most 4 nodes. Here: 16 experts in 4 groups, 2 kept, expert axis 4 with 1 device per
    "node": the router's choices span at most 2 nodes for every token."""
    import keras

    from model.router import Router

    cfg = helpers.MODEL
    distribution = DistributionConfig(data=2, expert=4, devices_per_node=1)
    jax_parallel.check_routing_fits_mesh(cfg, distribution)
    keras.utils.set_random_seed(3)
    router = Router(cfg)
    router.build((None, cfg.hidden_size))
    x = np.random.default_rng(3).normal(size=(512, cfg.hidden_size)).astype(np.float32)
    indices, _, _ = router(x)
    spans = jax_parallel.nodes_per_token(indices, cfg.n_routed_experts, 4, 1)
    assert spans.max() == cfg.topk_group and spans.min() >= 1
    # without group limiting the same tokens reach more nodes: the limit is what holds it
    free = Router(cfg.replace(n_group=1, topk_group=1))
    free.build((None, cfg.hidden_size))
    free.set_weights(router.get_weights())
    assert jax_parallel.nodes_per_token(free(x)[0], cfg.n_routed_experts, 4, 1).max() > cfg.topk_group
    with pytest.raises(ValueError, match=r"n_group \(4\) is not a multiple of the 8 nodes"):
        jax_parallel.check_routing_fits_mesh(ModelConfig.from_preset("tiny").replace(n_routed_experts=64),
                                             DistributionConfig(expert=64, devices_per_node=8))


def test_planner_model_states_match_xla(zero1):
    """The planner (stages/planning/memory.py) with this trainer's precision (float32
    weights, float32 AdamW moments, no separate master copy) predicts each device's
    weights + optimizer states; XLA's memory plan of the compiled step holds exactly that
    as arguments, besides the batch (4 int32 arrays) and a few scalars. (Under ZeRO-3 the
    planner also counts one layer gathered whole, which XLA holds as a temporary.)"""
    from stages.planning.layout import ParallelLayout
    from stages.planning.memory import memory_plan
    from stages.planning.precision import TrainingPrecision

    run = zero1
    analysis = run["step"].lower(run["state"], helpers.batch(micro_batches=2)).compile().memory_analysis()
    ours = TrainingPrecision("seekforge-jax-float32", weight_bytes=4, grad_bytes=4, master_bytes=0, moment_bytes=4)
    layout = ParallelLayout(num_gpus=8, expert_parallel_size=4, zero_stage=1, micro_batch_size=1,
                            seq_len=helpers.SEQ_LEN, global_batch_size=helpers.SEQUENCES, num_micro_batches=2,
                            schedule="1f1b")
    planned = memory_plan(helpers.MODEL, layout, ours, device="h200", reserved_bytes=0).devices[0]
    batch_bytes = 4 * 2 * (helpers.SEQUENCES // 8) * helpers.SEQ_LEN * 4
    held = analysis.argument_size_in_bytes - batch_bytes
    assert held == pytest.approx(planned.weights + planned.optimizer_states, abs=64), (held, planned)
