"""Rule-based rewards for GRPO (DeepSeek-R1: accuracy + format), as plain callables
`fn(completion: str, problem: dict) -> float`.

- format: 1.0 iff the completion is exactly <think>...</think><answer>...</answer>, both
  parts non-blank and free of the other tags, whitespace around allowed, and nothing
  after it except an optional end-of-sentence token.
- accuracy: 1.0 iff the one <answer>...</answer> block (after at most one closed
  <think>...</think>, no other tags anywhere) holds the canonical answer: numbers are
  compared exactly as fractions; code passes the problem's tests in the sandbox. It does
  not need a <think> part: format rewards that.
- length: 1.0 up to a character budget, falling linearly to 0.0 at twice the budget.

A completion can never make a reward raise: anything malformed earns 0.0. A malformed
PROBLEM (our own data) raises, naming the missing key.
"""

import fractions
import re

from stages.posttrain import sandbox
from stages.posttrain.tasks import ANSWER, END_ANSWER, END_THINK, THINK

EOS = "<｜end▁of▁sentence｜>"            # beam_jobs/train_tokenizer.py (importing it loads Beam)
TAGS = (THINK, END_THINK, ANSWER, END_ANSWER)
MAX_COMPLETION_CHARS = 100_000           # longer completions earn nothing (and are never executed)
MAX_NUMBER_CHARS = 64
DEFAULT_LENGTH_BUDGET = 1024             # characters; a problem may set "length_budget"
CODE_TIMEOUT = 3.0                       # seconds per sandboxed test run

# an optional "x =" (algebra), a decimal number, an optional final full stop
_NUMBER = re.compile(r"(?:[a-z]\s*=\s*)?([+-]?[0-9]+(?:\.[0-9]+)?)\.?", re.ASCII)


def _usable(completion) -> bool:
    return isinstance(completion, str) and len(completion) <= MAX_COMPLETION_CHARS


def parse_strict(completion) -> tuple[str, str] | None:
    """(thinking, answer) when the completion has exactly the R1 format, else None."""
    if not _usable(completion):
        return None
    text = completion.strip()
    if text.endswith(EOS):
        text = text[:-len(EOS)].rstrip()
    if not text.startswith(THINK) or not text.endswith(END_ANSWER):
        return None
    think_end = text.find(END_THINK)
    if think_end < 0:
        return None
    thinking = text[len(THINK):think_end]
    rest = text[think_end + len(END_THINK):].lstrip()
    if not rest.startswith(ANSWER):
        return None
    answer = rest[len(ANSWER):-len(END_ANSWER)]
    if not thinking.strip() or not answer.strip() or _has_tag(thinking) or _has_tag(answer):
        return None
    return thinking, answer


def extract_answer(completion) -> str | None:
    """The content of the one <answer> block when its place is unambiguous: exactly one
    <answer>...</answer>, and no <think> tags except one <think>...</think> before it.
    None otherwise."""
    if not _usable(completion):
        return None
    if completion.count(ANSWER) != 1 or completion.count(END_ANSWER) != 1:
        return None
    start, end = completion.find(ANSWER), completion.find(END_ANSWER)
    if end < start:
        return None
    thinks, end_thinks = completion.count(THINK), completion.count(END_THINK)
    if (thinks, end_thinks) not in ((0, 0), (1, 1)):
        return None
    if thinks and not completion.find(THINK) < completion.find(END_THINK) < start:
        return None
    return completion[start + len(ANSWER):end]


def _has_tag(text: str) -> bool:
    return any(tag in text for tag in TAGS)


def format_reward(completion, problem: dict) -> float:
    return 1.0 if parse_strict(completion) is not None else 0.0


def accuracy_reward(completion, problem: dict) -> float:
    task, canonical = _required(problem, "task"), _required(problem, "answer")
    answer = extract_answer(completion)
    if answer is None:
        return 0.0
    if task == "code":
        code = strip_code_fence(answer)
        if not code.strip():
            return 0.0
        result = sandbox.run_tests(code, _required(problem, "tests"), CODE_TIMEOUT,
                                   entry_point=problem.get("entry_point"))
        return 1.0 if result.passed else 0.0
    expected, given = parse_number(canonical), parse_number(answer)
    if expected is None:
        raise ValueError(f"problem {problem.get('id')!r}: canonical answer {canonical!r} is not a number")
    return 1.0 if given is not None and given == expected else 0.0


def length_reward(completion, problem: dict) -> float:
    if not isinstance(completion, str):
        return 0.0
    budget = max(1, problem.get("length_budget", DEFAULT_LENGTH_BUDGET))
    excess = max(0, len(completion) - budget)
    return max(0.0, 1.0 - excess / budget)


def parse_number(text: str) -> fractions.Fraction | None:
    text = text.strip()
    if len(text) > MAX_NUMBER_CHARS:
        return None
    match = _NUMBER.fullmatch(text)
    return fractions.Fraction(match.group(1)) if match else None


def strip_code_fence(answer: str) -> str:
    """```python\\n...\\n``` -> the code inside; anything else unchanged."""
    text = answer.strip()
    if text.startswith("```") and text.endswith("```") and len(text) >= 6:
        first_newline = text.find("\n")
        return text[first_newline + 1:-3] if first_newline >= 0 else ""
    return answer


def _required(problem: dict, key: str):
    if not isinstance(problem, dict) or key not in problem:
        raise ValueError(f"problem {problem.get('id') if isinstance(problem, dict) else problem!r}: "
                         f"missing {key!r}")
    return problem[key]


REWARD_FUNCTIONS = {"accuracy": accuracy_reward, "format": format_reward, "length": length_reward}


def combined_reward(completion, problem: dict, weights: dict[str, float]) -> tuple[float, dict[str, float]]:
    """(sum of weight * reward, {name: reward}) over the named reward functions."""
    unknown = sorted(set(weights) - set(REWARD_FUNCTIONS))
    if unknown:
        raise ValueError(f"unknown reward function {unknown[0]!r} (known: {', '.join(REWARD_FUNCTIONS)})")
    values = {name: REWARD_FUNCTIONS[name](completion, problem) for name in weights}
    return sum(weights[name] * value for name, value in values.items()), values
