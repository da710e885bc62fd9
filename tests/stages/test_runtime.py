"""The stage runtime: caching, --force, atomic publish after a kill, config errors,
MLflow runs with inputs and lineage tags."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from stages import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STDLIB = os.path.dirname(os.__file__)
IN_MEMORY = ["--runner", "DirectRunner", "--direct_running_mode", "in_memory", "--direct_num_workers", "1"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tmp_path


def write_config(tmp_path):
    code = tmp_path / "corpus" / "code"
    text = tmp_path / "corpus" / "text"
    code.mkdir(parents=True)
    text.mkdir(parents=True)
    for name in ("json/decoder.py", "json/encoder.py", "json/scanner.py", "textwrap.py", "bisect.py", "shlex.py"):
        shutil.copy(os.path.join(STDLIB, name), code / name.replace("/", "_"))
    shutil.copy(os.path.join(STDLIB, "textwrap.py"), code / "vendored_textwrap.py")      # exact copy
    src = open(os.path.join(STDLIB, "shlex.py")).read()
    (code / "vendored_shlex.py").write_text(src.replace("def split(", "def split_words("))  # near-duplicate
    import random
    vocabulary = ("the parser reads input and then writes result to output file with care each line that has "
                  "value is kept rest are dropped from final list of words river field summer").split()
    for i in range(6):   # six different texts, none a near-duplicate of another
        rng = random.Random(i)
        words = [rng.choice(vocabulary) for _ in range(120)]
        (text / f"doc{i}.txt").write_text(" ".join(words) + ".")
    config = {
        "pipeline": {"name": "test", "artifacts": str(tmp_path / "artifacts"), "beam_args": IN_MEMORY},
        "ingest": {"sources": [{"name": "code", "kind": "code", "paths": [str(code / "*.py")]},
                               {"name": "text", "kind": "text", "paths": [str(text / "*.txt")]}]},
        "dedup": {"threshold": 0.8},
        "filter": {"text": {"min_words": 10, "max_duplicate_line_fraction": 1.0, "max_top_2gram_fraction": 1.0,
                            "max_top_3gram_fraction": 1.0, "max_top_4gram_fraction": 1.0}},
        "mix": {"weights": {"code": 0.87, "text": 0.13}},
        "tokenizer": {"vocab_size": 512},
        "tokenize": {"seq_len": 64, "num_shards": 2},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def snapshot(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            out[p] = os.stat(p).st_mtime_ns
    return out


def mlflow_runs():
    from stages import tracking
    ml = tracking.mlflow()
    exp = ml.get_experiment_by_name("test")
    return ml.MlflowClient().search_runs([exp.experiment_id], max_results=1000) if exp else []


@pytest.mark.slow
def test_pipeline_cache_force_mlflow_lineage(workdir, capsys):
    config = write_config(workdir)
    assert cli.main(["pipeline", "--config", config, "--until", "tokenize"]) == 0
    runs = mlflow_runs()
    by_stage = {r.data.tags["seekforge.stage"]: r for r in runs}
    assert sorted(by_stage) == sorted(["ingest", "dedup", "filter", "mix", "tokenizer", "tokenize"])
    assert len(runs) == 6 and len({r.data.tags["seekforge.pipeline_run"] for r in runs}) == 1
    upstream = {"ingest": [], "dedup": ["ingest"], "filter": ["dedup"], "mix": ["filter"], "tokenizer": ["mix"],
                "tokenize": ["mix", "tokenizer"]}
    for stage, parents in upstream.items():
        run = by_stage[stage]
        assert run.data.tags["seekforge.upstream"].split(",") == [by_stage[p].info.run_id for p in parents if p] or \
            (not parents and run.data.tags["seekforge.upstream"] == "")
        assert run.info.status == "FINISHED"
        assert len(run.inputs.dataset_inputs) == (len(parents) or 2)   # ingest: its two sources
        assert run.data.params  # flattened config
    dedup = by_stage["dedup"]
    assert dedup.data.metrics["removed_by_reason.exact_duplicate"] == 1
    assert dedup.data.metrics["removed_by_reason.near_duplicate"] == 1
    assert dedup.data.metrics["documents_in"] == 14

    # the same config again: every stage a cache hit, nothing written, no new runs
    before = snapshot(workdir / "artifacts")
    assert cli.main(["pipeline", "--config", config, "--until", "tokenize"]) == 0
    assert snapshot(workdir / "artifacts") == before
    assert len(mlflow_runs()) == 6
    assert capsys.readouterr().err.count("cache hit") == 6

    # --force reruns one stage: a new run, same key, same content
    assert cli.main(["run", "dedup", "--config", config, "--force"]) == 0
    runs = mlflow_runs()
    assert len(runs) == 7
    assert len({r.data.tags["seekforge.cache_key"] for r in runs if r.data.tags["seekforge.stage"] == "dedup"}) == 1

    # a config change makes a new key downstream of the change only
    assert cli.main(["run", "filter", "--config", config, "--set", "filter.code.max_line_length=500"]) == 0
    assert len(mlflow_runs()) == 8

    capsys.readouterr()
    assert cli.main(["lineage", by_stage["tokenize"].info.run_id]) == 0
    printed = capsys.readouterr().out
    for stage in upstream:
        assert by_stage[stage].info.run_id in printed


def test_bad_config_keys_and_values_are_named(workdir, capsys):
    config = write_config(workdir)
    assert cli.main(["run", "dedup", "--config", config, "--set", "dedup.treshold=0.7"]) == 2
    assert "dedup.treshold: unknown key" in capsys.readouterr().err
    assert cli.main(["run", "dedup", "--config", config, "--set", "dedup.threshold=high"]) == 2
    assert "dedup.threshold: expected a number" in capsys.readouterr().err
    assert cli.main(["run", "dedup", "--config", config, "--set", "dedup.bands=40"]) == 2
    assert "dedup.bands" in capsys.readouterr().err
    assert cli.main(["run", "nosuchstage", "--config", config]) == 2
    assert "unknown stage 'nosuchstage'" in capsys.readouterr().err
    assert cli.main(["run", "dedup", "--config", config]) == 2      # ingest never ran
    assert "run `seekforge run ingest` first" in capsys.readouterr().err


SLOW_STAGE = textwrap.dedent("""
    import dataclasses, os, sys, time
    sys.path.insert(0, {repo!r})
    from stages import config, registry, runtime

    @dataclasses.dataclass(frozen=True)
    class SlowConfig:
        label: str = "x"

    @registry.stage("slow_test", SlowConfig)
    def run(ctx):
        with open(os.path.join(ctx.output_dir, "part.txt"), "w") as f:
            f.write("half")
        open(os.environ["MARKER"], "w").close()
        time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
        with open(os.path.join(ctx.output_dir, "rest.txt"), "w") as f:
            f.write("done")
        return {{"files": 2}}

    registry.STAGE_MODULES[:] = []
    print(runtime.run_stage("slow_test", config.load(sys.argv[1])).uri)
""")


def test_a_killed_stage_publishes_nothing_and_a_rerun_completes(workdir):
    script = workdir / "slow_stage.py"
    script.write_text(SLOW_STAGE.format(repo=REPO))
    config = workdir / "slow.yaml"
    config.write_text(yaml.safe_dump({"pipeline": {"name": "test", "artifacts": str(workdir / "artifacts")},
                                      "slow_test": {"label": "y"}}))
    marker = workdir / "started"
    env = {**os.environ, "MARKER": str(marker), "SLOW_SECONDS": "60"}
    proc = subprocess.Popen([sys.executable, str(script), str(config)], env=env)
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert marker.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    root = workdir / "artifacts" / "test" / "slow_test"
    assert [p.name for p in root.iterdir() if not p.name.startswith(".tmp-")] == []   # nothing published

    marker.unlink()
    done = subprocess.run([sys.executable, str(script), str(config)], env={**env, "SLOW_SECONDS": "0"},
                          capture_output=True, text=True, check=True)
    published = done.stdout.strip().splitlines()[-1]
    assert sorted(os.listdir(published)) == ["manifest.json", "part.txt", "rest.txt"]
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")], "the killed run's temp dir is cleaned up"
    statuses = sorted(r.info.status for r in mlflow_runs())
    assert statuses == ["FINISHED", "KILLED"], "the killed run is closed, the rerun finished"
