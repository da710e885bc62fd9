"""Stage `posttrain_data` end to end through the runtime: four JSONL files with counts,
disjoint splits, cache hit on a rerun, the same bytes from the same seed, the stdlib
files recorded as an MLflow input; bad config values named."""

import json

import pytest
import yaml

import stages.posttrain_data as posttrain_data
from stages import config as config_module
from stages import runtime, tracking
from stages.config import ConfigError
from stages.artifact_types import PosttrainData
from stages.posttrain import docstrings

SECTION = {"seed": 7, "sft_problems": 120, "grpo_prompts": 80, "held_out_fraction": 0.2, "operand_max": 12,
           "multiturn_fraction": 0.2, "docstring_sources": ["{stdlib}/textwrap.py", "{stdlib}/bisect.py"]}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tmp_path


def write_config(tmp_path, section=SECTION) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"pipeline": {"name": "test", "artifacts": str(tmp_path / "artifacts")},
                                    "posttrain_data": section}))
    return str(path)


def load(output, name):
    return PosttrainData(output).records(name)


def user_prompts(conversations):
    return {m["content"] for c in conversations for m in c["messages"] if m["role"] == "user"}


@pytest.mark.slow
def test_stage_writes_the_four_files_with_counts(workdir):
    config = config_module.load(write_config(workdir))
    output = runtime.run_stage("posttrain_data", config)
    results = output.manifest["results"]
    records = {name: load(output, name) for name in posttrain_data.OUTPUT_FILES}
    for name, rows in records.items():
        assert results[name] == posttrain_data.OUTPUT_FILES[name]
        assert results["counts"][name]["total"] == len(rows) > 0
    by_source = results["counts"]["sft_train"]["by_source"]
    assert {"arithmetic", "algebra", "code", "multiturn", "docstring_code", "docstring_qa"} <= set(by_source)
    assert sum(by_source.values()) == len(records["sft_train"])
    assert results["problems_generated"] == results["problems_requested"] == 200
    assert set(results["dropped"]) >= {"duplicate_prompt", "no_docstring", "too_long", "private_function"}
    assert sum(results["dropped"][reason] for reason in docstrings.DROP_REASONS) > 0     # textwrap.dedent: too long

    # held out and train never share a prompt; SFT problems and GRPO prompts are distinct
    assert not user_prompts(records["sft_train"]) & user_prompts(records["sft_held_out"])
    train_prompts = {p["prompt"] for p in records["prompts_train"]}
    held_prompts = {p["prompt"] for p in records["prompts_held_out"]}
    assert not train_prompts & held_prompts
    assert not (train_prompts | held_prompts) & user_prompts(records["sft_train"] + records["sft_held_out"])
    # a function's two docstring conversations are on the same side
    sides = {}
    for side in ("sft_train", "sft_held_out"):
        for c in records[side]:
            if c["source"].startswith("docstring"):
                sides.setdefault(c["id"].split(":", 1)[1], set()).add(side)
    assert sides and all(len(s) == 1 for s in sides.values())
    multiturn = [c for c in records["sft_train"] if c["source"] == "multiturn"]
    assert multiturn and all([m["role"] for m in c["messages"]] == ["user", "assistant"] * 2 for c in multiturn)
    for problem in records["prompts_train"]:
        assert {"id", "task", "prompt", "answer"} <= set(problem)

    run = tracking.mlflow().get_run(output.run_id)
    assert run.data.metrics["counts.prompts_train.total"] == len(records["prompts_train"])
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["docstring_sources"]

    # same config: a cache hit; --force: the same bytes again (reproducible from the seed)
    assert runtime.run_stage("posttrain_data", config).uri == output.uri
    forced = runtime.run_stage("posttrain_data", config, force=True)
    assert forced.digest == output.digest

    # another seed: other problems
    other = runtime.run_stage("posttrain_data", config_module.load(write_config(workdir, {**SECTION, "seed": 8})))
    assert load(other, "prompts_train") != records["prompts_train"]


@pytest.mark.parametrize("override, message", [
    ({"tasks": ["arithmetic", "poetry"]}, "posttrain_data.tasks[1]: unknown task 'poetry'"),
    ({"held_out_fraction": 1.5}, "posttrain_data.held_out_fraction"),
    ({"operand_max": 1}, "posttrain_data.operand_max"),
    ({"sft_problems": -1}, "posttrain_data.sft_problems"),
    ({"tasks": []}, "posttrain_data.tasks"),
])
def test_bad_values_are_errors_naming_the_key(workdir, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_module.load(write_config(workdir, {**SECTION, **override}))


def test_a_docstring_glob_that_matches_nothing_is_named(workdir):
    config = config_module.load(write_config(workdir, {**SECTION, "docstring_sources": ["{stdlib}/nope_*.py"]}))
    with pytest.raises(FileNotFoundError, match=r"posttrain_data.docstring_sources\[0\]"):
        runtime.run_stage("posttrain_data", config)
    assert json.dumps(posttrain_data.PosttrainDataConfig().docstring_sources)   # the defaults are plain data
