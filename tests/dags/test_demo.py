"""The demo's summary reads each stage's outcome from the result files the stages wrote."""

import json

from dags import demo, stage_command


def test_result_files_give_outcome_output_and_mlflow_run(tmp_path):
    def write(stage, attempt, cached, run_id):
        path = tmp_path / stage_command.result_file("demo-1", stage, attempt)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"stage": stage, "uri": f"/r/artifacts/tiny/{stage}/k", "run_id": run_id,
                                    "cached": cached}))
    write("ingest", 1, True, "0123")
    write("dedup", 1, False, "old")
    write("dedup", 2, False, "fedc")       # a cleared task's second try is the one shown
    write("pretrain", 1, False, "9999")    # another phase
    assert demo.phase_outcomes(str(tmp_path), "demo-1", "seekforge_data") == {
        "ingest": ("cache hit", "/r/artifacts/tiny/ingest/k", "0123"),
        "dedup": ("published", "/r/artifacts/tiny/dedup/k", "fedc")}
