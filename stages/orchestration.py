"""The `orchestration` config section: how Airflow runs each stage (retries, timeout,
resources, workers) and where (local | docker | kubernetes). Per-stage entries override
`default` field by field; a field left out (None) falls back to `default`.

    orchestration:
      mode: kubernetes
      image: registry.example.com/seekforge:0.1.0
      default: {retries: 1, timeout_minutes: 60, resources: {cpu: "2", memory: 8Gi}}
      stages:
        pretrain: {timeout_minutes: 1440, workers: 4, resources: {gpu: 8}}
      beam_args: [--runner, FlinkRunner, --flink_master=flink:8081]

Only the DAGs read this section; `seekforge run` ignores it (the DAGs strip
`orchestration.*` overrides before calling a stage)."""

import dataclasses

import yaml

from stages import pipeline
from stages.config import ConfigError, from_dict

MODES = ("local", "docker", "kubernetes")


@dataclasses.dataclass(frozen=True)
class Resources:
    cpu: str | None = None        # Kubernetes quantities: "2", "500m"
    memory: str | None = None     # "8Gi"
    gpu: int | None = None        # nvidia.com/gpu per worker


@dataclasses.dataclass(frozen=True)
class StageOrchestration:
    retries: int | None = None
    retry_delay_seconds: int | None = None
    timeout_minutes: float | None = None
    workers: int | None = None    # > 1: a Kubeflow TFJob with this many workers (kubernetes mode)
    resources: Resources = dataclasses.field(default_factory=Resources)

    def validate(self, key):
        for name in ("retries", "retry_delay_seconds", "timeout_minutes", "workers"):
            value = getattr(self, name)
            if value is not None and value < (1 if name in ("workers", "timeout_minutes") else 0):
                raise ConfigError(f"{key}.{name}: must be positive, got {value!r}")


DEFAULT = StageOrchestration(retries=0, retry_delay_seconds=30, timeout_minutes=60, workers=1,
                             resources=Resources(cpu="1", memory="4Gi", gpu=0))
# Training stages (kind "train" in the pipeline spec) ask for one GPU unless the preset's
# entry for the stage says otherwise (local mode ignores resources).
BUILT_IN_STAGES = {name: StageOrchestration(resources=Resources(gpu=1)) for name in pipeline.of_kind("train")}


@dataclasses.dataclass(frozen=True)
class OrchestrationConfig:
    mode: str = "local"
    image: str = "seekforge:latest"              # built from docker/Dockerfile
    namespace: str = "seekforge"                 # Kubernetes namespace for pods and TFJobs
    service_account: str | None = None
    # Shared storage for ./artifacts and the MLflow store inside containers.
    artifacts_volume_claim: str = "seekforge-artifacts"
    mlflow_tracking_uri: str | None = None       # containers: e.g. http://mlflow:5000
    beam_args: list[str] = dataclasses.field(default_factory=list)   # kubernetes: Dataflow/Flink/Spark options
    default: StageOrchestration = DEFAULT
    stages: dict[str, StageOrchestration] = dataclasses.field(default_factory=dict)

    def validate(self, key):
        if self.mode not in MODES:
            raise ConfigError(f"{key}.mode: expected one of {', '.join(MODES)}, got {self.mode!r}")

    def for_stage(self, stage: str) -> StageOrchestration:
        """The stage's entry; unset fields come from the built-in entry for the stage, then
        `default`, then DEFAULT."""
        none = StageOrchestration()
        layers = [self.stages.get(stage, none), BUILT_IN_STAGES.get(stage, none), self.default, DEFAULT]

        def pick(getter):
            return next((v for v in map(getter, layers) if v is not None), None)

        fields = {f.name: pick(lambda s, n=f.name: getattr(s, n)) for f in dataclasses.fields(StageOrchestration)
                  if f.name != "resources"}
        resources = Resources(**{f.name: pick(lambda s, n=f.name: getattr(s.resources, n))
                                 for f in dataclasses.fields(Resources)})
        return StageOrchestration(**fields, resources=resources)



def is_orchestration_override(assignment: str) -> bool:
    return assignment.split("=", 1)[0].split(".", 1)[0] == "orchestration"


def load(config_path: str, overrides: list[str] = ()) -> OrchestrationConfig:
    """The `orchestration` section of a preset plus its `orchestration.*` overrides, read
    without validating (or importing) the stage sections."""
    from stages.config import apply_override
    with open(config_path) as f:
        raw = yaml.safe_load(f) or {}
    for assignment in overrides:
        if is_orchestration_override(assignment):
            apply_override(raw, assignment)
    return from_dict(OrchestrationConfig, raw.get("orchestration"), "orchestration")
