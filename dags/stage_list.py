"""The registered stages, in registry order, read from the source of the modules in
stages.registry.STAGE_MODULES without importing them: importing the stages pulls in
Beam and TensorFlow (10-30 s on 2 cores), too slow for the DAG processor, which parses
every DAG file in a fresh process. tests/dags checks this equals registry.load_stages()."""

import ast
import importlib.util
import os

from stages import registry


def _stage_names(path: str) -> list[str]:
    """Names in `@stage("name", ...)` decorators, in file order."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and getattr(deco.func, "id", getattr(deco.func, "attr", None)) == "stage"
                        and deco.args and isinstance(deco.args[0], ast.Constant)):
                    names.append((node.lineno, deco.args[0].value))
    return [name for _, name in sorted(names)]


def registered_stages() -> list[str]:
    names = []
    for module in registry.STAGE_MODULES:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin or not os.path.exists(spec.origin):
            raise ImportError(f"stage module {module} (stages.registry.STAGE_MODULES) not found")
        names.extend(_stage_names(spec.origin))
    return names
