"""The stage registry. A stage is one function registered with its name, its config
section (a dataclass) and the upstream stages whose outputs it reads. A later stage joins
by adding a module that registers one function, listed in STAGE_MODULES."""

import dataclasses
import importlib
import sys
from typing import Callable

from stages.config import register_section

# Modules that register stages, in pipeline order. Add one line per new stage module.
STAGE_MODULES = [
    "stages.ingest",
    "stages.dedup",
    "stages.filter",
    "stages.mix",
    "stages.tokenizer",
    "stages.tokenize",
    "stages.pretrain",
    "stages.extend",
    "stages.evaluate",
    "stages.posttrain_data",
    "stages.sft",
    "stages.grpo",
    "stages.distill",
    "stages.posttrain_evaluate",
]


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    section: str
    config_class: type
    inputs: tuple[str, ...]          # upstream stage names
    fn: Callable                     # fn(ctx: StageContext) -> dict of results (counts, ...)
    code_files: tuple[str, ...]      # source files whose content is part of the cache key
    external_inputs: Callable | None = None  # section -> {name: (uri, digest)} for data from outside


STAGES: dict[str, Stage] = {}


def stage(name: str, config_class: type, inputs: tuple[str, ...] = (), section: str | None = None,
          code_files: tuple[str, ...] = (), external_inputs: Callable | None = None):
    """Decorator registering a stage function."""
    def decorate(fn):
        if name in STAGES:
            raise ValueError(f"stage {name!r} is registered twice")
        register_section(section or name, config_class)
        module_file = sys.modules[fn.__module__].__file__
        STAGES[name] = Stage(name, section or name, config_class, tuple(inputs), fn,
                             (module_file, *code_files), external_inputs)
        return fn
    return decorate


# Config sections that belong to no stage (the DAGs read `orchestration`).
SECTION_MODULES = ["stages.orchestration"]


def load_stages() -> dict[str, Stage]:
    """Every stage, in STAGE_MODULES order (whatever order the modules were imported in)."""
    for module in SECTION_MODULES + STAGE_MODULES:
        importlib.import_module(module)
    rank = {module: i for i, module in enumerate(STAGE_MODULES)}
    ordered = sorted(STAGES.values(), key=lambda s: rank.get(s.fn.__module__, len(rank)))
    return {s.name: s for s in ordered}


def get(name: str) -> Stage:
    stages = load_stages()
    if name not in stages:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(stages)}")
    return stages[name]


def order(until: str | None = None) -> list[Stage]:
    stages = list(load_stages().values())
    if until is None:
        return stages
    names = [s.name for s in stages]
    if until not in names:
        raise ValueError(f"--until {until!r} is not a stage; stages: {', '.join(names)}")
    return stages[:names.index(until) + 1]
