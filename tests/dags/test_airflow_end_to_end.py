"""End to end through a real Airflow (api-server + scheduler + dag-processor on
127.0.0.1, SQLite, LocalExecutor, AIRFLOW_HOME in tmp) and its REST API v2: trigger
seekforge_data on the tiny preset shrunk by overrides, clear one task and see only that
stage rerun, and see a bad config value fail the first task with the stage's message
while nothing downstream runs. Every process started is stopped at the end."""

import json
import os
import socket
import time
import urllib.error
import urllib.request

import pytest

from dags import local_airflow

pytestmark = pytest.mark.slow
STDLIB = os.path.dirname(os.__file__)
DAG = "seekforge_data"
STAGES = ["ingest", "dedup", "filter", "mix", "tokenizer", "tokenize"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fast_overrides(tmp_path) -> list[str]:
    """The tiny preset on a handful of stdlib files: the data phase in well under a minute of stage time."""
    text = tmp_path / "text"
    text.mkdir(exist_ok=True)
    words = "the parser reads input and writes each line of the result to an output file with care".split()
    for i in range(4):
        (text / f"doc{i}.txt").write_text(" ".join(words[(i + j) % len(words)] for j in range(80)) + ".")
    code = [f"{STDLIB}/{name}" for name in ("textwrap.py", "shlex.py", "bisect.py", "json/decoder.py")]
    return [
        f"pipeline.artifacts={tmp_path / 'artifacts'}", "pipeline.name=e2e",
        "pipeline.beam_args=[--runner, DirectRunner, --direct_running_mode, in_memory, --direct_num_workers, '1']",
        f"ingest.sources=[{{name: code, kind: code, paths: {json.dumps(code)}}}, "
        f"{{name: text, kind: text, paths: ['{text}/*.txt']}}]",
        "tokenizer.vocab_size=300", "tokenize.seq_len=64", "tokenize.num_shards=1",
    ]


class Api:
    def __init__(self, base_url: str, password: str):
        self.base_url = base_url
        self.token = self.call("POST", "/auth/token", {"username": "admin", "password": password},
                               auth=False)["access_token"]

    def call(self, method, path, body=None, auth=True, raw=False):
        request = urllib.request.Request(self.base_url + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        if auth:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read().decode()
        return data if raw else json.loads(data)

    def wait(self, what, predicate, timeout=600, every=3):
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

    def trigger(self, conf) -> str:
        return self.call("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]

    def run_state(self, run_id):
        return self.call("GET", f"/api/v2/dags/{DAG}/dagRuns/{run_id}")["state"]

    def task_instances(self, run_id) -> dict:
        tis = self.call("GET", f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti for ti in tis}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("airflow-e2e")
    home, workdir = tmp / "airflow", tmp / "work"
    home.mkdir()
    workdir.mkdir()
    info = local_airflow.up(str(home), airflow_port=free_port(), mlflow_port=None, workdir=str(workdir))
    try:
        api = Api(info["airflow_url"], info["password"])
        api.wait(lambda: api.call("GET", f"/api/v2/dags/{DAG}"), lambda d: d["dag_id"] == DAG, timeout=240)
        api.call("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
        yield api, workdir, tmp
    finally:
        stopped = local_airflow.down(str(home))
        assert sorted(stopped) == ["api-server", "dag-processor", "scheduler"]
        assert all(local_airflow._start_time(p["pid"]) != p["start"] for p in info["pids"])


def mlflow_runs(workdir) -> list:
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name("e2e")
    return client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []


def runs_by_stage(workdir) -> dict:
    """{stage: its MLflow runs, oldest first}"""
    out = {}
    for run in sorted(mlflow_runs(workdir), key=lambda r: r.info.start_time):
        out.setdefault(run.data.tags["seekforge.stage"], []).append(run)
    return out


def test_trigger_then_clear_one_task_reruns_only_that_stage(airflow):
    api, workdir, tmp = airflow
    run_id = api.trigger({"preset": "tiny", "overrides": fast_overrides(tmp)})
    assert api.wait(lambda: api.run_state(run_id), lambda s: s in ("success", "failed")) == "success"
    first = runs_by_stage(workdir)
    assert sorted(first) == sorted(STAGES) and all(len(r) == 1 for r in first.values())
    assert {r[0].data.tags["seekforge.pipeline_run"] for r in first.values()} == {run_id}

    api.call("POST", f"/api/v2/dags/{DAG}/clearTaskInstances",
             {"dry_run": False, "only_failed": False, "task_ids": ["filter"], "dag_run_id": run_id,
              "include_upstream": False, "include_downstream": False, "reset_dag_runs": True})
    tis = api.wait(lambda: api.task_instances(run_id),
                   lambda t: t["filter"]["try_number"] == 2 and t["filter"]["state"] == "success"
                   and api.run_state(run_id) == "success")
    assert {name: ti["try_number"] for name, ti in tis.items()} == {s: 2 if s == "filter" else 1 for s in STAGES}
    second = runs_by_stage(workdir)
    assert len(second["filter"]) == 2                      # the cleared stage reran, forced
    for stage in STAGES:
        if stage != "filter":                              # the others are untouched
            assert [r.info.run_id for r in second[stage]] == [r.info.run_id for r in first[stage]]

    from stages import tracking
    if hasattr(tracking, "airflow_tags"):   # the runtime's Airflow tags (issue 6 report), once applied
        for stage, runs in second.items():
            tags = runs[-1].data.tags
            assert (tags["airflow.dag_id"], tags["airflow.run_id"], tags["airflow.task_id"]) == (DAG, run_id, stage)
            assert tags["airflow.try_number"] == ("2" if stage == "filter" else "1")

    events = api.call("GET", "/api/v2/assets/events?limit=10")["asset_events"]
    extras = [e["extra"] for e in events if e.get("extra", {}).get("pipeline_run") == run_id]
    assert extras, "the phase's asset event carries the run settings"
    published = {r["stage"]: r["mlflow_run_id"] for r in extras[-1]["mlflow_runs"]}
    assert published == {stage: runs[0].info.run_id for stage, runs in first.items()}


def test_bad_config_value_fails_its_task_with_the_stage_message(airflow):
    api, workdir, tmp = airflow
    overrides = fast_overrides(tmp) + ["ingest.sources=[]"]
    run_id = api.trigger({"preset": "tiny", "overrides": overrides})
    assert api.wait(lambda: api.run_state(run_id), lambda s: s in ("success", "failed")) == "failed"
    tis = api.task_instances(run_id)
    assert tis["ingest"]["state"] == "failed"
    assert all(tis[s]["state"] in ("upstream_failed", None) for s in STAGES[1:])
    log = api.call("GET", f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances/ingest/logs/1?full_content=true",
                   raw=True)
    assert "ingest.sources: at least one source" in log
