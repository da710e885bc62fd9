"""Multi-host JAX training on Kubernetes is a JobSet: N indexed pods, locked down like
the TFJob workers, requesting their GPUs, whose env lets stages.trainer.multihost find
the process count, its own id and process 0 under the JobSet's headless service. It
renders without a cluster, valid against its schema; submission waits for the outcome."""

import json
import os

import jsonschema
import pytest
import yaml

from dags import container_specs
from stages.trainer import multihost
from tests.docker import k8s_schema
from tests.docker.test_container_specs import AIRFLOW, ORCH, REPO, argv, env_of

NAME = "seekforge-pretrain-2-abc123"


def manifest(name=NAME, stage="pretrain"):
    return container_specs.jobset_manifest(name, stage, argv(stage), container_specs.container_env(ORCH, AIRFLOW),
                                           ORCH, ORCH.for_stage(stage))


def schema():
    with open(os.path.join(REPO, "docker", "k8s", "jobset-v1alpha2.schema.json")) as f:
        return json.load(f)


def test_multi_host_jax_training_is_a_jobset_manifest():
    jobset = manifest()
    jsonschema.validate(jobset, schema())
    assert jobset["metadata"]["namespace"] == "ml"
    [workers] = jobset["spec"]["replicatedJobs"]
    k8s_schema.validate(workers["template"], "V1JobTemplateSpec")
    job = workers["template"]["spec"]
    assert workers["replicas"] == 1
    assert (job["completionMode"], job["completions"], job["parallelism"]) == ("Indexed", 4, 4)
    assert job["activeDeadlineSeconds"] == 1440 * 60
    # one failed process fails its Job at once, and the JobSet restarts every process
    assert job["backoffLimit"] == 0 and job["template"]["spec"]["restartPolicy"] == "Never"
    assert jobset["spec"]["failurePolicy"] == {"maxRestarts": ORCH.for_stage("pretrain").retries}
    assert jobset["spec"]["network"] == {"enableDNSHostnames": True, "subdomain": NAME,
                                         "publishNotReadyAddresses": True}
    spec = job["template"]["spec"]
    [container] = spec["containers"]
    assert container["image"] == ORCH.image and container["command"] == argv("pretrain")
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "200Gi"},
                                      "limits": {"memory": "200Gi", "nvidia.com/gpu": "8"}}
    assert {k: env_of(container)[k] for k in AIRFLOW} == AIRFLOW
    assert env_of(container)["KERAS_BACKEND"] == "jax"
    # as locked down as a stage pod and a TFJob worker, the MLflow login from the Secret
    with open(container_specs.POD_TEMPLATE) as f:
        stage_pod = yaml.safe_load(f)["spec"]
    assert spec["securityContext"] == stage_pod["securityContext"]
    assert spec["automountServiceAccountToken"] is False
    assert container["securityContext"] == stage_pod["containers"][0]["securityContext"]
    assert spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == "team-artifacts"
    login = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert login == {"MLFLOW_TRACKING_USERNAME": "seekforge-mlflow", "MLFLOW_TRACKING_PASSWORD": "seekforge-mlflow"}


def test_each_pod_finds_its_process_id_and_process_0():
    jobset = manifest()
    [workers] = jobset["spec"]["replicatedJobs"]
    [container] = workers["template"]["spec"]["template"]["spec"]["containers"]
    literal = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    # JobSet pod hostnames: <jobset>-<replicated job>-<job index>-<pod index>, under the subdomain
    process_0 = f"{NAME}-{workers['name']}-0-0.{jobset['spec']['network']['subdomain']}"
    for index in range(4):   # Kubernetes sets JOB_COMPLETION_INDEX in each pod of an Indexed Job
        config = multihost.from_environment({**literal, "JOB_COMPLETION_INDEX": str(index)})
        assert config == multihost.MultihostConfig(4, index, f"{process_0}:{multihost.COORDINATOR_PORT}")
    assert container["ports"] == [{"name": "coordinator", "containerPort": multihost.COORDINATOR_PORT}]


def test_the_pods_may_reach_each_other():
    with open(os.path.join(REPO, "docker", "k8s", "stage-networkpolicy.yaml")) as f:
        [policy] = yaml.safe_load_all(f)
    labels = manifest()["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()   # peers of one another


def test_a_name_too_long_or_malformed_is_refused():
    with pytest.raises(ValueError, match="exceed 63 characters"):
        manifest(name="seekforge-pretrain-" + "x" * 40)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest(name="Bad_Name"), schema())


class FakeCustomObjects:
    """The kubernetes client's CustomObjectsApi: records the created object, reports
    the given conditions."""

    def __init__(self, conditions):
        self.conditions, self.created = conditions, []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created.append((group, version, namespace, plural, body["metadata"]["name"]))

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        return {"status": {"conditions": self.conditions}}


@pytest.mark.parametrize("kind", ["JobSet", "TFJob"])
def test_submission_waits_for_success_or_names_the_failure(kind, monkeypatch):
    from kubernetes import client, config
    monkeypatch.setattr(config, "load_incluster_config", lambda: None)
    stage = ORCH.for_stage("pretrain")
    render, submit, done = {
        "JobSet": (container_specs.jobset_manifest, container_specs.submit_jobset, "Completed"),
        "TFJob": (container_specs.tfjob_manifest, container_specs.submit_tfjob, "Succeeded")}[kind]
    job = render(NAME, "pretrain", argv("pretrain"), {}, ORCH, stage)

    class Log:
        def info(self, *args):
            self.line = args[0] % args[1:]

    api = FakeCustomObjects([{"type": done, "status": "True"}])
    monkeypatch.setattr(client, "CustomObjectsApi", lambda: api)
    submit(job, log := Log(), poll_seconds=0)
    group_version = tuple(job["apiVersion"].split("/"))
    assert api.created == [(*group_version, "ml", f"{kind.lower()}s", NAME)]
    assert log.line.startswith(f"submitted {kind} ml/{NAME} (4 ")
    api = FakeCustomObjects([{"type": "Failed", "status": "True", "message": "pod 3 OOMKilled"}])
    monkeypatch.setattr(client, "CustomObjectsApi", lambda: api)
    with pytest.raises(RuntimeError, match=f"{kind} ml/{NAME} failed: pod 3 OOMKilled"):
        submit(job, Log(), poll_seconds=0)
