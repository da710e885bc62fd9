"""Small code-writing problems checked by tests: "Write a Python function add_7(x) that
returns x plus 7." Each template is parameterised (function name, a constant) so one
template gives many distinct prompts; the tests are asserts computed from a reference
implementation in this file, never from the reference source they check."""

import dataclasses
import random
import string
from typing import Callable


@dataclasses.dataclass(frozen=True)
class CodeTemplate:
    names: tuple[str, ...]                  # function names; "{k}"/"{c}" filled from the draw
    prompt: str                             # fields: name, k, c
    solution: str                           # canonical source; fields: name, k, c
    reasoning: str                          # the worked solution's <think> text; fields: k, c
    expected: Callable                      # (k, c, *arguments) -> the value the function must return
    arguments: Callable                     # (rng, k, c) -> one call's arguments (a tuple)


def _ints(rng: random.Random, low: int = -20, high: int = 20) -> int:
    return rng.randint(low, high)


def _int_list(rng: random.Random) -> list[int]:
    return [_ints(rng) for _ in range(rng.randint(1, 6))]


def _word(rng: random.Random, letters: str = "abcde") -> str:
    return "".join(rng.choice(letters) for _ in range(rng.randint(0, 8)))


TEMPLATES = (
    CodeTemplate(("add", "add_numbers", "plus"),
                 "Write a Python function {name}(a, b) that returns the sum of a and b.",
                 "def {name}(a, b):\n    return a + b\n", "The sum of a and b is a + b.",
                 lambda k, c, a, b: a + b, lambda rng, k, c: (_ints(rng), _ints(rng))),
    CodeTemplate(("add_{k}", "plus_{k}", "increase_by_{k}"),
                 "Write a Python function {name}(x) that returns x plus {k}.",
                 "def {name}(x):\n    return x + {k}\n", "Adding {k} to x gives x + {k}.",
                 lambda k, c, x: x + k, lambda rng, k, c: (_ints(rng),)),
    CodeTemplate(("times_{k}", "multiply_by_{k}"),
                 "Write a Python function {name}(x) that returns x multiplied by {k}.",
                 "def {name}(x):\n    return x * {k}\n", "x multiplied by {k} is x * {k}.",
                 lambda k, c, x: x * k, lambda rng, k, c: (_ints(rng),)),
    CodeTemplate(("square", "squared"),
                 "Write a Python function {name}(x) that returns x squared.",
                 "def {name}(x):\n    return x * x\n", "x squared is x * x.",
                 lambda k, c, x: x * x, lambda rng, k, c: (_ints(rng),)),
    CodeTemplate(("max_of", "largest", "biggest"),
                 "Write a Python function {name}(numbers) that returns the largest number in the non-empty "
                 "list numbers.",
                 "def {name}(numbers):\n    best = numbers[0]\n    for n in numbers[1:]:\n        if n > best:\n"
                 "            best = n\n    return best\n",
                 "Walk through the list and keep the largest number seen so far.",
                 lambda k, c, numbers: max(numbers), lambda rng, k, c: (_int_list(rng),)),
    CodeTemplate(("min_of", "smallest"),
                 "Write a Python function {name}(numbers) that returns the smallest number in the non-empty "
                 "list numbers.",
                 "def {name}(numbers):\n    best = numbers[0]\n    for n in numbers[1:]:\n        if n < best:\n"
                 "            best = n\n    return best\n",
                 "Walk through the list and keep the smallest number seen so far.",
                 lambda k, c, numbers: min(numbers), lambda rng, k, c: (_int_list(rng),)),
    CodeTemplate(("sum_list", "total"),
                 "Write a Python function {name}(numbers) that returns the sum of the numbers in the list numbers.",
                 "def {name}(numbers):\n    result = 0\n    for n in numbers:\n        result += n\n"
                 "    return result\n",
                 "Add every number of the list to a running total that starts at 0.",
                 lambda k, c, numbers: sum(numbers), lambda rng, k, c: (_int_list(rng),)),
    CodeTemplate(("reverse", "reverse_string", "backwards"),
                 "Write a Python function {name}(s) that returns the string s reversed.",
                 "def {name}(s):\n    return s[::-1]\n", "The slice s[::-1] walks the string from the end.",
                 lambda k, c, s: s[::-1], lambda rng, k, c: (_word(rng),)),
    CodeTemplate(("is_even", "even"),
                 "Write a Python function {name}(n) that returns True if the integer n is even and False "
                 "otherwise.",
                 "def {name}(n):\n    return n % 2 == 0\n", "n is even when n % 2 is 0.",
                 lambda k, c, n: n % 2 == 0, lambda rng, k, c: (_ints(rng),)),
    CodeTemplate(("divisible_by_{k}",),
                 "Write a Python function {name}(n) that returns True if the integer n is divisible by {k} and "
                 "False otherwise.",
                 "def {name}(n):\n    return n % {k} == 0\n", "n is divisible by {k} when n % {k} is 0.",
                 lambda k, c, n: n % k == 0, lambda rng, k, c: (rng.choice((rng.randint(-5, 5) * k, _ints(rng))),)),
    CodeTemplate(("count_{c}",),
                 "Write a Python function {name}(s) that returns how many times the letter '{c}' appears in the "
                 "string s.",
                 "def {name}(s):\n    return s.count('{c}')\n", "str.count('{c}') counts the occurrences of '{c}'.",
                 lambda k, c, s: s.count(c), lambda rng, k, c: (_word(rng, "abc" + c),)),
    CodeTemplate(("repeat_{k}",),
                 "Write a Python function {name}(s) that returns the string s repeated {k} times.",
                 "def {name}(s):\n    return s * {k}\n", "Multiplying a string by {k} repeats it {k} times.",
                 lambda k, c, s: s * k, lambda rng, k, c: (_word(rng),)),
)

TESTS_PER_PROBLEM = 4


def code_problem(rng: random.Random) -> dict:
    """One problem without an id: prompt, canonical answer (source), tests, entry point."""
    template = rng.choice(TEMPLATES)
    k, c = rng.randint(2, 20), rng.choice(string.ascii_lowercase)
    name = rng.choice(template.names).format(k=k, c=c)
    calls = [template.arguments(rng, k, c) for _ in range(TESTS_PER_PROBLEM)]
    tests = "".join(f"assert {name}({', '.join(map(repr, args))}) == {template.expected(k, c, *args)!r}\n"
                    for args in calls)
    return {"task": "code", "prompt": template.prompt.format(name=name, k=k, c=c),
            "answer": template.solution.format(name=name, k=k, c=c), "tests": tests, "entry_point": name,
            "reasoning": template.reasoning.format(k=k, c=c)}
