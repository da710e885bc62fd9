"""Verifiable problems for SFT and GRPO, generated from a seed (nothing downloaded):
arithmetic ("What is 3 + 4?"), word problems, one-step and two-step linear equations,
and small code tasks checked by tests (code_tasks.py).

A problem is {"id", "task": "arithmetic"|"algebra"|"code", "prompt", "answer" (canonical),
"reasoning" (the worked solution's thinking), and for code "tests", "entry_point"}.
The id is a hash of the prompt, so the same prompt always has the same id and lands on
the same side of the held-out split, whatever seed or run produced it.
"""

import hashlib
import random

from stages.posttrain.code_tasks import code_problem

# Special tokens of our tokenizer (beam_jobs/train_tokenizer.py); <answer> is plain text.
THINK, END_THINK = "<think>", "</think>"
ANSWER, END_ANSWER = "<answer>", "</answer>"

GENERATORS = ("arithmetic", "word_problem", "algebra", "code")

NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jun")
ITEMS = ("apples", "pencils", "marbles", "stickers", "books", "coins", "shells", "cards")


def arithmetic_problem(rng: random.Random, low: int, high: int) -> dict:
    """"What is a + b?" (also - and *); subtraction puts the larger operand first so every
    answer is a non-negative integer, which a 10M model can learn."""
    a, b, op = rng.randint(low, high), rng.randint(low, high), rng.choice("+-*")
    if op == "-" and a < b:
        a, b = b, a
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    return {"task": "arithmetic", "prompt": f"What is {a} {op} {b}?", "answer": str(result),
            "reasoning": f"{a} {op} {b} = {result}"}


def word_problem(rng: random.Random, low: int, high: int) -> dict:
    """A sentence around one operation; operands start at 2 so nouns stay plural."""
    low = max(low, 2)
    a, b = rng.randint(low, high), rng.randint(low, high)
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.choice(("gets", "gives", "groups", "two_days"))
    if kind == "gets":
        prompt, op = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", "+"
    elif kind == "gives":
        a, b = max(a, b), min(a, b)
        prompt, op = f"{name} has {a} {item} and gives {b} away. How many {item} does {name} have left?", "-"
    elif kind == "groups":
        prompt, op = f"There are {a} boxes with {b} {item} in each box. How many {item} are there in total?", "*"
    else:
        prompt, op = (f"{name} found {a} {item} on Monday and {b} {item} on Tuesday. How many {item} did {name} "
                      "find in total?"), "+"
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    return {"task": "arithmetic", "prompt": prompt, "answer": str(result), "reasoning": f"{a} {op} {b} = {result}"}


def algebra_problem(rng: random.Random, low: int, high: int) -> dict:
    """Solve for x in x + b = c, x - b = c, ax = c or ax + b = c; x is drawn first, so the
    solution is an integer in [low, high]."""
    x, b = rng.randint(low, high), rng.randint(low, high)
    a = rng.randint(2, max(2, min(9, high)))
    form = rng.choice(("plus", "minus", "times", "times_plus"))
    if form == "minus" and x < b:
        x, b = b, x
    if form == "plus":
        equation, steps = f"x + {b} = {x + b}", f"x = {x + b} - {b} = {x}"
    elif form == "minus":
        equation, steps = f"x - {b} = {x - b}", f"x = {x - b} + {b} = {x}"
    elif form == "times":
        equation, steps = f"{a}x = {a * x}", f"x = {a * x} / {a} = {x}"
    else:
        equation = f"{a}x + {b} = {a * x + b}"
        steps = f"{a}x = {a * x + b} - {b} = {a * x}, so x = {a * x} / {a} = {x}"
    return {"task": "algebra", "prompt": f"Solve for x: {equation}", "answer": str(x),
            "reasoning": f"{equation}, so {steps}"}


def make_problem(generator: str, rng: random.Random, low: int, high: int) -> dict:
    if generator == "arithmetic":
        problem = arithmetic_problem(rng, low, high)
    elif generator == "word_problem":
        problem = word_problem(rng, low, high)
    elif generator == "algebra":
        problem = algebra_problem(rng, low, high)
    elif generator == "code":
        problem = code_problem(rng)
    else:
        raise ValueError(f"unknown problem generator {generator!r} (known: {', '.join(GENERATORS)})")
    return {"id": problem_id(problem["task"], problem["prompt"]), **problem}


def problem_id(task: str, prompt: str) -> str:
    return f"{task}-{hashlib.blake2b(prompt.encode(), digest_size=8).hexdigest()}"


def generate_problems(seed: int, count: int, generators=GENERATORS, low: int = 0, high: int = 20,
                      max_attempts_per_problem: int = 20) -> tuple[list[dict], dict[str, int]]:
    """`count` problems with distinct prompts, each from a generator drawn uniformly.
    Returns (problems, dropped) where dropped counts repeated prompts; fewer than `count`
    come back only when the generators run out of distinct prompts (small ranges)."""
    rng = random.Random(seed)
    problems, seen, dropped = [], set(), {"duplicate_prompt": 0}
    for _ in range(count * max_attempts_per_problem):
        if len(problems) == count:
            break
        problem = make_problem(rng.choice(list(generators)), rng, low, high)
        if problem["prompt"] in seen:
            dropped["duplicate_prompt"] += 1
            continue
        seen.add(problem["prompt"])
        problems.append(problem)
    return problems, dropped


def worked_solution(problem: dict) -> str:
    """The DeepSeek-R1 reply format: <think>reasoning</think><answer>answer</answer>."""
    return f"{THINK}{problem['reasoning']}{END_THINK}{ANSWER}{problem['answer']}{END_ANSWER}"


def is_held_out(key: str, fraction: float) -> bool:
    """A deterministic split by a hash of `key`: the same key is always on the same side."""
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return h / 2 ** 64 < fraction


def split_problems(problems: list[dict], fraction: float) -> tuple[list[dict], list[dict]]:
    """(train, held_out) by id; a train problem whose prompt is also held out is dropped,
    so the two sides never share a prompt even if ids were made differently."""
    held_out = [p for p in problems if is_held_out(p["id"], fraction)]
    held_prompts = {p["prompt"] for p in held_out}
    train = [p for p in problems if not is_held_out(p["id"], fraction) and p["prompt"] not in held_prompts]
    return train, held_out
