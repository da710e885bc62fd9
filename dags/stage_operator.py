"""One Airflow task = one `seekforge run STAGE`, executed where the run's mode says:
a subprocess on the worker (local), a container (docker) or a pod / TFJob (kubernetes).
The mode is chosen per DAG run (a param), so the dispatch happens at execution time:
the container operators are built then and executed inside this task."""

import os
import signal
import subprocess

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from dags import container_specs, phases, run_settings, stage_command

BAD_INPUT_EXIT_CODE = 2   # stages.cli: a config or input error; retrying cannot help
workdir = stage_command.workdir


class SeekforgeStageOperator(BaseOperator):
    ui_color = "#dbe9f6"
    custom_operator_name = "seekforge stage"   # the UI's name for every task's kind

    def __init__(self, *, stage: str, phase_stages: list[str], **kwargs):
        super().__init__(**kwargs)
        self.stage = stage
        self.phase_stages = list(phase_stages)
        self._process = None

    def execute(self, context):
        settings = run_settings.from_context(context)
        orch = settings.orchestration()
        stage_orch = orch.for_stage(self.stage)
        ti = context["ti"]
        force = stage_command.should_force(settings.force, ti.try_number)
        overrides = settings.stage_overrides
        if settings.mode == "kubernetes" and self.stage in phases.BEAM_STAGES and orch.beam_args:
            overrides = [*overrides, "pipeline.beam_args=" + repr(list(orch.beam_args))]
        env = stage_command.airflow_env(ti.dag_id, context["dag_run"].run_id, ti.task_id, ti.try_number)
        result_file = stage_command.result_file(settings.pipeline_run, self.stage, ti.try_number)
        self.log.info("stage %s: preset %s, mode %s, pipeline run %s, try %d%s", self.stage, settings.preset,
                      settings.mode, settings.pipeline_run, ti.try_number, " (forced)" if force else "")

        if settings.mode == "local":
            argv = stage_command.stage_argv(self.stage, settings.config_path, overrides, settings.pipeline_run, force,
                                            stage_command.LOCAL_EXECUTABLE, result_file)
            self._run_local(argv, env)
        else:
            argv = stage_command.stage_argv(self.stage, container_specs.container_config_path(settings.preset),
                                            overrides, settings.pipeline_run, force, result_file=result_file)
            self._run_remote(settings.mode, argv, container_specs.container_env(orch, env), orch, stage_orch, context)
        outcome = stage_command.read_result(os.path.join(workdir(), result_file))
        if outcome is None:
            self.log.warning("no result file %s on this worker (a pod's volume not mounted here?)", result_file)
        result = {"stage": self.stage, "mlflow_run_id": (outcome or {}).get("run_id"),
                  "output": (outcome or {}).get("uri"), "cached": (outcome or {}).get("cached"),
                  "pipeline_run": settings.pipeline_run, "forced": force}
        self._publish_asset(context, settings, result)
        return result

    def _run_local(self, argv: list[str], env: dict[str, str]) -> None:
        self.log.info("running %s", " ".join(argv))
        full_env = stage_command.local_environment(dict(os.environ), env)
        lines = []
        # a local reference: on_kill (another thread) clears self._process
        process = self._process = subprocess.Popen(argv, cwd=workdir(), env=full_env, stdout=subprocess.PIPE,
                                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            for line in process.stdout:
                lines.append(line.rstrip("\n"))
                self.log.info("%s", lines[-1])
            code = process.wait()
        finally:
            self.on_kill()   # a timeout or a kill of this task must not leave the stage running
        if code != 0:
            # the CLI's one-line error for bad input, else the end of the output (a traceback's last lines)
            errors = [line for line in lines if line.startswith("seekforge: error:")][-1:] or lines[-3:]
            message = f"stage {self.stage} failed (exit {code}): " + " | ".join(errors)
            raise (AirflowFailException if code == BAD_INPUT_EXIT_CODE else AirflowException)(message)

    def _run_remote(self, mode, argv, env, orch, stage_orch, context) -> None:
        if mode == "docker":
            container_specs.docker_operator(f"{self.task_id}_container", argv, env, orch, stage_orch,
                                            workdir()).execute(context)
        elif stage_orch.workers > 1:
            name = f"{container_specs.pod_name(self.stage)}-{context['ti'].try_number}-{os.urandom(3).hex()}"
            # worker logs stay with the TFJob's pods; the MLflow run carries the Airflow tags
            container_specs.submit_tfjob(container_specs.tfjob_manifest(name, self.stage, argv, env, orch, stage_orch),
                                         self.log)
        else:
            container_specs.pod_operator(f"{self.task_id}_pod", self.stage, argv, env, orch,
                                         stage_orch).execute(context)

    def _publish_asset(self, context, settings, result) -> None:
        """The phase's last task says which MLflow runs made the phase (asset event extra)."""
        if not self.outlets:
            return
        others = [s for s in self.phase_stages if s != self.stage]
        pulled = context["ti"].xcom_pull(task_ids=others) if others else []
        pulled = pulled if isinstance(pulled, list) else [pulled]
        # A list, not {stage: id}: Airflow masks the values of keys that look secret, and
        # "tokenize"/"tokenizer" contain "token".
        runs = [{"stage": r["stage"], "mlflow_run_id": r["mlflow_run_id"]} for r in [*pulled, result]
                if isinstance(r, dict)]
        for asset in self.outlets:
            context["outlet_events"][asset].extra = {**settings.as_extra(), "mlflow_runs": runs}

    def on_kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
