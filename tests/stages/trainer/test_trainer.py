"""The trainer: learning, exact gradient accumulation, kill-and-resume, data parallelism,
and auxiliary-loss-free balancing, on a learnable synthetic corpus."""

import json
import os
import signal
import socket
import time

import numpy as np
import pytest
import tensorflow as tf

from model.config import ModelConfig
from stages.trainer.config import TrainingConfig
from stages.trainer.loop import Trainer
from tests.stages.trainer.conftest import MODEL, read_metrics, run_trainer_process

TRAINING = dict(steps=30, seq_len=32, global_batch_size=8, micro_batches=1, learning_rate=1e-2,
                warmup_steps=3, log_every=1, checkpoint_every=10, seed=3)


def train(tmp_path, shard_dir, name, model=None, **changes):
    cfg = TrainingConfig(**{**TRAINING, **changes})
    trainer = Trainer(ModelConfig(**{**MODEL, **(model or {})}), cfg, os.path.join(tmp_path, name))
    trainer.fit(shard_dir, eos_id=1)
    return trainer, read_metrics(os.path.join(tmp_path, name))


def weights(trainer):
    """name (without the model's instance-numbered prefix) -> value"""
    return {v.path.split("/", 1)[1]: v.numpy() for v in trainer.model.variables}


@pytest.mark.slow
def test_loss_and_mtp_loss_fall(tmp_path, shard_dir):
    _, metrics = train(tmp_path, shard_dir, "run")
    first, last = metrics[1], metrics[30]
    print(f"lm {first['lm_loss']:.3f} -> {last['lm_loss']:.3f}, mtp {first['mtp_loss']:.3f} -> {last['mtp_loss']:.3f}")
    assert last["lm_loss"] < 0.6 * first["lm_loss"]
    assert last["mtp_loss"] < 0.7 * first["mtp_loss"]
    assert metrics[2]["learning_rate"] < metrics[5]["learning_rate"] == pytest.approx(1e-2)  # warmup
    assert all(m["grad_norm"] > 0 for m in metrics.values())


def assert_same_two_steps(tmp_path, shard_dir, rtol, **changes):
    """Two steps with `changes` give the weights of two plain steps."""
    plain, _ = train(tmp_path, shard_dir, "plain", steps=2)
    changed, _ = train(tmp_path, shard_dir, "changed", steps=2, **changes)
    a, b = weights(plain), weights(changed)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=rtol, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_gradient_accumulation_equals_one_large_batch(tmp_path, shard_dir):
    assert_same_two_steps(tmp_path, shard_dir, 2e-5, micro_batches=4)


@pytest.mark.slow
def test_xla_step_matches_the_plain_step(tmp_path, shard_dir):
    assert_same_two_steps(tmp_path, shard_dir, 1e-4, jit_compile=True)


@pytest.mark.slow
def test_rematerialised_blocks_give_the_same_step(tmp_path, shard_dir):
    assert_same_two_steps(tmp_path, shard_dir, 2e-5, remat=True)


@pytest.mark.slow
def test_bias_updates_lower_max_violation(tmp_path, shard_dir):
    _, balanced = train(tmp_path, shard_dir, "on", steps=25, bias_update_gamma=0.01)
    _, free = train(tmp_path, shard_dir, "off", steps=25, bias_update_gamma=0.0)
    on = np.mean([balanced[s]["max_violation/mean"] for s in range(16, 26)])
    off = np.mean([free[s]["max_violation/mean"] for s in range(16, 26)])
    print(f"MaxVio over steps 16-25: {on:.3f} with bias updates, {off:.3f} without")
    assert on < 0.75 * off


@pytest.mark.slow
def test_checkpoints_hold_every_variable_and_keep_the_last_n(tmp_path, shard_dir):
    trainer, _ = train(tmp_path, shard_dir, "ckpt", steps=12, checkpoint_every=3, keep_checkpoints=2)
    state = tf.train.get_checkpoint_state(os.path.join(tmp_path, "ckpt", "checkpoints"))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-9", "ckpt-12"]
    saved = tf.train.load_checkpoint(state.model_checkpoint_path)
    names = [n for n in saved.get_variable_to_shape_map() if n.startswith("model/")]
    assert len(names) == len(trainer.model.variables)  # decoder blocks, MTP and router biases too
    bias = next(n for n in names if n.endswith("e_score_correction_bias/.ATTRIBUTES/VARIABLE_VALUE"))
    assert np.abs(saved.get_tensor(bias)).max() > 0


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="micro_batches"):
        TrainingConfig(global_batch_size=6, micro_batches=4)
    with pytest.raises(ValueError, match="strategy"):
        TrainingConfig(strategy="tpu")


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_losses(tmp_path, shard_dir):
    """SIGKILL a training process after its step-8 checkpoint; the resumed process must
    log the same losses as an uninterrupted run at every later step."""
    training = {**TRAINING, "steps": 16, "checkpoint_every": 4}
    spec = {"model": MODEL, "training": training, "shards": shard_dir}
    run_trainer_process({**spec, "output": str(tmp_path / "straight")}, tmp_path, "straight")
    killed_dir = str(tmp_path / "killed")
    process = run_trainer_process({**spec, "output": killed_dir}, tmp_path, "killed", wait=False)
    deadline = time.time() + 300
    while time.time() < deadline:
        path = os.path.join(killed_dir, "metrics.jsonl")
        if os.path.exists(path) and max(read_metrics(killed_dir)) >= 10:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    logged_before_kill = max(read_metrics(killed_dir))
    assert logged_before_kill < 16, "the run finished before it could be killed"
    run_trainer_process({**spec, "output": killed_dir}, tmp_path, "resumed")
    straight, resumed = read_metrics(str(tmp_path / "straight")), read_metrics(killed_dir)
    for step in range(9, 17):
        for key in ("loss", "lm_loss", "mtp_loss", "grad_norm"):
            assert resumed[step][key] == pytest.approx(straight[step][key], rel=1e-6), (step, key)


@pytest.mark.slow
def test_a_stop_whose_exception_was_dropped_ends_training_at_the_next_step(tmp_path, shard_dir):
    """SIGTERM arrives inside a garbage-collector callback after step 3 (Python drops the
    handler's exception there): the loop stops before step 4 with the signal's exit code."""
    spec = {"model": MODEL, "training": {**TRAINING, "steps": 30}, "shards": shard_dir,
            "output": str(tmp_path / "stopped"), "lost_stop_at_step": 3}
    process = run_trainer_process(spec, tmp_path, "stopped", wait=False)
    output, _ = process.communicate(timeout=600)
    assert "Exception ignored" in output, output
    assert process.returncode == 128 + signal.SIGTERM, output
    assert max(read_metrics(str(tmp_path / "stopped"))) == 3


@pytest.mark.slow
def test_two_replicas_match_one(tmp_path, shard_dir):
    """MirroredStrategy over 2 logical CPUs, global batch 8, equals one device with batch 8."""
    spec = {"model": MODEL, "shards": shard_dir, "logical_cpus": 2}
    base = {**TRAINING, "steps": 3}
    run_trainer_process({**spec, "training": base, "output": str(tmp_path / "one"),
                         "weights_out": str(tmp_path / "one.npz")}, tmp_path, "one")
    run_trainer_process({**spec, "training": {**base, "strategy": "mirrored"}, "output": str(tmp_path / "two"),
                         "weights_out": str(tmp_path / "two.npz")}, tmp_path, "two")
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    for name in one.files:
        np.testing.assert_allclose(two[name], one[name], rtol=2e-5, atol=1e-6, err_msg=name)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_match_one_process(tmp_path, shard_dir):
    """MultiWorkerMirroredStrategy over 2 processes on localhost (TF_CONFIG) equals one
    process on the same global batch, and both workers hold the same router biases."""
    base = {**TRAINING, "steps": 3}
    run_trainer_process({"model": MODEL, "shards": shard_dir, "training": base, "output": str(tmp_path / "one"),
                         "weights_out": str(tmp_path / "one.npz")}, tmp_path, "one")
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    spec = {"model": MODEL, "shards": shard_dir, "training": {**base, "strategy": "multi_worker"},
            "output": str(tmp_path / "multi"), "weights_out": str(tmp_path / "worker-{task}.npz")}
    workers = [run_trainer_process(spec, tmp_path, f"worker{index}", wait=False, env={
        "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})})
        for index in range(2)]
    for worker in workers:
        output, _ = worker.communicate(timeout=600)
        assert worker.returncode == 0, output
    one = np.load(tmp_path / "one.npz")
    first, second = np.load(tmp_path / "worker-0.npz"), np.load(tmp_path / "worker-1.npz")
    for name in one.files:
        np.testing.assert_allclose(first[name], one[name], rtol=2e-5, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(second[name], first[name], err_msg=name)


def test_batch_size_ramp_uses_fewer_micro_batches_early(tmp_path):
    cfg = TrainingConfig(**{**TRAINING, "global_batch_size": 16, "micro_batches": 4, "batch_ramp_steps": 10,
                            "batch_ramp_start": 4})
    trainer = Trainer(ModelConfig(**MODEL), cfg, str(tmp_path))
    assert [trainer.micro_batches_at(s) for s in (0, 3, 5, 8, 10, 50)] == [1, 2, 3, 4, 4, 4]


@pytest.mark.slow
def test_bf16_mixed_precision_trains(tmp_path, shard_dir):
    trainer, metrics = train(tmp_path, shard_dir, "bf16", steps=6, precision="bf16")
    assert trainer.model.decoder_layers[0].self_attn.compute_dtype == "bfloat16"
    assert trainer.model.trainable_variables[0].dtype == "float32"  # master weights
    assert np.isfinite(metrics[6]["loss"]) and metrics[6]["lm_loss"] < metrics[1]["lm_loss"]


@pytest.mark.slow
def test_fp8_training_follows_the_bf16_loss_curve(tmp_path_factory):
    """The tiny preset trained 100 steps on real text (standard-library source, a byte per
    token) in float32, bf16 and fp8 from the same seed on the same batches. The paper's
    criterion is FP8's relative loss error against BF16: < 0.25%. Measured here (deterministic
    on this 2-core machine): fp8 against bf16 0.194%, and as the floor any rounding change
    sets, bf16 against float32 0.216% (benchmarks/RESULTS.md, "FP8 training")."""
    from tests.stages.trainer.synthetic_shards import stdlib_documents, write_shards

    shards = write_shards(str(tmp_path_factory.mktemp("text")), seq_len=128, num_documents=200,
                          corpus=stdlib_documents)
    tmp_path = tmp_path_factory.mktemp("runs")
    model = ModelConfig.from_preset("tiny")
    curves = {}
    for precision in ("float32", "bf16", "fp8"):
        cfg = TrainingConfig(steps=100, seq_len=128, global_batch_size=4, learning_rate=1e-3, warmup_steps=10,
                             constant_steps=50, decay_steps=40, final_learning_rate=1e-4, log_every=1,
                             checkpoint_every=100, jit_compile=True, precision=precision, seed=0)
        Trainer(model, cfg, os.path.join(tmp_path, precision)).fit(shards, eos_id=1)
        metrics = read_metrics(os.path.join(tmp_path, precision))
        curves[precision] = np.array([metrics[step]["lm_loss"] for step in sorted(metrics)])

    def error(a, b):   # mean relative gap of the curves smoothed over 10 steps, second half
        smooth = np.ones(10) / 10
        a, b = np.convolve(a, smooth, "valid"), np.convolve(b, smooth, "valid")
        return float(np.mean((np.abs(a - b) / b)[len(a) // 2:]))
    fp8_error, floor = error(curves["fp8"], curves["bf16"]), error(curves["bf16"], curves["float32"])
    print(f"fp8 vs bf16 {fp8_error:.4%}; bf16 vs float32 {floor:.4%}; final losses "
          f"{ {p: round(float(c[-10:].mean()), 4) for p, c in curves.items()} }")
    assert curves["fp8"][-10:].mean() < 0.7 * curves["fp8"][:10].mean()   # it learns
    assert fp8_error < 0.0025                 # the paper's bound
    assert fp8_error < 1.5 * floor            # and no further from bf16 than float32 is
