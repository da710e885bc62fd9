"""Stage `posttrain_data`: the data of post-training, made on this machine from a seed
and the standard library (nothing downloaded).

- sft_train.jsonl / sft_held_out.jsonl: conversations {"id", "source", "messages"}: worked
  solutions of generated problems (some merged into two-turn conversations) and
  docstring conversations from stdlib functions (stages/posttrain/docstrings.py);
- prompts_train.jsonl / prompts_held_out.jsonl: problems for GRPO and evaluation
  {"id", "task", "prompt", "answer", "reasoning"[, "tests", "entry_point"]}.

SFT problems and GRPO prompts are distinct prompts. The held-out split hashes the problem
id (a hash of the prompt) or the function's qualified name, so an item is on the same side
in every run and the two docstring conversations of a function stay together.
"""

import collections
import dataclasses
import glob
import json
import os
import random
import sysconfig

from stages.config import ConfigError
from stages.posttrain import docstrings, tasks
from stages.posttrain.tasks import GENERATORS

OUTPUT_FILES = {"sft_train": "sft_train.jsonl", "sft_held_out": "sft_held_out.jsonl",
                "prompts_train": "prompts_train.jsonl", "prompts_held_out": "prompts_held_out.jsonl"}
# the same glob placeholders as the ingest stage
PLACEHOLDERS = {"stdlib": sysconfig.get_paths()["stdlib"], "site_packages": sysconfig.get_paths()["purelib"]}


@dataclasses.dataclass(frozen=True)
class PosttrainDataConfig:
    seed: int = 0
    sft_problems: int = 2000             # generated problems with worked solutions, before the split
    grpo_prompts: int = 2000             # generated problems for GRPO, before the split
    held_out_fraction: float = 0.1
    operand_min: int = 0                 # arithmetic operands and algebra solutions lie in [min, max]
    operand_max: int = 20
    tasks: list[str] = dataclasses.field(default_factory=lambda: list(GENERATORS))
    multiturn_fraction: float = 0.1      # share of SFT problems merged pairwise into two-turn conversations
    # evaluate.held_out (unittest, logging, xml) is left out on purpose
    docstring_sources: list[str] = dataclasses.field(default_factory=lambda: [
        "{stdlib}/textwrap.py", "{stdlib}/json/*.py", "{stdlib}/shlex.py", "{stdlib}/bisect.py",
        "{stdlib}/heapq.py", "{stdlib}/fnmatch.py", "{stdlib}/base64.py", "{stdlib}/posixpath.py"])
    max_function_lines: int = 40
    max_docstring_functions: int = 0     # 0: every kept function

    def validate(self, key):
        for name in ("sft_problems", "grpo_prompts", "max_docstring_functions"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{key}.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.held_out_fraction < 1.0:
            raise ConfigError(f"{key}.held_out_fraction: must be in [0, 1), got {self.held_out_fraction}")
        if not 0.0 <= self.multiturn_fraction <= 1.0:
            raise ConfigError(f"{key}.multiturn_fraction: must be in [0, 1], got {self.multiturn_fraction}")
        if self.operand_min < 0:
            raise ConfigError(f"{key}.operand_min: must be >= 0, got {self.operand_min}")
        if self.operand_max < max(self.operand_min, 2):
            raise ConfigError(f"{key}.operand_max: must be >= operand_min and >= 2, got {self.operand_max}")
        if not self.tasks:
            raise ConfigError(f"{key}.tasks: at least one of {', '.join(GENERATORS)}")
        for i, name in enumerate(self.tasks):
            if name not in GENERATORS:
                raise ConfigError(f"{key}.tasks[{i}]: unknown task {name!r} (known: {', '.join(GENERATORS)})")
        if self.max_function_lines < 1:
            raise ConfigError(f"{key}.max_function_lines: must be >= 1, got {self.max_function_lines}")


def docstring_files(cfg: PosttrainDataConfig) -> list[str]:
    files = set()
    for i, pattern in enumerate(cfg.docstring_sources):
        try:
            resolved = os.path.expanduser(pattern.format(**PLACEHOLDERS))
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(f"posttrain_data.docstring_sources[{i}]: bad placeholder {e} in {pattern!r} "
                              f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})") from None
        matched = [p for p in glob.glob(resolved, recursive=True) if os.path.isfile(p)]
        if not matched:
            raise FileNotFoundError(f"posttrain_data.docstring_sources[{i}]: {pattern!r} ({resolved}) "
                                    "matches no files")
        files.update(os.path.abspath(p) for p in matched)
    return sorted(files)


def external_inputs(cfg: PosttrainDataConfig) -> dict:
    from stages.ingest import _digest

    files = docstring_files(cfg)
    if not files:
        return {}
    return {"docstring_sources": (os.path.commonpath(files) if len(files) > 1 else files[0], _digest(files))}


def problem_conversations(problems: list[dict], multiturn_fraction: float) -> list[dict]:
    """Worked solutions as conversations; the first pairs become two-turn conversations."""
    pairs = int(len(problems) * multiturn_fraction) // 2
    conversations = []
    for first, second in zip(problems[:2 * pairs:2], problems[1:2 * pairs:2]):
        conversations.append({"id": f"multiturn:{first['id']}+{second['id']}", "source": "multiturn",
                              "messages": [*_turn(first), *_turn(second)]})
    for problem in problems[2 * pairs:]:
        conversations.append({"id": problem["id"], "source": problem["task"], "messages": _turn(problem)})
    return conversations


def _turn(problem: dict) -> list[dict]:
    return [{"role": "user", "content": problem["prompt"]},
            {"role": "assistant", "content": tasks.worked_solution(problem)}]


def docstring_functions(cfg: PosttrainDataConfig, dropped: collections.Counter) -> list:
    functions, seen = [], set()
    for path in docstring_files(cfg):
        found = {}
        for function in docstrings.documented_functions(path, cfg.max_function_lines, found):
            if function.qualified_name in seen:
                dropped["duplicate_function_name"] += 1
                continue
            seen.add(function.qualified_name)
            functions.append(function)
        dropped.update(found)
    if cfg.max_docstring_functions and len(functions) > cfg.max_docstring_functions:
        random.Random(f"{cfg.seed}:docstrings").shuffle(functions)
        dropped["over_max_docstring_functions"] += len(functions) - cfg.max_docstring_functions
        functions = sorted(functions[:cfg.max_docstring_functions], key=lambda f: f.qualified_name)
    return functions


def write_jsonl(path: str, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def run(ctx):
    cfg = ctx.config
    # every reason reported, 0 included, so runs compare metric by metric
    dropped = collections.Counter(dict.fromkeys(
        ("duplicate_prompt", "prompt_also_held_out", *docstrings.DROP_REASONS, "duplicate_function_name",
         "over_max_docstring_functions"), 0))
    requested = cfg.sft_problems + cfg.grpo_prompts
    problems, repeats = tasks.generate_problems(cfg.seed, requested, cfg.tasks, cfg.operand_min, cfg.operand_max)
    dropped.update(repeats)
    # generators with few distinct prompts (code) run dry early: shuffle so SFT and GRPO share them
    random.Random(f"{cfg.seed}:assign").shuffle(problems)
    sft_pool, grpo_pool = problems[:cfg.sft_problems], problems[cfg.sft_problems:]

    sft_train, sft_held_out = tasks.split_problems(sft_pool, cfg.held_out_fraction)
    prompts_train, prompts_held_out = tasks.split_problems(grpo_pool, cfg.held_out_fraction)
    dropped["prompt_also_held_out"] += (len(sft_pool) - len(sft_train) - len(sft_held_out)
                                        + len(grpo_pool) - len(prompts_train) - len(prompts_held_out))
    conversations = {"sft_train": problem_conversations(sft_train, cfg.multiturn_fraction),
                     "sft_held_out": problem_conversations(sft_held_out, cfg.multiturn_fraction)}
    for function in docstring_functions(cfg, dropped):
        side = "sft_held_out" if tasks.is_held_out(function.qualified_name, cfg.held_out_fraction) else "sft_train"
        conversations[side] += [docstrings.code_conversation(function), docstrings.question_conversation(function)]
    for side, records in conversations.items():
        random.Random(f"{cfg.seed}:{side}").shuffle(records)    # sources interleaved, reproducibly

    outputs = {**conversations, "prompts_train": prompts_train, "prompts_held_out": prompts_held_out}
    for name, records in outputs.items():
        write_jsonl(os.path.join(ctx.output_dir, OUTPUT_FILES[name]), records)
    counts = {name: {"total": len(records), **_by(records, "source" if name.startswith("sft") else "task")}
              for name, records in outputs.items()}
    ctx.log(", ".join(f"{name}: {c['total']}" for name, c in counts.items()))
    return {**OUTPUT_FILES, "counts": counts, "dropped": dict(sorted(dropped.items())),
            "problems_requested": requested, "problems_generated": len(problems),
            "docstring_files": len(docstring_files(cfg))}


def _by(records: list[dict], field: str) -> dict:
    return {f"by_{field}": dict(sorted(collections.Counter(r[field] for r in records).items()))}
