"""Configuration as data: a YAML preset plus `--set section.key=value` overrides,
validated into typed dataclasses. The section classes come from the pipeline spec
(stages/pipeline.py); unknown keys and values of the wrong type are errors naming the key
(e.g. "dedup.threshold: expected a number, got 'high'")."""

import dataclasses
import os
import types
import typing

import yaml


class ConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """The `pipeline` section: where outputs go and how Beam jobs run."""
    name: str = "seekforge"                     # MLflow experiment and artifact subdirectory
    artifacts: str = "./artifacts"              # local path or any URI the filesystem layer knows
    beam_args: list[str] = dataclasses.field(default_factory=lambda: [
        "--runner", "DirectRunner", "--direct_running_mode", "multi_processing", "--direct_num_workers", "0"])
    # inputs are checked against their manifests before use: sizes and sha256 ("sha256"),
    # or sizes only ("size": for terabytes of shards at scale)
    verify_inputs: str = "sha256"
    # an MLflow server that is down or hangs fails a stage after about
    # tracking_timeout_seconds x (tracking_retries + 1), not after minutes
    tracking_timeout_seconds: float = 10.0
    tracking_retries: int = 2

    def validate(self, key):
        if self.verify_inputs not in ("sha256", "size"):
            raise ConfigError(f"{key}.verify_inputs: expected sha256 or size, got {self.verify_inputs!r}")
        if self.tracking_timeout_seconds <= 0 or self.tracking_retries < 0:
            raise ConfigError(f"{key}: tracking_timeout_seconds must be > 0 and tracking_retries >= 0")



def _type_name(t) -> str:
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")


def _convert(value, t, key: str):
    """Check (and, for int -> float, widen) one value against a type annotation."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: expected {_type_name(t)}, got {value!r}")
    if dataclasses.is_dataclass(t):
        return from_dict(t, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_convert(k, args[0], key): _convert(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if t is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if t is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if t is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if t is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if t is typing.Any:
        return value
    raise ConfigError(f"{key}: unsupported type {t}")


def from_dict(cls, data, prefix: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}: unknown key (known keys of {prefix}: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}"
        if name in data:
            values[name] = _convert(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required")
    try:
        obj = cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix}: {e}") from None
    validate = getattr(obj, "validate", None)
    if validate:
        validate(prefix)
    return obj


def apply_override(raw: dict, assignment: str) -> None:
    """`a.b.c=value`; the value is parsed as YAML (numbers, booleans, lists)."""
    path, sep, text = assignment.partition("=")
    if not sep or not path:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. dedup.threshold=0.7")
    keys = path.split(".")
    node = raw
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {path}: {k} is not a section")
        node = child
    try:
        node[keys[-1]] = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"--set {path}: the value {text!r} is not valid YAML ({problem})") from None


@dataclasses.dataclass(frozen=True)
class Config:
    sections: dict
    source: str

    def __getitem__(self, name):
        if name not in self.sections:
            raise ConfigError(f"{name}: section missing from {self.source}")
        return self.sections[name]

    @property
    def pipeline(self) -> PipelineConfig:
        return self.sections["pipeline"]


def load(path: str, overrides: list[str] = (), sections: dict[str, str | type] | None = None) -> Config:
    """The preset at `path` with `overrides`, each section validated into its class
    (`sections`: {name: class or "module:Class"}, default: the pipeline spec's). Only the
    classes of the sections present are imported."""
    from stages import pipeline
    if sections is None:
        sections = pipeline.section_references()
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for assignment in overrides:
        apply_override(raw, assignment)
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown config section (known: {', '.join(sections)})")
    # Sections a preset leaves out stay absent (a data-only preset has no `pretrain`);
    # the runtime says so when a stage needs one.
    classes = {name: pipeline.resolve(cls) if isinstance(cls, str) else cls for name, cls in sections.items()
               if name in raw or name == "pipeline"}
    return Config({name: from_dict(cls, raw.get(name), name) for name, cls in classes.items()}, path)


def flatten(obj, prefix: str = "") -> dict[str, str]:
    """A section as flat MLflow params: {"dedup.threshold": "0.8", ...}."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}.{i}"))
    else:
        out[prefix] = str(obj)
    return out
