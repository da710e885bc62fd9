import json
import os
import subprocess
import sys

import pytest

from tests.stages.trainer.synthetic_shards import write_shards

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))

# A model small enough that a trainer step takes milliseconds, with every V3 part present.
MODEL = dict(vocab_size=128, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
             num_hidden_layers=2, first_k_dense_replace=1, num_attention_heads=2, q_lora_rank=16,
             kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, n_routed_experts=8,
             n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
             max_position_embeddings=256, num_nextn_predict_layers=1, initializer_range=0.02)


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory):
    return write_shards(str(tmp_path_factory.mktemp("shards")), seq_len=32)


def run_trainer_process(spec: dict, tmp_path, name: str, env=None, wait=True):
    """Start run_trainer.py on spec; returns the Popen (wait=False) or the finished process."""
    path = os.path.join(tmp_path, f"{name}.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    process = subprocess.Popen([sys.executable, os.path.join(HERE, "run_trainer.py"), path], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": ROOT, **(env or {})},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output
    return process


def read_metrics(output_dir: str) -> dict[int, dict]:
    """step -> metrics; a resumed run re-logs steps after its checkpoint, the last line wins."""
    metrics = {}
    with open(os.path.join(output_dir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            metrics[row["step"]] = row
    return metrics
