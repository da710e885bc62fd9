"""Where a stage command runs when it does not run on the worker: a Docker container
(DockerOperator) or a Kubernetes pod (KubernetesPodOperator), or, for multi-worker
training, a Kubeflow TFJob (TensorFlow) or a JobSet (multi-host JAX). Everything here
renders without a Docker engine or a cluster; only .execute() / submit_*() need one.

Inside containers the working directory is /work, the shared volume holding
./artifacts (and the SQLite MLflow store when no tracking server is configured), so
relative paths in the presets mean the same as on a local worker."""

import os

from stages.orchestration import OrchestrationConfig, StageOrchestration
from stages.trainer import multihost

WORKDIR = "/work"                       # the shared artifacts volume, mounted here
CONFIG_DIR = "/app/configs"             # the presets baked into the image (docker/Dockerfile)
POD_TEMPLATE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "docker", "k8s", "stage-pod.yaml")
TFJOB_API = ("kubeflow.org", "v1", "tfjobs")
JOBSET_API = ("jobset.x-k8s.io", "v1alpha2", "jobsets")
JAX_WORKERS = "workers"                 # the JobSet's one replicated job


MLFLOW_LOGIN = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def container_config_path(preset: str) -> str:
    return f"{CONFIG_DIR}/{preset}.yaml"


def container_env(orch: OrchestrationConfig, airflow_env: dict[str, str]) -> dict[str, str]:
    env = dict(airflow_env)
    if orch.mlflow_tracking_uri:
        env["MLFLOW_TRACKING_URI"] = orch.mlflow_tracking_uri
    return env


def resource_requirements(stage: StageOrchestration) -> dict:
    """requests/limits as Kubernetes writes them; GPUs are limits only (extended resource)."""
    r = stage.resources
    requests = {k: v for k, v in (("cpu", r.cpu), ("memory", r.memory)) if v}
    limits = {k: v for k, v in (("memory", r.memory),) if v}
    if r.gpu:
        limits["nvidia.com/gpu"] = str(r.gpu)
    return {"requests": requests, "limits": limits}


def pod_template(orch: OrchestrationConfig) -> dict:
    """docker/k8s/stage-pod.yaml with the configured artifacts volume claim."""
    import yaml
    with open(POD_TEMPLATE) as f:
        template = yaml.safe_load(f)
    for volume in template["spec"]["volumes"]:
        if "persistentVolumeClaim" in volume:
            volume["persistentVolumeClaim"]["claimName"] = orch.artifacts_volume_claim
    return template


def pod_name(stage: str) -> str:
    return f"seekforge-{stage.replace('_', '-')}"


def docker_operator(task_id: str, argv: list[str], env: dict[str, str], orch: OrchestrationConfig,
                    stage: StageOrchestration, host_workdir: str):
    from airflow.providers.docker.operators.docker import DockerOperator
    from docker.types import DeviceRequest, Mount
    gpus = [DeviceRequest(count=stage.resources.gpu, capabilities=[["gpu"]])] if stage.resources.gpu else None
    return DockerOperator(
        task_id=task_id, image=orch.image, command=argv, environment=env, working_dir=WORKDIR,
        mounts=[Mount(target=WORKDIR, source=os.path.abspath(host_workdir), type="bind")],
        mem_limit=stage.resources.memory.replace("i", "").lower() if stage.resources.memory else None,
        cpus=float(stage.resources.cpu.rstrip("m")) / (1000 if stage.resources.cpu.endswith("m") else 1)
        if stage.resources.cpu else 1.0,
        device_requests=gpus, auto_remove="success", mount_tmp_dir=False, xcom_all=True,
        # the worker's MLflow login, kept out of the rendered task and its logs
        private_environment={k: os.environ[k] for k in MLFLOW_LOGIN if os.environ.get(k)})


def pod_operator(task_id: str, stage_name: str, argv: list[str], env: dict[str, str],
                 orch: OrchestrationConfig, stage: StageOrchestration):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s
    return KubernetesPodOperator(
        task_id=task_id, name=pod_name(stage_name), namespace=orch.namespace, image=orch.image,
        cmds=argv[:1], arguments=argv[1:], env_vars=env,
        container_resources=k8s.V1ResourceRequirements(**resource_requirements(stage)),
        pod_template_dict=pod_template(orch), service_account_name=orch.service_account,
        labels={"app": "seekforge", "seekforge/stage": stage_name},
        active_deadline_seconds=int(stage.timeout_minutes * 60), get_logs=True,
        on_finish_action="delete_succeeded_pod")


def render_pod(operator) -> dict:
    """The pod the operator would create, as the API server would receive it."""
    from kubernetes.client import ApiClient
    return ApiClient().sanitize_for_serialization(operator.build_pod_request_obj(dry_run=True))


def _worker_pod_spec(container_name: str, argv: list[str], env: dict[str, str], orch: OrchestrationConfig,
                     stage: StageOrchestration) -> dict:
    """A training worker's pod spec: the stage pod template's lock-down, volumes and
    MLflow login (docker/k8s/stage-pod.yaml), the image, command, env and resources."""
    template = pod_template(orch)
    base = template["spec"]["containers"][0]
    container = {
        "name": container_name, "image": orch.image, "command": argv, "workingDir": WORKDIR,
        # the template's (HOME, the MLflow login from its Secret), then the task's
        "env": [*base.get("env", []), *({"name": k, "value": v} for k, v in sorted(env.items()))],
        "resources": resource_requirements(stage),
        "volumeMounts": base["volumeMounts"],
        "securityContext": base["securityContext"],
    }
    pod_spec = {"containers": [container], "volumes": template["spec"]["volumes"],
                **{k: template["spec"][k] for k in ("securityContext", "automountServiceAccountToken")}}
    if orch.service_account:
        pod_spec["serviceAccountName"] = orch.service_account
    return pod_spec


def tfjob_manifest(name: str, stage_name: str, argv: list[str], env: dict[str, str],
                   orch: OrchestrationConfig, stage: StageOrchestration) -> dict:
    """A Kubeflow TFJob: `workers` identical workers; the training operator gives each
    its TF_CONFIG, which the trainer's multi_worker strategy reads."""
    labels = {"app": "seekforge", "seekforge/stage": stage_name}
    # the training operator finds the TF container by its name
    pod_spec = _worker_pod_spec("tensorflow", argv, env, orch, stage)
    return {
        "apiVersion": f"{TFJOB_API[0]}/{TFJOB_API[1]}", "kind": "TFJob",
        "metadata": {"name": name, "namespace": orch.namespace, "labels": labels},
        "spec": {
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": stage.retries,
                          "activeDeadlineSeconds": int(stage.timeout_minutes * 60)},
            "tfReplicaSpecs": {"Worker": {"replicas": stage.workers, "restartPolicy": "OnFailure",
                                          "template": {"metadata": {"labels": labels}, "spec": pod_spec}}},
        },
    }


def jax_coordinator_address(name: str) -> str:
    """Process 0's pod under the JobSet's headless service (named after the JobSet):
    <jobset>-<replicated job>-<job index>-<pod index>.<subdomain>:port."""
    return f"{name}-{JAX_WORKERS}-0-0.{name}:{multihost.COORDINATOR_PORT}"


def jobset_manifest(name: str, stage_name: str, argv: list[str], env: dict[str, str],
                    orch: OrchestrationConfig, stage: StageOrchestration) -> dict:
    """A JobSet for multi-host JAX: one Indexed Job of `workers` pods (one JAX process
    each, all its GPUs), reachable by DNS name under the headless service the JobSet
    controller creates. Each pod's env says how many processes there are and where
    process 0 is; Kubernetes adds JOB_COMPLETION_INDEX, its process id
    (stages/trainer/multihost.py reads all three)."""
    hostname = f"{name}-{JAX_WORKERS}-0-{stage.workers - 1}"
    if len(hostname) > 63:   # a pod hostname is one DNS label
        raise ValueError(f"JobSet name {name!r} is too long: its pods' hostnames ({hostname}) exceed 63 characters")
    labels = {"app": "seekforge", "seekforge/stage": stage_name}   # app: the NetworkPolicy's peers
    jax_env = {"KERAS_BACKEND": "jax", multihost.NUM_PROCESSES: str(stage.workers),
               multihost.COORDINATOR_ADDRESS: jax_coordinator_address(name)}
    pod_spec = _worker_pod_spec("jax", argv, {**env, **jax_env}, orch, stage)
    pod_spec["restartPolicy"] = "Never"   # a lost process cannot rejoin: the JobSet restarts them all
    pod_spec["containers"][0]["ports"] = [{"name": "coordinator", "containerPort": multihost.COORDINATOR_PORT}]
    job_spec = {
        "completionMode": "Indexed", "completions": stage.workers, "parallelism": stage.workers,
        "backoffLimit": 0, "activeDeadlineSeconds": int(stage.timeout_minutes * 60),
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    return {
        "apiVersion": f"{JOBSET_API[0]}/{JOBSET_API[1]}", "kind": "JobSet",
        "metadata": {"name": name, "namespace": orch.namespace, "labels": labels},
        "spec": {
            # DNS records before readiness: the pods find process 0 while starting up
            "network": {"enableDNSHostnames": True, "subdomain": name, "publishNotReadyAddresses": True},
            "failurePolicy": {"maxRestarts": stage.retries},   # each restart resumes from the checkpoint
            "replicatedJobs": [{"name": JAX_WORKERS, "replicas": 1,
                                "template": {"metadata": {"labels": labels}, "spec": job_spec}}],
        },
    }


def submit_tfjob(manifest: dict, log, poll_seconds: float = 15.0) -> None:
    """Create the TFJob and wait for its Succeeded or Failed condition."""
    workers = manifest["spec"]["tfReplicaSpecs"]["Worker"]["replicas"]
    _submit_and_wait(TFJOB_API, manifest, "Succeeded", f"{workers} workers", log, poll_seconds)


def submit_jobset(manifest: dict, log, poll_seconds: float = 15.0) -> None:
    """Create the JobSet and wait for its Completed or Failed condition."""
    workers = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["parallelism"]
    _submit_and_wait(JOBSET_API, manifest, "Completed", f"{workers} JAX processes", log, poll_seconds)


def _submit_and_wait(api: tuple[str, str, str], manifest: dict, succeeded: str, size: str, log,
                     poll_seconds: float) -> None:
    import time

    from kubernetes import client, config
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    custom = client.CustomObjectsApi()
    group, version, plural = api
    kind, namespace, name = manifest["kind"], manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    custom.create_namespaced_custom_object(group, version, namespace, plural, manifest)
    log.info("submitted %s %s/%s (%s)", kind, namespace, name, size)
    while True:
        job = custom.get_namespaced_custom_object(group, version, namespace, plural, name)
        conditions = {c["type"]: c for c in job.get("status", {}).get("conditions", []) if c.get("status") == "True"}
        if succeeded in conditions:
            return
        if "Failed" in conditions:
            raise RuntimeError(f"{kind} {namespace}/{name} failed: {conditions['Failed'].get('message', '')}")
        time.sleep(poll_seconds)
