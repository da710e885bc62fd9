"""Rule-based rewards: right answers in the R1 format earn accuracy and format, wrong or
malformed completions earn 0 and never raise, code answers run in the sandbox (which
survives infinite loops, exits and crashes)."""

import random
import time

import pytest

from stages.posttrain import rewards, sandbox, tasks

SEVEN = {"id": "arithmetic-test", "task": "arithmetic", "prompt": "What is 3 + 4?", "answer": "7"}
ADD = {"id": "code-test", "task": "code",
       "prompt": "Write a Python function add(a, b) that returns the sum of a and b.",
       "answer": "def add(a, b):\n    return a + b\n", "tests": "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n",
       "entry_point": "add"}
HANG_GUARD_SECONDS = 10     # a call that hangs fails the test; not a performance bound


def reply(answer: str, thinking: str = "3 + 4 = 7") -> str:
    return f"<think>{thinking}</think><answer>{answer}</answer>"


@pytest.fixture
def short_code_timeout(monkeypatch):
    monkeypatch.setattr(rewards, "CODE_TIMEOUT", 1.0)


@pytest.mark.parametrize("completion", [
    reply("7"), reply(" 7 "), reply("7.0"), reply("+7"), reply("7."), reply("x = 7"),
    "  \n" + reply("7") + "\n", reply("7") + rewards.EOS, reply("7") + f" \n{rewards.EOS}\n",
    "<think>3 + 4 = 7</think>\n\n<answer>7</answer>",
])
def test_well_formed_correct_answer_earns_accuracy_and_format(completion):
    assert rewards.accuracy_reward(completion, SEVEN) == 1.0
    assert rewards.format_reward(completion, SEVEN) == 1.0


@pytest.mark.parametrize("answer", ["8", "-7", "7/1", "seven", "7 apples", "77", "0.7", "1e1"])
def test_wrong_answer_earns_no_accuracy(answer):
    assert rewards.accuracy_reward(reply(answer), SEVEN) == 0.0
    assert rewards.format_reward(reply(answer), SEVEN) == 1.0


def test_accuracy_does_not_need_the_think_part_but_format_does():
    assert rewards.accuracy_reward("<answer>7</answer>", SEVEN) == 1.0
    assert rewards.format_reward("<answer>7</answer>", SEVEN) == 0.0


def test_every_generated_worked_solution_earns_full_reward():
    problems, _ = tasks.generate_problems(seed=0, count=200, generators=["arithmetic", "word_problem", "algebra"])
    for problem in problems:
        total, values = rewards.combined_reward(tasks.worked_solution(problem), problem,
                                                {"accuracy": 1.0, "format": 1.0})
        assert values == {"accuracy": 1.0, "format": 1.0} and total == 2.0, problem


MALFORMED = [
    None, 7, b"<think>a</think><answer>7</answer>", ["<think>a</think><answer>7</answer>"],
    "", "7", "The answer is 7.", "<answer>7", "7</answer>", "<think>3 + 4 = 7</think>",
    "</answer>7<answer>",
    "<think><think>3 + 4</think></think><answer>7</answer>",
    "<think>3 + 4</think><answer><answer>7</answer></answer>",
    "<think>3 + 4 <answer>7</answer></think>",
    "<think>3 + 4</think><answer>7</answer><answer>7</answer>",
    "<think>3 + 4</think><answer><think>7</think></answer>",
    "<think>3 + 4</think><answer></answer>",
    "<answer>7</answer><think>3 + 4 = 7</think>", "<think>3 + 4 = 7<answer>7</answer>",
    "<think>" * 200_000 + "</think><answer>7</answer>",
    reply("7") + "x" * (rewards.MAX_COMPLETION_CHARS + 1),
    "\x00" * 1000, "\ud800" * 100,
]


@pytest.mark.parametrize("completion", MALFORMED, ids=lambda c: repr(c)[:40])
def test_malformed_completions_earn_nothing_and_never_raise(completion, short_code_timeout):
    for problem in (SEVEN, ADD):
        total, values = rewards.combined_reward(completion, problem, {"accuracy": 1.0, "format": 1.0})
        assert total == 0.0 and values == {"accuracy": 0.0, "format": 0.0}


@pytest.mark.parametrize("answer", ["\ud800\x00\uffff\u202e", "７", "٧", "7" * 5000, "7\n8", "9" * 100_000,
                                    "def add(a, b):\n    return '\ud800'\n"])
def test_garbage_inside_a_well_formed_reply_earns_no_accuracy(answer, short_code_timeout):
    for problem in (SEVEN, ADD):
        assert rewards.accuracy_reward(reply(answer), problem) == 0.0


@pytest.mark.parametrize("completion", [
    reply("7") + " and more", "preamble " + reply("7"), reply("7", thinking="  "),
    "<think>3 + 4</think> text <answer>7</answer>", "<answer>7</answer><think>3 + 4 = 7</think>",
])
def test_format_is_exact(completion):
    assert rewards.format_reward(completion, SEVEN) == 0.0


def test_length_reward_falls_after_the_budget():
    problem = {**SEVEN, "length_budget": 100}
    assert rewards.length_reward("x" * 100, problem) == 1.0
    assert rewards.length_reward("x" * 150, problem) == pytest.approx(0.5)
    assert rewards.length_reward("x" * 500, problem) == 0.0
    assert rewards.length_reward(None, problem) == 0.0


def test_combined_reward_weights_and_unknown_names():
    total, values = rewards.combined_reward(reply("7"), SEVEN, {"accuracy": 1.0, "format": 0.5})
    assert values == {"accuracy": 1.0, "format": 1.0} and total == 1.5
    with pytest.raises(ValueError, match="unknown reward function 'langauge'"):
        rewards.combined_reward(reply("7"), SEVEN, {"accuracy": 1.0, "langauge": 0.1})
    assert set(rewards.REWARD_FUNCTIONS) == {"accuracy", "format", "length"}


def test_a_malformed_problem_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="'answer'"):
        rewards.accuracy_reward(reply("7"), {"id": "p1", "task": "arithmetic"})


def timed(fn, *args):
    start = time.monotonic()
    value = fn(*args)
    elapsed = time.monotonic() - start
    assert elapsed < HANG_GUARD_SECONDS
    return value


@pytest.mark.parametrize("code, expected", [
    ("def add(a, b):\n    return a + b\n", 1.0),
    ("```python\ndef add(a, b):\n    return a + b\n```", 1.0),
    ("def add(a, b):\n    return a - b\n", 0.0),
    ("def plus(a, b):\n    return a + b\n", 0.0),                                    # wrong name
    ("def add(a, b):\n    while True:\n        pass\n", 0.0),                        # infinite loop
    ("import os\nos._exit(0)\n", 0.0),                                                # exits before the tests
    ("import sys\nsys.exit(0)\n", 0.0),
    ("def add(a, b):\n    return a + b\nimport os\nos._exit(0)\n", 0.0),
    ("raise RuntimeError('boom')\n", 0.0),
    ("def add(a, b):\n    return a + b\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", 0.0),
    ("def add(a, b:\n", 0.0),
])
def test_code_answers_run_their_tests_in_the_sandbox(code, expected, short_code_timeout):
    assert timed(rewards.accuracy_reward, reply(code, thinking="a + b"), ADD) == expected


def test_generated_code_problems_reward_their_reference_and_not_a_wrong_one(short_code_timeout):
    problems, _ = tasks.generate_problems(seed=1, count=4, generators=["code"])
    for problem in problems:
        assert rewards.accuracy_reward(tasks.worked_solution(problem), problem) == 1.0
        wrong = f"def {problem['entry_point']}(*args):\n    return None\n"
        assert rewards.accuracy_reward(reply(wrong), problem) == 0.0


def test_sandbox_reports_why_a_run_failed():
    tests = "assert add(2, 3) == 5\n"
    run = sandbox.run_tests
    assert timed(run, "def add(a, b):\n    return a + b\n", tests, 2.0).status == "passed"
    assert timed(run, "while True:\n    pass\n", tests, 1.0).status == "timed out"
    assert timed(run, "import os\nos._exit(0)\n", tests, 2.0).status.startswith("crashed")
    assert timed(run, "import sys\nsys.exit(0)\n", tests, 2.0).status == "failed: the program raised SystemExit: 0"
    assert timed(run, "def add(a, b):\n    return 0\n", "assert add(2, 3) == 5, 'nope'\n", 2.0).status == \
        "failed: AssertionError: nope"
    assert timed(run, "def add(a, b):\n    raise ValueError('no')\n", tests, 2.0).status == \
        "failed: add() raised ValueError: no"
    assert timed(run, "def plus(a, b):\n    return a + b\n", tests, 2.0).status == \
        "failed: add() raised NameError: name 'add' is not defined"
    assert not timed(run, "print('x' * 10_000_000)\nimport os\nos._exit(0)\n", tests, 2.0).passed
    assert timed(run, "b = bytearray(4 << 30)\n", tests, 5.0, 256).status.startswith(
        "failed: the program raised MemoryError")


def test_sandbox_survives_a_child_that_keeps_the_output_open():
    # a forked grandchild that loops would keep the pipe open: forks are refused, and the
    # whole PID namespace dies with the sandbox anyway
    program = "import os, time\nif os.fork() == 0:\n    while True:\n        time.sleep(1)\n"
    result = timed(sandbox.run_tests, program, "assert add(2, 3) == 5\n", 1.0)
    assert not result.passed


def test_reward_functions_never_raise_on_random_garbage(short_code_timeout):
    rng = random.Random(0)
    pieces = ["<think>", "</think>", "<answer>", "</answer>", rewards.EOS, "7", " ", "\n", "\ud800", "x"]
    for _ in range(300):
        completion = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        for name in rewards.REWARD_FUNCTIONS:
            assert rewards.REWARD_FUNCTIONS[name](completion, SEVEN) in (0.0, 1.0) or name == "length"
