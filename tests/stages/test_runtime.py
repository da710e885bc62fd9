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

from stages import artifacts, cli, lineage_links

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

    # --force reruns one stage: a new run, same key, same content, marked as forced
    assert cli.main(["run", "dedup", "--config", config, "--force"]) == 0
    runs = mlflow_runs()
    assert len(runs) == 7
    dedup_runs = [r for r in runs if r.data.tags["seekforge.stage"] == "dedup"]
    assert len({r.data.tags["seekforge.cache_key"] for r in dedup_runs}) == 1
    forced = [r for r in dedup_runs if r.data.tags.get("seekforge.forced") == "true"]
    assert len(forced) == 1 and forced[0].data.tags["seekforge.replaces"] == dedup.info.run_id
    # ... and its description says so and links the run it replaced and its upstream, as the UI shows them
    description = forced[0].data.tags["mlflow.note.content"]
    experiment = dedup.info.experiment_id
    assert "**Forced rerun**" in description
    assert f"[this earlier run]({lineage_links.run_link(experiment, dedup.info.run_id)})" in description
    assert f"[ingest]({lineage_links.run_link(experiment, by_stage['ingest'].info.run_id)})" in description
    # its content is the same (output digests hold no paths, times or row order), so
    # downstream stages are cache hits
    capsys.readouterr()
    assert cli.main(["run", "filter", "--config", config]) == 0
    assert "cache hit" in capsys.readouterr().err and len(mlflow_runs()) == 7

    # a config change makes a new key downstream of the change only
    assert cli.main(["run", "filter", "--config", config, "--set", "filter.code.max_line_length=500"]) == 0
    assert len(mlflow_runs()) == 8

    # a published output changed afterwards is detected: named when a stage reads it,
    # rebuilt when the pipeline meets it as a cache hit
    latest_dedup = artifacts.latest(artifacts.stage_root(str(workdir / "artifacts"), "test", "dedup"))
    kept = sorted(p for p in os.listdir(latest_dedup.uri) if p.startswith("kept-"))[0]
    with open(os.path.join(latest_dedup.uri, kept), "r+b") as f:
        f.truncate(100)
    capsys.readouterr()
    assert cli.main(["run", "filter", "--config", config, "--set", "filter.code.max_line_length=400"]) == 2
    err = capsys.readouterr().err
    assert f"input 'dedup' of stage 'filter' is corrupt: {latest_dedup.uri}/{kept}: 100 bytes" in err
    assert "seekforge run dedup --force" in err
    assert cli.main(["pipeline", "--config", config, "--until", "filter"]) == 0
    assert "dedup] the published output for key" in capsys.readouterr().err
    artifacts.latest(artifacts.stage_root(str(workdir / "artifacts"), "test", "dedup")).verify()

    capsys.readouterr()
    assert cli.main(["lineage", by_stage["tokenize"].info.run_id]) == 0
    printed = capsys.readouterr().out
    for stage in upstream:
        assert by_stage[stage].info.run_id in printed


@pytest.mark.slow
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
    assert cli.main(["run", "dedup", "--config", config, "--set", "dedup.threshold=[0.7"]) == 2
    assert "--set dedup.threshold: the value '[0.7' is not valid YAML" in capsys.readouterr().err
    for assignment, message in (("pretrain.learning_rate=-1", "learning_rate must be > 0"),
                                ("pretrain.warmup_steps=-10", "warmup_steps must be >= 0"),
                                ("pretrain.clip_norm=-1", "clip_norm must be > 0")):
        assert cli.main(["run", "pretrain", "--config", config, "--set", assignment]) == 2
        assert f"pretrain: {message}" in capsys.readouterr().err
    assert cli.main(["lineage", "0123456789abcdef0123456789abcdef"]) == 2
    assert "no MLflow run '0123456789abcdef0123456789abcdef'" in capsys.readouterr().err


def test_an_mlflow_server_that_is_down_or_hangs_fails_the_stage_in_seconds(workdir, monkeypatch, capsys):
    import socket
    config = write_config(workdir)
    with socket.socket() as dead:                     # a port nobody listens on
        dead.bind(("127.0.0.1", 0))
        port = dead.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    assert cli.main(["run", "ingest", "--config", config, "--set", "pipeline.tracking_timeout_seconds=2"]) == 3
    assert f"the MLflow tracking server http://127.0.0.1:{port}" in capsys.readouterr().err
    with socket.socket() as silent:                   # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{silent.getsockname()[1]}")
        # (before: MLflow's own client waited forever here)
        assert cli.main(["run", "ingest", "--config", config, "--set", "pipeline.tracking_timeout_seconds=2"]) == 3
    assert "does not answer within 2s" in capsys.readouterr().err
    assert not os.path.exists(workdir / "artifacts" / "test" / "ingest")   # nothing started


SLOW_STAGE = textwrap.dedent("""
    import dataclasses, os, subprocess, sys, time

    @dataclasses.dataclass(frozen=True)
    class SlowConfig:
        label: str = "x"

    def run(ctx):
        with open(os.path.join(ctx.output_dir, "part.txt"), "w") as f:
            f.write("half")
        if os.environ.get("CHILD_PID_FILE"):   # a worker process, as Beam's DirectRunner starts
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
            with open(os.environ["CHILD_PID_FILE"], "w") as f:
                f.write(str(child.pid))
        open(os.environ["MARKER"], "w").close()
        try:
            time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
        except SystemExit as e:
            if os.environ.get("WRAP_STOP"):   # a library that turns every exception into its own
                raise RuntimeError("interrupted") from e
            raise
        with open(os.path.join(ctx.output_dir, "rest.txt"), "w") as f:
            f.write("done")
        return {"report": "rest.txt", "files": 2}
""")

# `seekforge run slow_test` with the stage above added to the pipeline spec
SLOW_CLI = textwrap.dedent("""
    import sys
    sys.path[:0] = [{repo!r}, {here!r}]
    from stages import cli, pipeline
    spec = pipeline.StageSpec("slow_test", "data", "generate", "slow_stage:SlowConfig", "slow_stage:run", "report")
    pipeline.STAGES += (spec,)
    pipeline.BY_NAME[spec.name] = spec
    sys.argv = ["seekforge", "run", "slow_test", "--config", sys.argv[1]]
    sys.exit(cli.entry())
""")


def slow_stage(workdir, **env):
    (workdir / "slow_stage.py").write_text(SLOW_STAGE)
    script = workdir / "slow_cli.py"
    script.write_text(SLOW_CLI.format(repo=REPO, here=str(workdir)))
    config = workdir / "slow.yaml"
    config.write_text(yaml.safe_dump({"pipeline": {"name": "test", "artifacts": str(workdir / "artifacts")},
                                      "slow_test": {"label": "y"}}))
    return [sys.executable, str(script), str(config)], {**os.environ, "MARKER": str(workdir / "started"), **env}


def start_and_wait(argv, env, marker):
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not os.path.exists(marker) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert os.path.exists(marker), proc.communicate()
    return proc


@pytest.mark.slow
def test_a_killed_stage_publishes_nothing_and_a_rerun_completes(workdir):
    argv, env = slow_stage(workdir, SLOW_SECONDS="60")
    proc = start_and_wait(argv, env, workdir / "started")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    root = workdir / "artifacts" / "test" / "slow_test"
    published = [p.name for p in root.iterdir() if not p.name.startswith((".tmp-", ".lock-", ".work-"))]
    assert published == []
    (workdir / "started").unlink()
    done = subprocess.run(argv, env={**env, "SLOW_SECONDS": "0"}, capture_output=True, text=True, check=True)
    published = done.stdout.strip().splitlines()[-1]
    assert sorted(os.listdir(published)) == ["manifest.json", "part.txt", "rest.txt"]
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")], "the killed run's temp dir is cleaned up"
    statuses = sorted(r.info.status for r in mlflow_runs())
    assert statuses == ["FINISHED", "KILLED"], "the killed run is closed, the rerun finished"


@pytest.mark.slow
def test_a_second_run_of_the_same_key_is_refused_while_the_first_runs(workdir):
    argv, env = slow_stage(workdir, SLOW_SECONDS="60")
    first = start_and_wait(argv, env, workdir / "started")
    try:
        second = subprocess.run(argv, env={**env, "SLOW_SECONDS": "0"}, capture_output=True, text=True, timeout=120)
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    assert second.returncode == 3
    assert "stage 'slow_test' with cache key" in second.stderr and "is already running (pid" in second.stderr
    assert "Traceback" not in second.stderr


@pytest.mark.slow
def test_sigterm_stops_the_stage_its_workers_and_its_mlflow_run(workdir):
    import psutil
    argv, env = slow_stage(workdir, SLOW_SECONDS="60", CHILD_PID_FILE=str(workdir / "child.pid"))
    proc = start_and_wait(argv, env, workdir / "started")
    child = int((workdir / "child.pid").read_text())
    assert psutil.pid_exists(child)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    deadline = time.time() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE \
            and time.time() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    root = workdir / "artifacts" / "test" / "slow_test"
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert [r.info.status for r in mlflow_runs()] == ["KILLED"]


@pytest.mark.slow
def test_a_stop_that_surfaces_as_another_error_still_ends_killed(workdir):
    """The SIGTERM's SystemExit reaches the runtime as a RuntimeError (or a BrokenPipeError
    once Airflow's reader of the output is gone): a stop, not a failure of the stage."""
    argv, env = slow_stage(workdir, SLOW_SECONDS="60", WRAP_STOP="1")
    proc = start_and_wait(argv, env, workdir / "started")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert [r.info.status for r in mlflow_runs()] == ["KILLED"]
    root = workdir / "artifacts" / "test" / "slow_test"
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
