"""Pod specs and TFJob manifests render without a cluster (and the Docker operator
without an engine), valid against their schemas, carrying the image, command,
resources and env the config says."""

import json
import os

import jsonschema
import pytest

from dags import container_specs, stage_command
from stages import orchestration
from tests.docker import k8s_schema

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ORCH = orchestration.from_dict(orchestration.OrchestrationConfig, {
    "mode": "kubernetes", "image": "registry.example.com/seekforge:0.1.0", "namespace": "ml",
    "service_account": "airflow-worker", "artifacts_volume_claim": "team-artifacts",
    "mlflow_tracking_uri": "http://mlflow:5000",
    "default": {"resources": {"cpu": "2", "memory": "8Gi"}},
    "stages": {"pretrain": {"workers": 4, "timeout_minutes": 1440, "resources": {"gpu": 8, "memory": "200Gi"}}},
}, "orchestration")
AIRFLOW = stage_command.airflow_env("seekforge_pretrain", "manual__1", "pretrain", 2)


def argv(stage):
    return stage_command.stage_argv(stage, container_specs.container_config_path("small"), ["pretrain.steps=10"],
                                    "manual__1", force=True)


def env_of(container) -> dict:
    """name -> value, or -> valueFrom for one from a Secret (the template's MLflow login)."""
    return {e["name"]: e["value"] if "value" in e else e["valueFrom"] for e in container["env"]}


@pytest.mark.parametrize("stage, gpus", [("dedup", None), ("extend_32k", "1")])
def test_pod_spec_renders_without_a_cluster(stage, gpus):
    op = container_specs.pod_operator(f"{stage}_pod", stage, argv(stage), container_specs.container_env(ORCH, AIRFLOW),
                                      ORCH, ORCH.for_stage(stage))
    pod = container_specs.render_pod(op)
    k8s_schema.validate(pod, "V1Pod")
    assert pod["metadata"]["namespace"] == "ml"
    assert pod["metadata"]["labels"]["seekforge/stage"] == stage
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "airflow-worker"
    assert spec["activeDeadlineSeconds"] == 3600
    [container] = spec["containers"]
    assert container["image"] == "registry.example.com/seekforge:0.1.0"
    assert container["command"] + container["args"] == argv(stage)
    assert container["command"] == ["seekforge"] and container["args"][:2] == ["run", stage]
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert container["resources"]["limits"].get("nvidia.com/gpu") == gpus
    env = env_of(container)
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert {k: env[k] for k in AIRFLOW} == AIRFLOW
    assert {"name": "work", "mountPath": "/work"} in container["volumeMounts"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["team-artifacts"]


def test_multi_worker_training_is_a_tfjob_manifest():
    stage = ORCH.for_stage("pretrain")
    manifest = container_specs.tfjob_manifest("seekforge-pretrain-2-abc123", "pretrain", argv("pretrain"),
                                              container_specs.container_env(ORCH, AIRFLOW), ORCH, stage)
    with open(os.path.join(REPO, "docker", "k8s", "tfjob-v1.schema.json")) as f:
        jsonschema.validate(manifest, json.load(f))
    worker = manifest["spec"]["tfReplicaSpecs"]["Worker"]
    k8s_schema.validate(worker["template"], "V1PodTemplateSpec")
    assert worker["replicas"] == 4
    assert manifest["metadata"]["namespace"] == "ml"
    assert manifest["spec"]["runPolicy"]["activeDeadlineSeconds"] == 1440 * 60
    [container] = worker["template"]["spec"]["containers"]
    assert container["name"] == "tensorflow"
    assert container["image"] == ORCH.image and container["command"] == argv("pretrain")
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "200Gi"},
                                      "limits": {"memory": "200Gi", "nvidia.com/gpu": "8"}}
    assert {k: env_of(container)[k] for k in AIRFLOW} == AIRFLOW
    # the workers are as locked down as a stage pod, and log in to MLflow from the Secret
    spec = worker["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] and spec["automountServiceAccountToken"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    login = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert login == {"MLFLOW_TRACKING_USERNAME": "seekforge-mlflow", "MLFLOW_TRACKING_PASSWORD": "seekforge-mlflow"}


def test_a_schema_violation_is_caught():
    with pytest.raises(AssertionError, match="not a field of V1Container"):
        k8s_schema.validate({"spec": {"containers": [{"name": "x", "imagee": "typo"}]}}, "V1Pod")
    bad = container_specs.tfjob_manifest("Bad_Name", "pretrain", ["seekforge"], {}, ORCH, ORCH.for_stage("pretrain"))
    with open(os.path.join(REPO, "docker", "k8s", "tfjob-v1.schema.json")) as f:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, json.load(f))


def test_docker_operator_builds_without_an_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-passw0rd")
    stage = ORCH.for_stage("pretrain")
    op = container_specs.docker_operator("pretrain_container", argv("pretrain"), AIRFLOW, ORCH, stage, str(tmp_path))
    assert op.image == ORCH.image and op.command == argv("pretrain")
    assert op.environment == AIRFLOW   # rendered and shown in the UI: no login there
    assert op._private_environment == {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "s3cret-passw0rd"}
    assert op.working_dir == "/work"
    assert [(m["Target"], m["Source"]) for m in op.mounts] == [("/work", str(tmp_path))]
    assert op.device_requests[0]["Count"] == 8
    assert op.mem_limit == "200g"


def test_beam_stages_on_kubernetes_get_the_configured_runner():
    from dags import phases
    assert phases.BEAM_STAGES >= {"ingest", "dedup", "filter", "mix", "tokenize"}
    assert not phases.BEAM_STAGES & set(orchestration.BUILT_IN_STAGES)
