"""The DAG files import cleanly, and each phase's tasks and dependencies follow the
pipeline spec in stages/pipeline.py."""

import pytest

from dags import dag_factory, phases
from stages import pipeline


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag
    return DagBag(dag_folder=dag_factory.run_settings.REPO_ROOT + "/dags", include_examples=False)


def chain_of(dag) -> list[str]:
    """Task ids from the root along the single downstream chain; fails on any branching."""
    roots = [t for t in dag.tasks if not t.upstream_task_ids]
    assert len(roots) == 1, f"{dag.dag_id}: one root expected, got {[t.task_id for t in roots]}"
    order, task = [], roots[0]
    while True:
        order.append(task.task_id)
        assert len(task.downstream_task_ids) <= 1, f"{task.task_id} branches: {task.downstream_task_ids}"
        if not task.downstream_task_ids:
            return order
        task = dag.get_task(next(iter(task.downstream_task_ids)))


def test_dag_files_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {p.dag_id for p in phases.PHASES} == set(pipeline.PHASE_DAGS.values())


def test_tasks_follow_the_pipeline_spec(dagbag):
    for dag_id in dagbag.dag_ids:
        phase = phases.BY_DAG_ID[dag_id].phase
        assert chain_of(dagbag.dags[dag_id]) == [s.name for s in pipeline.STAGES if s.phase == phase]
        for task in dagbag.dags[dag_id].tasks:
            assert task.stage == task.task_id


def test_every_stage_is_in_one_dag_in_pipeline_order():
    tasks = [t for p in phases.PHASES for t in p.stages]
    assert tasks == list(pipeline.BY_NAME)


def test_reading_the_spec_imports_neither_tensorflow_nor_beam():
    import subprocess
    import sys
    code = ("import sys; from dags import phases; from stages import pipeline, orchestration; "
            "pipeline.section_references(); "
            "print(sorted(m for m in ('tensorflow', 'apache_beam', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=dag_factory.run_settings.REPO_ROOT)
    assert out.stdout.strip() == "[]"


def test_data_phase_is_the_six_data_stages():
    assert phases.phase_stages("seekforge_data") == ["ingest", "dedup", "filter", "mix", "tokenizer", "tokenize"]


def test_each_phase_publishes_the_asset_that_schedules_the_next():
    dags = {p.dag_id: dag_factory.build_phase_dag(p.dag_id) for p in phases.PHASES}
    assert chain_of(dags["seekforge_pretrain"]) == ["pretrain", "extend_32k", "extend_128k", "evaluate"]
    assert chain_of(dags["seekforge_posttrain"]) == ["posttrain_data", "sft", "grpo", "distill",
                                                     "posttrain_evaluate"]
    from airflow.sdk.definitions.timetables.simple import NullTimetable
    assert isinstance(dags["seekforge_data"].timetable, NullTimetable)   # triggered by hand (or the API)
    for phase in phases.PHASES:
        dag = dags[phase.dag_id]
        last = dag.get_task(chain_of(dag)[-1])
        assert [a.name for a in last.outlets] == [phase.asset_name]
        assert all(not t.outlets for t in dag.tasks if t is not last)
        if phase.after:
            scheduled_by = [a.name for a in dag.timetable.asset_condition.objects]
            assert scheduled_by == [phases.BY_DAG_ID[phase.after].asset_name]


def test_retries_and_timeouts_come_from_the_orchestration_config():
    from stages import orchestration
    dag = dag_factory.build_phase_dag("seekforge_data")
    expected = orchestration.OrchestrationConfig().for_stage("dedup")
    task = dag.get_task("dedup")
    assert task.retries == expected.retries
    assert task.execution_timeout.total_seconds() == expected.timeout_minutes * 60


def test_params_validate_preset_overrides_and_mode():
    import copy
    dag = dag_factory.build_phase_dag("seekforge_data")
    good = copy.deepcopy(dag.params)
    good.update({"preset": "small", "overrides": ["dedup.threshold=0.7"], "mode": "kubernetes"})
    assert good.validate()["mode"] == "kubernetes"
    assert copy.deepcopy(dag.params).validate() == {"preset": "tiny", "overrides": [], "mode": "local",
                                                    "force": False, "pipeline_run": None}
    for bad in ({"preset": "huge"}, {"overrides": ["no equals sign"]}, {"mode": "ssh"}, {"force": "yes"}):
        params = copy.deepcopy(dag.params)
        with pytest.raises(Exception, match="Invalid input|not valid|is not one of|does not match|is not of type"):
            params.update(bad)
            params.validate()


def test_every_param_has_a_usable_default():
    """Airflow's trigger form disables Trigger while a param is 'required': one whose
    schema lacks "null" and whose value is empty. Every default must submit as is."""
    dag = dag_factory.build_phase_dag("seekforge_data")
    for name, param in dag.params.items():
        schema_type = param.schema.get("type")
        types = schema_type if isinstance(schema_type, list) else [schema_type]
        assert param.value not in (None, "", []) or "null" in types, name


def test_a_deployment_sets_the_forms_default_overrides(monkeypatch):
    monkeypatch.setenv("SEEKFORGE_DEFAULT_OVERRIDES", '["pipeline.artifacts=/data/a", "tokenize.seq_len=64"]')
    dag = dag_factory.build_phase_dag("seekforge_data")
    assert dag.params["overrides"] == ["pipeline.artifacts=/data/a", "tokenize.seq_len=64"]
    monkeypatch.setenv("SEEKFORGE_DEFAULT_OVERRIDES", "pipeline.artifacts=/data/a")
    with pytest.raises(ValueError, match="SEEKFORGE_DEFAULT_OVERRIDES is not JSON"):
        dag_factory.build_phase_dag("seekforge_data")
