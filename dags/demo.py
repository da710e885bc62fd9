"""`make demo`: run the phases' DAGs for the tiny preset with Airflow, in order, each with
`airflow dags test` (the whole DAG in one process, nothing left running), then print
what ran, key metrics, where the artifacts are and how to open the MLflow UI.

    python -m dags.demo [--preset tiny] [--set a.b=c ...]

The phases run in order (data, pretrain, posttrain); one pipeline run id ties their
MLflow runs."""

import argparse
import json
import os
import re
import subprocess
import sys
import time

from dags import local_airflow, phases, stage_command
from dags.airflow_env import AIRFLOW_BIN, REPO_ROOT, airflow_env

AIRFLOW_HOME = os.path.join(REPO_ROOT, ".airflow")   # shared with `make up`: the runs show in its UI
KEY_METRICS = ("documents_in", "documents_kept", "documents_removed", "documents_quarantined", "stats.rows_out",
               "vocab_size", "loss", "eval_loss", "perplexity", "tokens_per_second", "wall_seconds",
               "assistant_loss", "reward", "reward/accuracy", "reward/format", "teacher_kl")


def run_phase(dag_id: str, conf: dict, env: dict, log_path: str) -> tuple[bool, dict]:
    """`airflow dags test`; returns success and {stage: (how, uri, mlflow run id)} from
    the result files the phase's stages wrote."""
    with open(log_path, "w") as log:
        code = subprocess.call([AIRFLOW_BIN, "dags", "test", dag_id, "-c", json.dumps(conf)],
                               cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    succeeded = code == 0 and "state=success" in open(log_path).read()
    return succeeded, phase_outcomes(stage_command.workdir(), conf["pipeline_run"], dag_id)


def phase_outcomes(workdir: str, pipeline_run: str, dag_id: str) -> dict:
    """{stage: ("published" | "cache hit", output uri, MLflow run id)} of the phase's stages
    that wrote a result file in this pipeline run."""
    results = stage_command.latest_results(workdir, pipeline_run)
    return {stage: ("cache hit" if r["cached"] else "published", r["uri"], r["run_id"])
            for stage, r in results.items() if stage in phases.phase_stages(dag_id)}


def shorter(path: str) -> str:
    """Relative to the repository when inside it."""
    relative = os.path.relpath(path, REPO_ROOT)
    return path if relative.startswith("..") else relative


def summarize(results: list, pipeline_run: str, tracking_uri: str, started: float) -> None:
    from stages import tracking
    client = tracking.mlflow().MlflowClient()
    print(f"\nseekforge demo: pipeline run {pipeline_run}, {time.time() - started:.0f} s\n")
    for dag_id, ok, stages, log_path in results:
        print(f"{dag_id}: {'success' if ok else 'FAILED'} (log: {os.path.relpath(log_path, REPO_ROOT)})")
        for stage in phases.phase_stages(dag_id):
            if stage not in stages:
                failure = re.search(rf"stage {stage} failed \(exit \d+\): [^\[\n]*", open(log_path).read())
                print(f"  {stage:12s} {failure.group(0).strip()[:300] if failure else 'did not run'}")
                continue
            how, uri, run_id = stages[stage]
            metrics = client.get_run(run_id).data.metrics
            # exact names first, then nested ones such as models.pretrain.perplexity.1024
            keys = [k for k in KEY_METRICS if k in metrics] + sorted(
                k for k in metrics if k not in KEY_METRICS and set(k.split(".")) & set(KEY_METRICS))
            keys = keys or sorted(metrics)[:5]
            shown = ", ".join(f"{k} {metrics[k]:g}" for k in keys)
            print(f"  {stage:12s} {how:10s} {shorter(uri)}  MLflow run {run_id}\n"
                  f"  {'':12s} {shown}")
    uris = [uri for _, _, stages, _ in results for _, uri, _ in stages.values()]
    if uris:   # {artifacts}/{pipeline}/{stage}/{cache key}
        print(f"\nArtifacts: {shorter(os.path.dirname(os.path.dirname(uris[0])))}/STAGE/KEY   "
              "(each one's manifest.json says what made it)")
    print(f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"
          f"\n           then open http://127.0.0.1:5000/{local_airflow.MLFLOW_START_PAGE}"
          "\n           (or `make up` for Airflow and MLflow together)")
    print("Lineage:   .venv/bin/python -m stages.cli lineage RUN_ID   (the chain of runs behind a run)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    started = time.time()
    pipeline_run = time.strftime("demo-%Y%m%d-%H%M%S")
    env = airflow_env(AIRFLOW_HOME)
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]   # the summary reads the same store
    os.makedirs(os.path.join(AIRFLOW_HOME, "logs"), exist_ok=True)
    print(f"Airflow home {os.path.relpath(AIRFLOW_HOME, REPO_ROOT)}: migrating its SQLite database", flush=True)
    subprocess.check_call([AIRFLOW_BIN, "db", "migrate"], env=env, cwd=REPO_ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = {"preset": args.preset, "overrides": args.overrides, "mode": "local", "pipeline_run": pipeline_run}
    results = []
    for phase in phases.PHASES:
        log_path = os.path.join(AIRFLOW_HOME, "logs", f"{phase.dag_id}-{pipeline_run}.log")
        print(f"{phase.dag_id}: airflow dags test ({' -> '.join(phases.phase_stages(phase.dag_id))})", flush=True)
        ok, stages = run_phase(phase.dag_id, conf, env, log_path)
        results.append((phase.dag_id, ok, stages, log_path))
        if not ok:
            break
    summarize(results, pipeline_run, env["MLFLOW_TRACKING_URI"], started)
    return 0 if results and all(ok for _, ok, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
