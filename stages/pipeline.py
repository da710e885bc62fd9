"""The pipeline spec: every stage declared once, in pipeline order.

Each entry says what the stage is (name, phase, kind), what it reads (its config
section, the other sections it reads, its upstream stages and what it takes from
outside the pipeline) and what it publishes (an artifact type, stages/artifact_types.py).
The implementation and the config class are referenced lazily as "module:attribute", so
the CLI, the Airflow DAGs and the tests read this one list, and reading it imports
neither TensorFlow nor Beam (the DAG processor parses DAG files in fresh processes).

The runtime derives a stage's cache key from this entry: the config sections it reads,
its inputs' content digests and the project modules its implementation imports
(stages/fingerprint.py)."""

import dataclasses
import importlib

PHASE_DAGS = {"data": "seekforge_data", "pretrain": "seekforge_pretrain", "posttrain": "seekforge_posttrain"}
KINDS = ("beam", "train", "evaluate", "generate")

# Config sections that belong to no stage: `pipeline` (where outputs go, how Beam runs),
# `model` (the architecture pretraining builds) and `orchestration` (read by the DAGs only).
SHARED_SECTIONS = {
    "pipeline": "stages.config:PipelineConfig",
    "model": "stages.model_section:ModelSection",
    "orchestration": "stages.orchestration:OrchestrationConfig",
}


@dataclasses.dataclass(frozen=True)
class StageSpec:
    name: str
    phase: str                         # data | pretrain | posttrain (one Airflow DAG each)
    kind: str                          # beam (a Beam job) | train (updates weights) | evaluate | generate
    config: str                        # "module:Class" of the stage's config section
    run: str                           # "module:function", fn(ctx: StageContext) -> results dict
    output: str                        # the artifact type it publishes (stages/artifact_types.py)
    inputs: tuple[str, ...] = ()       # upstream stages whose outputs it reads
    reads: tuple[str, ...] = ()        # other config sections it reads (part of its cache key)
    section: str = ""                  # its own config section; default: the stage name
    external_inputs: str = ""          # "module:function", section -> {name: (uri, digest)} of outside data

    def __post_init__(self):
        if not self.section:
            object.__setattr__(self, "section", self.name)
        if self.phase not in PHASE_DAGS:
            raise ValueError(f"stage {self.name}: phase {self.phase!r} is not one of {', '.join(PHASE_DAGS)}")
        if self.kind not in KINDS:
            raise ValueError(f"stage {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")

    @property
    def sections(self) -> tuple[str, ...]:
        """Every config section the stage reads: its own, then the others."""
        return (self.section, *self.reads)

    @property
    def module(self) -> str:
        return self.run.split(":")[0]

    def function(self):
        return resolve(self.run)

    def config_class(self) -> type:
        return resolve(self.config)

    def external(self, section) -> dict:
        return resolve(self.external_inputs)(section) if self.external_inputs else {}


def resolve(reference: str):
    """"package.module:attribute" -> the attribute (imports the module)."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


_TRAINED = ("tokenize", "tokenizer")       # what every training stage reads besides its parent
_POSTTRAIN = ("posttrain_data", "tokenizer")

STAGES: tuple[StageSpec, ...] = (
    # data (Beam jobs)
    StageSpec("ingest", "data", "beam", "stages.ingest:IngestConfig", "stages.ingest:run", "documents",
              external_inputs="stages.ingest:external_inputs"),
    StageSpec("dedup", "data", "beam", "stages.dedup:DedupConfig", "stages.dedup:run", "documents",
              inputs=("ingest",)),
    StageSpec("filter", "data", "beam", "stages.filter:FilterConfig", "stages.filter:run", "documents",
              inputs=("dedup",)),
    StageSpec("mix", "data", "beam", "stages.mix:MixConfig", "stages.mix:run", "documents", inputs=("filter",)),
    StageSpec("tokenizer", "data", "beam", "stages.tokenizer:TokenizerConfig", "stages.tokenizer:run", "tokenizer",
              inputs=("mix",)),
    StageSpec("tokenize", "data", "beam", "stages.tokenize:TokenizeConfig", "stages.tokenize:run", "shards",
              inputs=("mix", "tokenizer")),
    # pretraining and context extension
    StageSpec("pretrain", "pretrain", "train", "stages.pretrain:PretrainConfig", "stages.pretrain:run", "model",
              inputs=_TRAINED, reads=("model",)),
    StageSpec("extend_32k", "pretrain", "train", "stages.extend:ExtendConfig", "stages.extend:run_32k", "model",
              inputs=("pretrain", *_TRAINED)),
    StageSpec("extend_128k", "pretrain", "train", "stages.extend:ExtendConfig", "stages.extend:run_128k", "model",
              inputs=("extend_32k", *_TRAINED)),
    StageSpec("evaluate", "pretrain", "evaluate", "stages.evaluate:EvaluateConfig", "stages.evaluate:run", "report",
              inputs=("pretrain", "extend_32k", "extend_128k", "tokenizer"),
              external_inputs="stages.evaluate:external_inputs"),
    # post-training
    StageSpec("posttrain_data", "posttrain", "generate", "stages.posttrain_data:PosttrainDataConfig",
              "stages.posttrain_data:run", "posttrain_data", external_inputs="stages.posttrain_data:external_inputs"),
    StageSpec("sft", "posttrain", "train", "stages.sft:SFTConfig", "stages.sft:run", "model",
              inputs=("extend_128k", *_POSTTRAIN)),
    StageSpec("grpo", "posttrain", "train", "stages.grpo:GRPOConfig", "stages.grpo:run", "model",
              inputs=("sft", *_POSTTRAIN)),
    StageSpec("distill", "posttrain", "train", "stages.distill:DistillConfig", "stages.distill:run", "model",
              inputs=("grpo", *_POSTTRAIN)),
    StageSpec("posttrain_evaluate", "posttrain", "evaluate", "stages.posttrain_evaluate:PosttrainEvaluateConfig",
              "stages.posttrain_evaluate:run", "report", inputs=("extend_128k", "sft", "grpo", "distill", *_POSTTRAIN)),
)
BY_NAME = {s.name: s for s in STAGES}


def get(name: str) -> StageSpec:
    if name not in BY_NAME:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(BY_NAME)}")
    return BY_NAME[name]


def order(until: str | None = None) -> list[StageSpec]:
    """The stages in pipeline order, up to and including `until`."""
    if until is None:
        return list(STAGES)
    names = list(BY_NAME)
    if until not in BY_NAME:
        raise ValueError(f"--until {until!r} is not a stage; stages: {', '.join(names)}")
    return list(STAGES[:names.index(until) + 1])


def phase_stages(phase: str) -> list[str]:
    return [s.name for s in STAGES if s.phase == phase]


def of_kind(kind: str) -> list[str]:
    return [s.name for s in STAGES if s.kind == kind]


def models_read_by(name: str) -> list[str]:
    """The upstream stages of `name` that publish a model, in input order (what an
    evaluation stage compares)."""
    return [i for i in get(name).inputs if BY_NAME[i].output == "model"]


def section_references() -> dict[str, str]:
    """{section: "module:Class"} of every config section, not imported."""
    references = dict(SHARED_SECTIONS)
    for spec in BY_NAME.values():
        if references.setdefault(spec.section, spec.config) != spec.config:
            raise ValueError(f"config section {spec.section!r} is declared with two classes")
    return references


def _check() -> None:
    """Inputs name earlier stages; reads name known sections (run at import: a bad
    entry fails every entry point at once)."""
    seen = set()
    for spec in STAGES:
        missing = [i for i in spec.inputs if i not in seen]
        if missing:
            raise ValueError(f"stage {spec.name}: input {missing[0]!r} is not an earlier stage")
        unknown = [r for r in spec.reads if r not in SHARED_SECTIONS and r not in BY_NAME]
        if unknown:
            raise ValueError(f"stage {spec.name}: reads unknown config section {unknown[0]!r}")
        seen.add(spec.name)


_check()
