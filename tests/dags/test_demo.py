"""The demo's summary reads each stage's outcome from the task log lines the runtime prints."""

from dags import demo


def test_stage_lines_give_outcome_output_and_mlflow_run():
    log = ("... [airflow.task] [ingest] cache hit: /r/artifacts/tiny/ingest/k1 (key k1, MLflow run "
           "0123456789abcdef0123456789abcdef); --force reruns it\n"
           "... [airflow.task] [dedup] published /r/artifacts/tiny/dedup/k2 in 3.5s "
           "(MLflow run fedcba9876543210fedcba9876543210)\n")
    found = {m.group(1): (m.group(2).rstrip(":"), m.group(3), m.group(4)) for m in demo.STAGE_LINE.finditer(log)}
    assert found == {"ingest": ("cache hit", "/r/artifacts/tiny/ingest/k1", "0123456789abcdef0123456789abcdef"),
                     "dedup": ("published", "/r/artifacts/tiny/dedup/k2", "fedcba9876543210fedcba9876543210")}
