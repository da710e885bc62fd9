"""Lineage a user can click in the MLflow UI: each stage run's description (markdown,
which the run page renders) links its upstream runs, its Airflow task and the run whose
output it replaced; each registered model version is tagged with the run that made it
and describes it with a link. The links are the UI's own hash routes, relative to the
page, so they hold behind any host name or proxy prefix."""

# MLflow's experiment kind: without it the UI opens the experiment in its GenAI view
# (traces, a "choose experiment type" popup); our runs are model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"   # what the UI shows and edits as a run's description


# The UI's model-training view: without it MLflow 3 shows its GenAI pages around a run
TRAINING_VIEW = "workflowType=machine_learning"


def run_link(experiment_id: str, run_id: str) -> str:
    return f"#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEW}"


def mark_experiment(client, experiment) -> None:
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def run_description(stage: str, pipeline_run: str, upstream: dict[str, tuple[str, str]],
                    airflow_url: str | None = None, forced: bool = False,
                    replaces: tuple[str, str] | None = None) -> str:
    """upstream: {input name: (experiment id, run id)}; replaces: (experiment id, run id)."""
    lines = [f"Stage **{stage}** of pipeline run `{pipeline_run}`."]
    if forced:
        lines.append("**Forced rerun**: rebuilt although its output may have been cached.")
    if upstream:
        lines.append("Upstream: " + ", ".join(f"[{name}]({run_link(*where)})" for name, where in upstream.items()))
    else:
        lines.append("Upstream: none (reads only its external sources).")
    if replaces:
        lines.append(f"Replaces the output of [this earlier run]({run_link(*replaces)}).")
    if airflow_url:
        lines.append(f"Airflow: [the task that ran it]({airflow_url}).")
    return "\n\n".join(lines)


def version_description(stage: str, pipeline_run: str, experiment_id: str, run_id: str) -> str:
    return (f"Trained by stage **{stage}** of pipeline run `{pipeline_run}`: "
            f"[its MLflow run]({run_link(experiment_id, run_id)}), whose description links its upstream runs.")
