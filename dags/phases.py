"""The three phases as Airflow sees them: one DAG per phase of the pipeline spec
(stages/pipeline.py), holding that phase's stages in pipeline order, and the asset each
publishes when done, which schedules the next phase."""

import dataclasses

from stages import pipeline


@dataclasses.dataclass(frozen=True)
class Phase:
    dag_id: str
    phase: str                       # the spec's phase name: data | pretrain | posttrain
    after: str | None                # dag_id of the phase whose asset schedules this one

    @property
    def stages(self) -> list[str]:
        return pipeline.phase_stages(self.phase)

    @property
    def asset_name(self) -> str:
        return f"{self.dag_id}_done"

    @property
    def asset_uri(self) -> str:
        return f"seekforge://phases/{self.phase}"


def _phases() -> list[Phase]:
    out, previous = [], None
    for phase, dag_id in pipeline.PHASE_DAGS.items():
        out.append(Phase(dag_id, phase, previous))
        previous = dag_id
    return out


PHASES = _phases()
BY_DAG_ID = {p.dag_id: p for p in PHASES}

# Stages whose work is a Beam pipeline: on Kubernetes they submit to the configured runner.
BEAM_STAGES = frozenset(pipeline.of_kind("beam"))


def phase_stages(dag_id: str) -> list[str]:
    """The phase's stages, in pipeline order."""
    return BY_DAG_ID[dag_id].stages
