"""Builds a phase's DAG from the pipeline spec: one SeekforgeStageOperator per stage of
the phase, chained in pipeline order; the last task publishes the phase's
asset, which schedules the next phase. Retries and timeouts come from the
`orchestration` section of the default preset (Airflow fixes them when the DAG is
parsed; a run's preset decides mode, image and resources at execution time)."""

import datetime

from airflow.sdk import DAG, Asset

from dags import phases, run_settings, task_docs
from dags.stage_operator import SeekforgeStageOperator
from stages import orchestration


def phase_asset(dag_id: str) -> Asset:
    phase = phases.BY_DAG_ID[dag_id]
    return Asset(name=phase.asset_name, uri=phase.asset_uri)


def build_phase_dag(dag_id: str) -> DAG:
    """The phase's DAG."""
    phase = phases.BY_DAG_ID[dag_id]
    stage_names = phase.stages
    orch = orchestration.load(run_settings.config_path(run_settings.DEFAULT_PRESET))
    dag = DAG(
        dag_id=dag_id,
        schedule=[phase_asset(phase.after)] if phase.after else None,
        start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
        catchup=False,
        max_active_runs=1,             # stages read their upstream's latest published output
        params=run_settings.dag_params(orch.mode),
        tags=["seekforge"],
        doc_md=f"seekforge phase: {' → '.join(stage_names)}. Each task runs `seekforge run STAGE`; "
               "clear a task (Downstream off) to rerun only its stage, forced.",
    )
    previous = None
    for name in stage_names:
        settings = orch.for_stage(name)
        task = SeekforgeStageOperator(
            task_id=name, stage=name, phase_stages=stage_names, dag=dag, doc_md=task_docs.stage_doc(name),
            retries=settings.retries, retry_delay=datetime.timedelta(seconds=settings.retry_delay_seconds),
            execution_timeout=datetime.timedelta(minutes=settings.timeout_minutes),
            outlets=[phase_asset(dag_id)] if name == stage_names[-1] else [],
        )
        if previous is not None:
            previous >> task
        previous = task
    return dag
