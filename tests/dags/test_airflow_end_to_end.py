"""End to end through a real Airflow (api-server, scheduler, triggerer, dag-processor on
127.0.0.1, SQLite, LocalExecutor) and the MLflow UI, both as `make up` starts them, with
AIRFLOW_HOME and the working directory in tmp:

- the user's journey in a real browser (tests/dags/browser.py): log in, trigger
  seekforge_data from the form with its defaults, read a task's log, see the phase's
  asset start seekforge_pretrain and its progress lines, clear one task without
  downstream and see only it rerun, then in MLflow follow the lineage links from the
  registered model back to ingest; every step's screenshot is kept under test-artifacts/;
- a bad config value fails the first task with the stage's message (REST API);
- `make down` during a run fails the DAG run, stops the stage and ends its MLflow run
  KILLED, leaving nothing running.

The deployment's form defaults (SEEKFORGE_DEFAULT_OVERRIDES) shrink the tiny preset to a
handful of files and a smaller model, so a phase takes minutes of mostly process start-up."""

import json
import os
import socket
import sqlite3
import time
import urllib.error
from urllib.parse import quote, unquote

import psutil
import pytest

from dags import local_airflow
from tests.dags import browser

pytestmark = pytest.mark.slow
STDLIB = os.path.dirname(os.__file__)
DATA_STAGES = ["ingest", "dedup", "filter", "mix", "tokenizer", "tokenize"]
SMALL_MODEL = ("{hidden_size: 64, intermediate_size: 128, moe_intermediate_size: 32, num_hidden_layers: 2, "
               "num_attention_heads: 2, q_lora_rank: 32, kv_lora_rank: 32, qk_nope_head_dim: 16, "
               "qk_rope_head_dim: 8, v_head_dim: 16, n_routed_experts: 8, num_experts_per_tok: 2, n_group: 4, "
               "topk_group: 2, vocab_size: 512}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fast_overrides(tmp_path) -> list[str]:
    """The tiny preset on a handful of stdlib files and a 2-layer model: each stage is seconds of work."""
    text = tmp_path / "text"
    text.mkdir(exist_ok=True)
    words = "the parser reads input and writes each line of the result to an output file with care".split()
    for i in range(4):
        (text / f"doc{i}.txt").write_text(" ".join(words[(i + j) % len(words)] for j in range(80)) + ".")
    code = [f"{STDLIB}/{name}" for name in ("textwrap.py", "shlex.py", "bisect.py", "json/decoder.py")]
    train = ["jit_compile=false", "log_every=2", "warmup_steps=1", "global_batch_size=2"]
    extend = ["steps=2", "seq_len=128", "checkpoint_every=2", "rope_factor=2", "original_max_position_embeddings=64"]
    return [
        f"pipeline.artifacts={tmp_path / 'artifacts'}", "pipeline.name=e2e",
        "pipeline.beam_args=[--runner, DirectRunner, --direct_running_mode, in_memory, --direct_num_workers, '1']",
        f"ingest.sources=[{{name: code, kind: code, paths: {json.dumps(code)}}}, "
        f"{{name: text, kind: text, paths: ['{text}/*.txt']}}]",
        "tokenizer.vocab_size=300", "tokenize.seq_len=64", "tokenize.num_shards=1", f"model.overrides={SMALL_MODEL}",
        *[f"pretrain.{t}" for t in train], "pretrain.steps=6", "pretrain.seq_len=64", "pretrain.constant_steps=0",
        "pretrain.decay_steps=5", "pretrain.checkpoint_every=6",
        *[f"{stage}.{t}" for stage in ("extend_32k", "extend_128k") for t in train + extend],
        "evaluate.context_lengths=[64, 128]", "evaluate.stride=32", "evaluate.max_windows=2",
        "evaluate.passkey_trials=1", "evaluate.held_out=['{stdlib}/bisect.py']", "evaluate.held_out_max_tokens=1024",
        "evaluate.humaneval_limit=1", "evaluate.humaneval_max_new_tokens=4",
    ]


class Services:
    def __init__(self, info: dict, workdir):
        self.info, self.workdir = info, workdir
        self.airflow, self.mlflow = info["airflow_url"], info["mlflow_url"]
        self.call = local_airflow.rest_client(self.airflow, info["password"])

    def wait(self, what, predicate, timeout=900, every=3):
        deadline = time.time() + timeout
        while True:
            try:
                value = what()
                if predicate(value):
                    return value
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    raise
            if time.time() > deadline:
                raise TimeoutError(f"gave up waiting after {timeout} s")
            time.sleep(every)

    def dag_runs(self, dag_id) -> list[dict]:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-start_date")["dag_runs"]

    def run_state(self, dag_id, run_id) -> str:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")["state"]

    def finished(self, dag_id, run_id, timeout=900) -> str:
        return self.wait(lambda: self.run_state(dag_id, run_id), lambda s: s in ("success", "failed"), timeout)

    def task_instances(self, dag_id, run_id) -> dict:
        tis = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances")
        return {ti["task_id"]: ti for ti in tis["task_instances"]}

    def trigger(self, dag_id, conf) -> str:
        return self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]

    def mlflow_runs(self) -> dict:
        """{stage: its MLflow runs, oldest first}"""
        from mlflow.tracking import MlflowClient
        client = MlflowClient(tracking_uri=f"sqlite:///{self.workdir}/mlflow.db")
        experiment = client.get_experiment_by_name("e2e")
        runs = client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []
        out = {}
        for run in sorted(runs, key=lambda r: r.info.start_time):
            out.setdefault(run.data.tags["seekforge.stage"], []).append(run)
        return out


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("airflow-e2e")
    home, workdir = tmp / "airflow", tmp / "work"
    home.mkdir()
    workdir.mkdir()
    with pytest.MonkeyPatch.context() as env:   # what this deployment's trigger form offers
        env.setenv("SEEKFORGE_DEFAULT_OVERRIDES", json.dumps(fast_overrides(tmp)))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)   # the stages' store: workdir/mlflow.db
        info = local_airflow.up(str(home), airflow_port=free_port(), mlflow_port=free_port(), workdir=str(workdir))
    try:
        assert os.stat(home / local_airflow.PASSWORDS).st_mode & 0o777 == 0o600
        assert listening(info["pids"]) and all(ip == "127.0.0.1" for ip, _ in listening(info["pids"]))
        api = Services(info, workdir)
        api.wait(lambda: api.call("GET", "/api/v2/dags/seekforge_posttrain"), lambda d: d is not None, timeout=240)
        # post-training is not part of this journey: paused, the pretrain phase's asset event only queues
        api.call("PATCH", "/api/v2/dags/seekforge_posttrain", {"is_paused": True})
        yield api
    finally:
        local_airflow.down(str(home))   # nothing, once the last test has taken them down itself
        assert all(local_airflow._start_time(p["pid"]) != p["start"] for p in info["pids"])


def listening(pids: list[dict]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket listening in the services' process trees."""
    found = set()
    for p in pids:
        root = psutil.Process(p["pid"])
        for process in [root, *root.children(recursive=True)]:
            for c in process.net_connections("tcp"):
                if c.status == psutil.CONN_LISTEN:
                    found.add((c.laddr.ip, c.laddr.port))
    return found


@pytest.fixture
def chrome():
    reason = browser.missing()
    if reason:
        print(f"\n\n*** {reason} ***\n")
        pytest.skip(reason)
    b = browser.Browser(browser.artifacts_dir("airflow-mlflow-journey"))
    try:
        yield b
    finally:
        b.quit()


def test_the_users_journey_in_a_browser(services, chrome):
    api, b = services, chrome
    # log in
    b.open(api.airflow)
    b.element(css="input[name=username]").send_keys("admin")
    b.element(css="input[name=password]").send_keys(api.info["password"])
    b.shot("login")
    b.click(b.button("Sign in"))
    b.wait_for_text("Welcome", "Health", "Triggerer")
    b.shot("home")
    health = api.call("GET", "/api/v2/monitor/health")
    assert {k: health[k]["status"] for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == dict.fromkeys(
        ("metadatabase", "scheduler", "triggerer", "dag_processor"), "healthy")

    # trigger seekforge_data from the form, with its defaults
    b.open(f"{api.airflow}/dags/seekforge_data")
    b.click(b.button(label="Trigger Dag"))
    b.wait_for_text("Run Parameters", "Pipeline run id", "Config overrides")
    trigger = b.button("Trigger")   # the dialog's, not the page's
    assert trigger.is_enabled() and "This field is required" not in b.text()
    b.reveal(trigger)   # the form's end: the empty pipeline run id and the enabled Trigger
    b.shot("trigger-form")
    b.click(trigger)
    api.wait(lambda: b.driver.current_url, lambda url: "/runs/" in url, timeout=60, every=0.5)
    run_id = unquote(b.driver.current_url.split("/runs/")[1].split("/")[0].split("?")[0])
    b.wait_for_text(run_id)
    b.shot("data-run-started")
    assert api.finished("seekforge_data", run_id) == "success"
    first = api.mlflow_runs()
    assert sorted(first) == sorted(DATA_STAGES) and all(len(r) == 1 for r in first.values())
    assert {r[0].data.tags["seekforge.pipeline_run"] for r in first.values()} == {run_id}   # empty id: the run's

    # a task's log shows the stage's own output
    data_run = f"{api.airflow}/dags/seekforge_data/runs/{quote(run_id, safe='')}"
    b.open(f"{data_run}/tasks/dedup")
    b.wait_for_text("stage dedup: preset tiny", "[dedup] published", reload_every=10)
    b.shot("dedup-task-log")

    # the phase's asset started seekforge_pretrain, in the same pipeline run
    pretrain_runs = api.wait(lambda: api.dag_runs("seekforge_pretrain"), lambda runs: len(runs) == 1, timeout=120)
    pretrain_run = pretrain_runs[0]["dag_run_id"]
    assert pretrain_runs[0]["run_type"] == "asset_triggered"
    b.open(f"{api.airflow}/dags/seekforge_pretrain/runs/{quote(pretrain_run, safe='')}")
    b.wait_for_text(pretrain_run, "pretrain", "extend_32k")
    b.shot("pretrain-started-by-the-asset")

    # clear one task without its downstream: only it reruns (forced)
    b.open(f"{data_run}/tasks/mix")
    b.click(b.button(label="Clear Task Instance"))
    b.wait_for_text("Affected Tasks: 3")        # Airflow's default includes downstream
    b.click(b.button("Downstream"))
    b.wait_for_text("Affected Tasks: 1")
    b.shot("clear-mix-without-downstream")
    b.click(b.button("Confirm"))
    tis = api.wait(lambda: api.task_instances("seekforge_data", run_id),
                   lambda t: t["mix"]["try_number"] == 2 and t["mix"]["state"] == "success")
    assert {name: ti["try_number"] for name, ti in tis.items()} == {s: 2 if s == "mix" else 1 for s in DATA_STAGES}
    b.open(f"{data_run}/tasks/mix")
    b.wait_for_text("try 2 (forced)", reload_every=10)
    b.shot("mix-rerun-log")
    second = api.mlflow_runs()
    assert len(second["mix"]) == 2 and second["mix"][1].data.tags["seekforge.forced"] == "true"
    assert "**Forced rerun**" in second["mix"][1].data.tags["mlflow.note.content"]
    for stage in DATA_STAGES:
        if stage != "mix":
            assert [r.info.run_id for r in second[stage]] == [r.info.run_id for r in first[stage]]

    # the pretrain stage logs its progress: step of total, tokens/s, ETA
    api.wait(lambda: api.task_instances("seekforge_pretrain", pretrain_run)["pretrain"]["state"],
             lambda s: s in ("success", "failed"))
    b.open(f"{api.airflow}/dags/seekforge_pretrain/runs/{quote(pretrain_run, safe='')}/tasks/pretrain")
    log = b.wait_for_text("step 2/6 (33%, ETA", "step 6/6 (100%)", "tokens_per_second", reload_every=10)
    b.shot("pretrain-progress-log")
    assert api.task_instances("seekforge_pretrain", pretrain_run)["pretrain"]["state"] == "success", log[-2000:]

    # MLflow: from the registered model back to ingest by links alone
    b.open(f"{api.mlflow}/#/models?workflowType=machine_learning")
    b.click(b.link("e2e-pretrain"))
    b.click(b.link("Version 1"))
    b.wait_for_text("seekforge.source_run", "seekforge.cache_key", "seekforge.pipeline_run", run_id)
    b.shot("model-version")
    b.click(b.link("its MLflow run"))
    b.wait_for_text("Stage pretrain of pipeline run")
    b.shot("pretrain-run")
    for stage in ("tokenize", "mix", "filter", "dedup", "ingest"):
        b.click(b.link(stage))
        b.wait_for_text(f"Stage {stage} of pipeline run")
        assert first[stage][0].info.run_id in b.driver.current_url   # the run that made its consumer's input
    b.shot("ingest-run")
    assert "Upstream: none" in b.text()


def test_bad_config_value_fails_its_task_with_the_stage_message(services):
    api = services
    run_id = api.trigger("seekforge_data", {"overrides": fast_overrides(api.workdir.parent) + ["ingest.sources=[]"]})
    assert api.finished("seekforge_data", run_id, timeout=600) == "failed"
    tis = api.task_instances("seekforge_data", run_id)
    assert tis["ingest"]["state"] == "failed"
    assert all(tis[s]["state"] in ("upstream_failed", None) for s in DATA_STAGES[1:])
    log = api.call("GET", f"/api/v2/dags/seekforge_data/dagRuns/{quote(run_id, safe='')}/taskInstances/ingest/logs/1"
                          "?full_content=true")
    assert "ingest.sources: at least one source" in json.dumps(log)


def test_make_down_during_a_run_fails_it_and_stops_its_stage(services):
    """A pretrain of many steps is running when `down` comes: the DAG run ends failed, the
    stage's MLflow run KILLED, and no stage process is left."""
    api = services
    for run in api.dag_runs("seekforge_pretrain"):   # max_active_runs=1: let the journey's run end
        api.finished("seekforge_pretrain", run["dag_run_id"], timeout=900)
    overrides = fast_overrides(api.workdir.parent) + ["pretrain.steps=100000", "pretrain.decay_steps=99999"]
    run_id = api.trigger("seekforge_pretrain", {"overrides": overrides, "pipeline_run": "long-one"})

    def pretrain():
        return [r for r in api.mlflow_runs().get("pretrain", []) if r.data.tags["seekforge.pipeline_run"] == "long-one"]
    api.wait(pretrain, lambda runs: runs and runs[0].info.status == "RUNNING", timeout=600)
    stopped = local_airflow.down(api.info["home"])
    assert sorted(stopped) == sorted(["scheduler", "triggerer", "dag-processor", "api-server", "mlflow-ui"])
    [killed] = pretrain()
    assert killed.info.status == "KILLED"
    with sqlite3.connect(os.path.join(api.info["home"], "airflow.db")) as db:
        state = db.execute("select state from dag_run where run_id = ?", (run_id,)).fetchone()[0]
        ti_state = db.execute("select state from task_instance where run_id = ? and task_id = 'pretrain'",
                              (run_id,)).fetchone()[0]
    assert (state, ti_state) == ("failed", "failed")
    left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
            if "long-one" in " ".join(p.info["cmdline"] or [])]
    assert not left, left
