"""What one DAG run runs: preset, config overrides, execution mode, pipeline run id and
force. A manually triggered run takes them from its params (the form in the Airflow UI);
a run scheduled by the previous phase's asset takes them from that asset event's extra,
so one pipeline run id, preset and overrides span the three phases."""

import dataclasses
import json
import os

from airflow.sdk import Param

from stages import orchestration

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = ("tiny", "small", "v3-671b")
DEFAULT_PRESET = "tiny"
OVERRIDE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=.*$"
# A deployment's default overrides for the trigger form (a JSON list of `section.key=value`),
# e.g. where its artifacts live; read when the DAG files are parsed.
DEFAULT_OVERRIDES_ENV = "SEEKFORGE_DEFAULT_OVERRIDES"


def default_overrides() -> list[str]:
    text = os.environ.get(DEFAULT_OVERRIDES_ENV, "").strip()
    if not text:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{DEFAULT_OVERRIDES_ENV} is not JSON ({e}): expected a list of section.key=value") from None
    if not (isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value)):
        raise ValueError(f"{DEFAULT_OVERRIDES_ENV} must be a JSON list of section.key=value strings, got {text[:200]}")
    return value


def config_path(preset: str) -> str:
    path = os.path.join(REPO_ROOT, "configs", f"{preset}.yaml")
    if preset not in PRESETS or not os.path.exists(path):
        raise ValueError(f"preset {preset!r}: expected one of {', '.join(PRESETS)} (configs/<preset>.yaml)")
    return path


def dag_params(default_mode: str) -> dict:
    # "null" in a type where empty is a valid choice: Airflow's trigger form treats a param
    # without it as required and an empty value as missing, and will not submit
    return {
        "preset": Param(DEFAULT_PRESET, type="string", enum=list(PRESETS), title="Preset",
                        description="configs/<preset>.yaml"),
        "overrides": Param(default_overrides(), type=["null", "array"],
                           items={"type": "string", "pattern": OVERRIDE_PATTERN},
                           title="Config overrides",
                           description="one `section.key=value` per line, as `seekforge run --set` takes them"),
        "mode": Param(default_mode, type="string", enum=list(orchestration.MODES), title="Execution mode",
                      description="local: a subprocess on the worker; docker: the seekforge image; "
                                  "kubernetes: a pod per stage, a TFJob for multi-worker training"),
        "force": Param(False, type="boolean", title="Force",
                       description="rerun every stage even when its output is cached"),
        "pipeline_run": Param(None, type=["null", "string"], title="Pipeline run id",
                              description="tags every MLflow run; empty: this DAG run's id"),
    }


@dataclasses.dataclass(frozen=True)
class RunSettings:
    preset: str
    overrides: tuple[str, ...]
    mode: str
    pipeline_run: str
    force: bool

    @property
    def config_path(self) -> str:
        return config_path(self.preset)

    @property
    def stage_overrides(self) -> list[str]:
        """Overrides for `seekforge run`: the orchestration ones are the DAGs' own."""
        return [o for o in self.overrides if not orchestration.is_orchestration_override(o)]

    def orchestration(self) -> orchestration.OrchestrationConfig:
        return orchestration.load(self.config_path, list(self.overrides))

    def as_extra(self) -> dict:
        return {"preset": self.preset, "overrides": list(self.overrides), "mode": self.mode,
                "pipeline_run": self.pipeline_run}


def _triggering_extra(context) -> dict | None:
    events = context.get("triggering_asset_events") or {}
    for asset_events in events.values():
        for event in asset_events:
            if event.extra and "preset" in event.extra:
                return dict(event.extra)
    return None


def from_context(context) -> RunSettings:
    params = context["params"]
    extra = _triggering_extra(context)
    if extra is not None:   # scheduled by the previous phase: continue its pipeline run
        return RunSettings(extra["preset"], tuple(extra.get("overrides", ())), extra.get("mode", params["mode"]),
                           extra["pipeline_run"], bool(params["force"]))
    return RunSettings(params["preset"], tuple(params["overrides"] or ()), params["mode"],
                       params["pipeline_run"] or context["dag_run"].run_id, bool(params["force"]))
