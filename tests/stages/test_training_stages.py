"""The pretraining and post-training phases through the stage runtime, on a small slice of
the tiny corpus: pretrain -> extend_32k -> extend_128k -> evaluate, with MLflow lineage,
YaRN in the extended configs, and a report whose numbers come from the trained models;
then posttrain_data -> sft -> grpo -> distill -> posttrain_evaluate with each registered
model's parent model and data."""

import json
import os

import pytest
import yaml

from stages import artifacts, cli, lineage_links, tracking

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IN_MEMORY = ["--runner", "DirectRunner", "--direct_running_mode", "in_memory", "--direct_num_workers", "1"]
MODEL = {"hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32, "num_hidden_layers": 2,
         "num_attention_heads": 2, "q_lora_rank": 32, "kv_lora_rank": 32, "qk_nope_head_dim": 16,
         "qk_rope_head_dim": 8, "v_head_dim": 16, "n_routed_experts": 8, "num_experts_per_tok": 2,
         "n_group": 4, "topk_group": 2, "vocab_size": 1024}


def small_pipeline_config(tmp_path) -> str:
    with open(os.path.join(REPO, "configs", "tiny.yaml")) as f:
        config = yaml.safe_load(f)
    config["pipeline"].update(artifacts=str(tmp_path / "artifacts"), beam_args=IN_MEMORY)
    config["ingest"]["sources"] = [{"name": "stdlib", "kind": "code", "paths": [
        "{stdlib}/json/*.py", "{stdlib}/email/*.py", "{stdlib}/asyncio/*.py"]}]
    config["mix"] = {"weights": {"code": 1.0}, "group_by": "kind", "seed": 0}
    config["tokenizer"]["vocab_size"] = 1024
    config["tokenize"] = {"seq_len": 64, "num_shards": 2}
    config["model"] = {"preset": "tiny", "overrides": MODEL}
    common = {"global_batch_size": 8, "warmup_steps": 2, "jit_compile": False, "log_every": 5,
              "checkpoint_every": 10, "final_learning_rate": 1e-3}
    config["pretrain"] = {**common, "steps": 300, "seq_len": 64, "learning_rate": 3e-3, "decay_steps": 150,
                          "constant_steps": 148, "final_learning_rate": 3e-4}
    yarn = {"rope_factor": 4, "original_max_position_embeddings": 64, "learning_rate": 5e-4,
            "final_learning_rate": 5e-4}
    config["extend_32k"] = {**common, **yarn, "steps": 40, "seq_len": 256, "global_batch_size": 4}
    config["extend_128k"] = {**common, **yarn, "steps": 5, "seq_len": 256, "global_batch_size": 2}
    config["evaluate"] = {"context_lengths": [64, 256], "stride": 32, "max_windows": 24, "passkey_trials": 1,
                          "held_out": ["{stdlib}/logging/*.py"], "held_out_max_tokens": 4096,
                          "humaneval_limit": 2, "humaneval_max_new_tokens": 8}
    config["posttrain_data"] = {**config["posttrain_data"], "sft_problems": 400, "grpo_prompts": 100,
                                "docstring_sources": ["{stdlib}/textwrap.py"]}
    short = {"global_batch_size": 8, "jit_compile": False, "log_every": 5, "checkpoint_every": 10}
    config["sft"] = {**config["sft"], **short, "epochs": 0, "steps": 30, "seq_len": 128, "eval_problems": 8,
                     "eval_max_new_tokens": 24}
    config["grpo"] = {**config["grpo"], "steps": 4, "prompts_per_step": 2, "num_generations": 4,
                      "max_completion_length": 24, "eval_problems": 8, "eval_samples": 2, "log_every": 2,
                      "checkpoint_every": 2}
    # batches of 2: the rows come from the teacher's finished replies, and how many of its 88
    # finish within 24 tokens differs between machines (float rounding of the trained models):
    # 13 on 2026-12-04's machine, about 5 rows, too few for the batches of 8 that passed on
    # CI's machine two days before
    config["distill"] = {**config["distill"], **short, "global_batch_size": 2, "steps": 10, "seq_len": 128,
                         "samples_per_prompt": 1, "max_new_tokens": 24, "min_reward": 0.0, "eval_problems": 8,
                         "student_overrides": {"vocab_size": 1024}}
    config["posttrain_evaluate"] = {"problems": 8, "samples": 2, "max_new_tokens": 24}
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


STAGES = ("tokenize", "tokenizer", "pretrain", "extend_32k", "extend_128k", "evaluate", "posttrain_data", "sft",
          "grpo", "distill", "posttrain_evaluate")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The whole pipeline, once: {stage: its published output, "tracking_uri": MLflow's store}."""
    tmp_path = tmp_path_factory.mktemp("pipeline")
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        patch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        assert cli.main(["pipeline", "--config", small_pipeline_config(tmp_path)]) == 0
    root = str(tmp_path / "artifacts")
    return {"tracking_uri": tracking_uri, **{s: artifacts.latest(artifacts.stage_root(root, "tiny", s)) for s in STAGES}}


@pytest.fixture
def client(pipeline, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pipeline["tracking_uri"])
    return tracking.mlflow().MlflowClient()


@pytest.mark.slow
def test_pretraining_phase_end_to_end(pipeline, client):
    out = pipeline
    # the pretrained model learned
    with open(out["pretrain"].path("metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f]
    assert metrics[-1]["lm_loss"] < metrics[0]["lm_loss"] - 1.0
    assert metrics[-1]["mtp_loss"] < metrics[0]["mtp_loss"] - 1.0
    # the extension stages saved YaRN configs and started from their upstream checkpoints
    for stage in ("extend_32k", "extend_128k"):
        with open(out[stage].path("model/config.json")) as f:
            hf = json.load(f)
        assert hf["rope_scaling"]["type"] == "yarn" and hf["rope_scaling"]["factor"] == 4
        assert hf["rope_scaling"]["original_max_position_embeddings"] == 64
    with open(out["pretrain"].path("model/config.json")) as f:
        assert json.load(f)["rope_scaling"] is None
    # the report holds every model at every length, and the plot exists
    with open(out["evaluate"].path("report.json")) as f:
        report = json.load(f)
    for stage in ("pretrain", "extend_32k", "extend_128k"):
        assert set(report["models"][stage]["perplexity"]) == {"64", "256"}
        assert all(v > 1 for v in report["models"][stage]["perplexity"].values())
    assert 0 <= report["models"]["extend_128k"]["humaneval"]["pass_at_1"] <= 1
    # YaRN extension: at 4x the pretraining context (256 vs 64), the extended model beats
    # the pretrained one evaluated there without extension, on the same held-out tokens
    ppl = {stage: report["models"][stage]["perplexity"] for stage in ("pretrain", "extend_32k")}
    print("perplexity at 64 / 256 tokens:", ppl)
    assert ppl["extend_32k"]["256"] < ppl["pretrain"]["256"]
    # and longer context costs it less than it costs the unextended model
    assert ppl["extend_32k"]["256"] / ppl["extend_32k"]["64"] < ppl["pretrain"]["256"] / ppl["pretrain"]["64"]
    assert os.path.getsize(out["evaluate"].path("perplexity.png")) > 1000
    # MLflow: lineage from evaluate back through the training stages to the data
    upstream = lambda o: client.get_run(o.run_id).data.tags[tracking.TAG_UPSTREAM].split(",")  # noqa: E731
    assert upstream(out["pretrain"]) == [out["tokenize"].run_id, out["tokenizer"].run_id]
    assert upstream(out["extend_32k"])[0] == out["pretrain"].run_id
    assert upstream(out["evaluate"])[:3] == [out[s].run_id for s in ("pretrain", "extend_32k", "extend_128k")]
    history = client.get_metric_history(out["pretrain"].run_id, "lm_loss")
    assert [m.step for m in history] == list(range(5, 301, 5))
    versions = client.search_model_versions("name='tiny-pretrain'")
    assert [v.run_id for v in versions] == [out["pretrain"].run_id]
    # ... and lineage as links: the version names and links its run, whose description links its upstream
    [version] = versions
    run = client.get_run(out["pretrain"].run_id)
    assert {k: version.tags[f"seekforge.{k}"] for k in ("source_run", "stage", "pipeline_run", "cache_key")} == {
        "source_run": run.info.run_id, "stage": "pretrain", "pipeline_run": run.data.tags[tracking.TAG_PIPELINE_RUN],
        "cache_key": out["pretrain"].manifest["cache_key"]}
    assert lineage_links.run_link(run.info.experiment_id, run.info.run_id) in version.description
    description = run.data.tags["mlflow.note.content"]
    for name in ("tokenize", "tokenizer"):
        assert f"[{name}]({lineage_links.run_link(run.info.experiment_id, out[name].run_id)})" in description
    assert client.get_registered_model("tiny-pretrain").tags["seekforge.stage"] == "pretrain"
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.slow
def test_posttraining_phase_end_to_end(pipeline, client):
    out = pipeline
    sft = out["sft"].manifest["results"]
    # SFT learned the assistant turns of held-out conversations
    assert sft["held_out"]["after"]["assistant_loss"] < sft["held_out"]["before"]["assistant_loss"] - 1.0
    assert sft["packing"]["conversations"] > 100
    # GRPO logged what the issue asks for, every step it logged
    with open(out["grpo"].path("metrics.jsonl")) as f:
        grpo_metrics = [json.loads(line) for line in f]
    assert [m["step"] for m in grpo_metrics] == [2, 4]
    for key in ("reward", "reward/accuracy", "reward/format", "reward_std", "zero_std_fraction", "kl",
                "clip_fraction", "completion_length", "entropy"):
        assert key in grpo_metrics[-1], key
    # the student is the tiny-student shape, sharing the teacher's vocabulary
    with open(out["distill"].path("model/config.json")) as f:
        student = json.load(f)
    assert student["hidden_size"] == 128 and student["vocab_size"] == 1024
    distill = out["distill"].manifest["results"]
    assert distill["teacher_samples"]["sampled"] == distill["teacher_samples"]["kept"] + sum(
        distill["teacher_samples"]["rejected_by_reason"].values())
    assert distill["held_out"]["student"]["teacher_kl"] >= 0 and "baseline" in distill["held_out"]
    with open(out["posttrain_evaluate"].path("report.json")) as f:
        report = json.load(f)
    assert list(report["models"]) == ["extend_128k", "sft", "grpo", "distill"]
    assert all(0 <= m["greedy"]["reward/format"] <= 1 for m in report["models"].values())
    assert os.path.getsize(out["posttrain_evaluate"].path("posttrain.png")) > 1000
    # MLflow: each registered model names its parent model and its data
    upstream = lambda o: client.get_run(o.run_id).data.tags[tracking.TAG_UPSTREAM].split(",")  # noqa: E731
    assert upstream(out["sft"]) == [out[s].run_id for s in ("extend_128k", "posttrain_data", "tokenizer")]
    assert upstream(out["grpo"])[0] == out["sft"].run_id
    for stage, parent in (("sft", "extend_128k"), ("grpo", "sft"), ("distill", "grpo")):
        [version] = client.search_model_versions(f"name='tiny-{stage}'")
        assert version.run_id == out[stage].run_id
        assert version.tags["seekforge.parent_model"] == out[parent].manifest["results"]["mlflow_model"]
        assert version.tags["seekforge.training_data"] == out["posttrain_data"].uri
