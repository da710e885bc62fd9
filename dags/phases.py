"""The three phases as Airflow sees them: which stages each holds (DESIGN.md
"Orchestration"), the asset each publishes when done, and the asset that schedules it.
A phase runs the stages of its list that are registered, in registry order."""

import dataclasses

from dags.stage_list import registered_stages


@dataclasses.dataclass(frozen=True)
class Phase:
    dag_id: str
    stages: tuple[str, ...]          # as designed; only the registered ones become tasks, in this order
    after: str | None                # dag_id of the phase whose asset schedules this one
    requires: tuple[str, ...] = ()   # without one of these registered the phase has no DAG

    @property
    def asset_name(self) -> str:
        return f"{self.dag_id}_done"

    @property
    def asset_uri(self) -> str:
        return f"seekforge://phases/{self.dag_id.removeprefix('seekforge_')}"


PHASES = [
    Phase("seekforge_data", ("ingest", "dedup", "filter", "mix", "tokenizer", "tokenize"), after=None),
    Phase("seekforge_pretrain", ("pretrain", "extend_32k", "extend_128k", "evaluate"), after="seekforge_data",
          requires=("pretrain",)),
    Phase("seekforge_posttrain", ("posttrain_data", "sft", "grpo", "distill", "posttrain_evaluate", "export"),
          after="seekforge_pretrain", requires=("sft", "grpo", "distill", "export")),
]
BY_DAG_ID = {p.dag_id: p for p in PHASES}

# Stages whose work is a Beam pipeline: on Kubernetes they submit to the configured runner.
BEAM_STAGES = frozenset(PHASES[0].stages)


def phase_stages(dag_id: str, registered: list[str] | None = None) -> list[str]:
    """The phase's registered stages, in the phase's order; [] when the phase cannot run yet."""
    phase = BY_DAG_ID[dag_id]
    registered = registered_stages() if registered is None else registered
    if phase.requires and not set(phase.requires) & set(registered):
        return []
    return [name for name in phase.stages if name in registered]
