"""Problem generators: reproducible by seed, answers right (recomputed here independently
of the generators), code tasks' tests sound, held-out split disjoint; docstring
conversations come from real standard-library functions."""

import ast
import importlib
import inspect
import operator
import os
import re

import pytest

from stages.posttrain import code_tasks, docstrings, tasks

STDLIB = os.path.dirname(os.__file__)
OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def test_reproducible_by_seed_and_different_across_seeds():
    first, _ = tasks.generate_problems(seed=3, count=60)
    again, _ = tasks.generate_problems(seed=3, count=60)
    other, _ = tasks.generate_problems(seed=4, count=60)
    assert first == again
    assert [p["prompt"] for p in first] != [p["prompt"] for p in other]


def test_prompts_are_distinct_and_ids_follow_prompts():
    problems, dropped = tasks.generate_problems(seed=0, count=400, low=0, high=20)
    assert len(problems) == 400
    assert len({p["prompt"] for p in problems}) == 400
    assert dropped["duplicate_prompt"] >= 0
    for p in problems:
        assert p["id"] == tasks.problem_id(p["task"], p["prompt"])
        assert p["task"] in ("arithmetic", "algebra", "code")


def test_small_range_runs_out_of_prompts_instead_of_looping():
    problems, dropped = tasks.generate_problems(seed=0, count=500, generators=["arithmetic"], low=0, high=2)
    assert len(problems) == len({p["prompt"] for p in problems}) < 500
    assert dropped["duplicate_prompt"] > 0


def expected_word_problem(prompt: str) -> int:
    a, b = (int(n) for n in re.findall(r"\d+", prompt))
    if " gets " in prompt or " on Monday and " in prompt:
        return a + b
    if " gives " in prompt:
        return a - b
    assert prompt.startswith("There are ")
    return a * b


def test_arithmetic_answers_are_correct_and_operands_in_range():
    problems, _ = tasks.generate_problems(seed=1, count=300, generators=["arithmetic", "word_problem"], low=3, high=12)
    plain = 0
    for p in problems:
        match = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\?", p["prompt"])
        if match:
            plain += 1
            a, op, b = int(match[1]), match[2], int(match[3])
            assert 3 <= a <= 12 and 3 <= b <= 12
            assert int(p["answer"]) == OPERATORS[op](a, b)
        else:
            assert int(p["answer"]) == expected_word_problem(p["prompt"])
        assert int(p["answer"]) >= 0
    assert 0 < plain < len(problems)


def solve_by_search(equation: str) -> list[int]:
    lhs, rhs = equation.split(" = ")
    lhs = re.sub(r"(\d)x", r"\1*x", lhs)
    return [x for x in range(-200, 400) if eval(lhs, {"x": x}) == int(rhs)]


def test_algebra_answers_solve_the_equation():
    problems, _ = tasks.generate_problems(seed=2, count=200, generators=["algebra"], low=0, high=20)
    for p in problems:
        equation = p["prompt"].removeprefix("Solve for x: ")
        assert solve_by_search(equation) == [int(p["answer"])], p["prompt"]


def test_code_tasks_reference_passes_its_tests_and_a_wrong_one_fails():
    problems, _ = tasks.generate_problems(seed=5, count=150, generators=["code"])
    assert len({p["entry_point"].rstrip("0123456789_") for p in problems}) >= 10   # most templates drawn
    for p in problems:
        namespace = {}
        exec(p["answer"] + "\n" + p["tests"], namespace)      # our own reference code
        assert callable(namespace[p["entry_point"]])
        wrong = f"def {p['entry_point']}(*args):\n    return 'wrong'\n"
        with pytest.raises(AssertionError):
            exec(wrong + "\n" + p["tests"], {})
        assert p["tests"].count("assert ") == code_tasks.TESTS_PER_PROBLEM


def test_worked_solution_is_the_r1_format():
    problem = tasks.make_problem("arithmetic", __import__("random").Random(0), 0, 20)
    solution = tasks.worked_solution(problem)
    assert solution == f"<think>{problem['reasoning']}</think><answer>{problem['answer']}</answer>"
    a, op, b = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\?", problem["prompt"]).groups()
    assert problem["reasoning"] == f"{a} {op} {b} = {problem['answer']}"


def test_markers_match_the_tokenizers_special_tokens():
    from beam_jobs.train_tokenizer import END_THINK, EOS, SPECIAL_TOKENS, THINK

    from stages.posttrain import rewards
    assert (tasks.THINK, tasks.END_THINK, rewards.EOS) == (THINK, END_THINK, EOS)
    assert tasks.ANSWER not in SPECIAL_TOKENS          # <answer> stays plain text


def test_held_out_split_is_deterministic_and_disjoint_by_prompt():
    problems, _ = tasks.generate_problems(seed=0, count=1000)
    train, held_out = tasks.split_problems(problems, 0.2)
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in held_out}
    assert len(train) + len(held_out) == len(problems)
    assert 0.12 < len(held_out) / len(problems) < 0.28
    # another seed: any prompt both runs made is on the same side in both
    other_train, other_held = tasks.split_problems(tasks.generate_problems(seed=9, count=1000)[0], 0.2)
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in other_held}
    assert not {p["prompt"] for p in held_out} & {p["prompt"] for p in other_train}
    assert tasks.split_problems(problems, 0.0) == (problems, [])


def test_split_drops_a_train_item_whose_prompt_is_held_out():
    ids = {tasks.problem_id("arithmetic", f"What is {i} + 1?"): f"What is {i} + 1?" for i in range(1000)}
    held_id = next(i for i in ids if tasks.is_held_out(i, 0.5))
    prompt = ids[held_id]
    held = {"id": held_id, "prompt": prompt}
    odd_id = next(f"other-{i}" for i in range(1000) if not tasks.is_held_out(f"other-{i}", 0.5))
    train, held_out = tasks.split_problems([held, {"id": odd_id, "prompt": prompt}], 0.5)
    assert train == [] and held_out == [held]


def test_docstring_conversations_come_from_real_stdlib_functions():
    dropped = {}
    functions = []
    for name in ("textwrap.py", "shlex.py", "bisect.py"):
        functions += docstrings.documented_functions(os.path.join(STDLIB, name), 40, dropped)
    assert len(functions) >= 8
    assert {"textwrap.wrap", "shlex.quote", "bisect.insort_right"} <= {f.qualified_name for f in functions}
    for function in functions:
        code = docstrings.code_conversation(function)
        source = code["messages"][1]["content"]
        tree = ast.parse(source)
        assert [n.name for n in tree.body if isinstance(n, ast.FunctionDef)] == [function.name]
        module, _, name = function.qualified_name.rpartition(".")
        real = getattr(importlib.import_module(module), name)
        assert docstrings.summary(function) in code["messages"][0]["content"]
        qa = docstrings.question_conversation(function)
        assert qa["messages"][0]["content"] == f"What does `{function.qualified_name}` do?"
        if inspect.isfunction(real) and real.__module__ == module:   # not replaced by a C version
            assert qa["messages"][1]["content"] == inspect.cleandoc(real.__doc__)
            assert source.count("\n") < 40


def test_docstring_functions_dropped_with_reasons(tmp_path):
    path = tmp_path / "sample.py"
    path.write_text('def kept(a):\n    """Return a."""\n    return a\n\n'
                    'def _private():\n    """Hidden."""\n\n'
                    'def bare():\n    return 1\n\n'
                    'def wordy():\n    """First line\n    goes on.\n    """\n\n'
                    '@staticmethod\ndef decorated():\n    """Decorated."""\n\n'
                    'def long():\n    """Long."""\n' + "    x = 1\n" * 50)
    (tmp_path / "broken.py").write_text("def broken(:\n")
    dropped = {}
    kept = docstrings.documented_functions(str(path), 40, dropped)
    kept += docstrings.documented_functions(str(tmp_path / "broken.py"), 40, dropped)
    assert [f.qualified_name for f in kept] == ["sample.kept"]
    assert dropped == {"private_function": 1, "no_docstring": 1, "summary_not_one_line": 1, "decorated": 1,
                       "too_long": 1, "unparsable_file_SyntaxError": 1}
