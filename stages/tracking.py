"""MLflow access for the runtime: the tracking store (sqlite:///mlflow.db in the working
directory unless MLFLOW_TRACKING_URI says otherwise) and the lineage tags."""

import os
import warnings

TAG_STAGE = "seekforge.stage"
TAG_PIPELINE_RUN = "seekforge.pipeline_run"
TAG_CACHE_KEY = "seekforge.cache_key"
TAG_UPSTREAM = "seekforge.upstream"        # comma-separated MLflow run ids
TAG_PROCESS = "seekforge.process"          # host:pid of the process executing the run
TAG_FORCED = "seekforge.forced"            # "true" on a run made by --force (or an Airflow rerun)
TAG_REPLACES = "seekforge.replaces"        # the run whose output (same key) this one replaced
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# Set by Airflow for each task (dags/stage_command passes them into containers too).
AIRFLOW_TAGS = {"AIRFLOW_CTX_DAG_ID": "airflow.dag_id", "AIRFLOW_CTX_DAG_RUN_ID": "airflow.run_id",
                "AIRFLOW_CTX_TASK_ID": "airflow.task_id", "AIRFLOW_CTX_TRY_NUMBER": "airflow.try_number"}


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server does not answer."""


def mlflow(settings=None):
    """The mlflow module, pointed at the tracking store. With `settings` (the pipeline
    config section): MLflow's HTTP timeout and retries from it, unless the MLFLOW_HTTP_*
    variables say otherwise (MLflow's own defaults, 120 s and 7 retries with backoff, make
    a dead server fail a stage after minutes), and a server URI is checked first."""
    import logging
    import mlflow as _mlflow
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if settings is not None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, settings.tracking_timeout_seconds))))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.tracking_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        if uri.startswith(("http://", "https://")):
            check_reachable(uri, settings.tracking_timeout_seconds)
    _mlflow.set_tracking_uri(uri)
    return _mlflow


def check_reachable(uri: str, timeout: float) -> None:
    """One GET of the server's /health, so a stage fails in seconds with a clear message
    rather than after its work (or never, on a server that accepts and does not answer)."""
    import urllib.error
    import urllib.request
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read(64)
    except urllib.error.HTTPError:
        return   # it answers (a proxy or an older server without /health)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingUnavailable(f"the MLflow tracking server {uri} (MLFLOW_TRACKING_URI) does not answer "
                                  f"within {timeout:g}s: {reason}; start it or point MLFLOW_TRACKING_URI "
                                  f"elsewhere (pipeline.tracking_timeout_seconds sets the wait)") from None


def get_run(client, run_id: str):
    """The MLflow run, or a ValueError naming the id and the store."""
    from mlflow.exceptions import MlflowException
    try:
        return client.get_run(run_id)
    except MlflowException as e:
        raise ValueError(f"no MLflow run {run_id!r} in {client.tracking_uri} "
                         f"({str(e).splitlines()[0][:200]})") from None


def experiment_of(client, run_id: str, default: str) -> str:
    """The experiment holding a run (upstream runs may live in another pipeline's)."""
    try:
        return get_run(client, run_id).info.experiment_id
    except ValueError:   # a run no longer in this store: link it as if in ours
        return default


def log_input(ml, name: str, uri: str, digest: str, context: str) -> None:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "can be interpreted in multiple ways" for local paths
        source = resolve_dataset_source(uri)
    ml.log_input(MetaDataset(source=source, name=name, digest=digest[:32]), context=context)


def numeric_metrics(result: dict, prefix: str = "") -> dict[str, float]:
    """Numbers of a (nested) result dict as flat metric names: removed_by_reason.min_words."""
    out = {}
    for k, v in result.items():
        name = f"{prefix}{k}"
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[name] = float(v)
        elif isinstance(v, dict):
            out.update(numeric_metrics(v, f"{name}."))
    return out


def process_tag() -> str:
    import socket
    return f"{socket.gethostname()}:{os.getpid()}"


def close_abandoned_runs(ml, experiment_id: str, stage: str) -> list[str]:
    """Runs of `stage` still RUNNING whose process on this host is gone (killed) are
    marked KILLED, so the tracking UI does not show them as in progress forever."""
    import socket

    from stages.artifacts import process_alive
    host = socket.gethostname()
    client = ml.MlflowClient()
    closed = []
    for run in client.search_runs([experiment_id], f"tags.`{TAG_STAGE}` = '{stage}' and attributes.status = 'RUNNING'"):
        where = run.data.tags.get(TAG_PROCESS, "")
        run_host, _, pid = where.rpartition(":")
        if run_host == host and pid.isdigit() and not process_alive(int(pid)):
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed



def airflow_tags() -> dict[str, str]:
    """The Airflow DAG run and task executing this stage (none outside Airflow), and a
    link to that task in the Airflow UI when the API's base URL is known."""
    tags = {tag: os.environ[var] for var, tag in AIRFLOW_TAGS.items() if os.environ.get(var)}
    base_url = os.environ.get("AIRFLOW__API__BASE_URL")
    if base_url and len(tags) == len(AIRFLOW_TAGS):
        from urllib.parse import quote
        tags["airflow.url"] = (f"{base_url.rstrip('/')}/dags/{quote(tags['airflow.dag_id'])}"
                               f"/runs/{quote(tags['airflow.run_id'], safe='')}/tasks/{quote(tags['airflow.task_id'])}")
    return tags
