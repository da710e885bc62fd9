"""GRPO's code check: does a model's answer pass its problem's tests?

The answer runs in a sandbox (stages/sandbox: namespaces, unprivileged uid, no network,
limits; killed whole at the timeout). The tests (plain asserts over the functions the
answer must define, stages/posttrain/code_tasks.py) run HERE, with stand-ins for those
functions: each call runs the answer's function in the sandbox and only its result comes
back, as plain data. So the answer cannot see the expected values, cannot report a pass
(exit codes, tokens, patched asserts and always-equal objects are all worthless), and
earns one only by computing the right results.

Fails closed: tests that use something the stand-ins cannot give (a constant, a class
whose instances the tests use, a function returning a generator) fail, never pass.
"""

import ast
import builtins

from stages.sandbox import SandboxResult, judge

DEFAULT_TIMEOUT = 3.0
DEFAULT_MEMORY_MB = 512

__all__ = ["SandboxResult", "run_tests", "candidate_names"]


def run_tests(code: str, tests: str, timeout: float = DEFAULT_TIMEOUT, memory_mb: int = DEFAULT_MEMORY_MB,
              entry_point: str | None = None) -> SandboxResult:
    """The candidate `code` against `tests` (plain asserts; our own data, so invalid
    Python there raises ValueError). `entry_point`, when given, is stood in for even
    where it shadows a builtin."""
    try:
        compiled = compile(tests, "<tests>", "exec")
    except SyntaxError as error:
        raise ValueError(f"the tests are not valid Python: {error}") from None
    names = candidate_names(tests) | ({entry_point} if entry_point else set())

    def check(sandbox):
        exec(compiled, {name: sandbox.function(name) for name in sorted(names)})

    return judge(code, check, timeout, memory_mb)


def candidate_names(tests: str) -> set[str]:
    """The names the tests read but neither bind nor get from builtins: the candidate's.
    (Builtins stay the real ones, so an answer cannot redefine what the tests rely on.)"""
    read, bound = set(), set()
    for node in ast.walk(ast.parse(tests)):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
    return read - bound - set(dir(builtins))
