"""SFT conversations from real code on this machine: the top-level functions of
standard-library modules, found with `ast`.

- docstring_code: "Write a Python function `name` that does this: <docstring summary>"
  -> the function's source;
- docstring_qa: "What does `module.name` do?" -> the docstring.

Only public functions with a docstring whose summary is one line and whose source is
short are kept; every other function is counted under its reason.
"""

import ast
import dataclasses
import os
import sysconfig

STDLIB = sysconfig.get_paths()["stdlib"]
# why a top-level function is not used (an unreadable file counts as unparsable_file_<error>)
DROP_REASONS = ("private_function", "no_docstring", "summary_not_one_line", "decorated", "too_long")


@dataclasses.dataclass(frozen=True)
class DocumentedFunction:
    qualified_name: str      # module.function, e.g. json.dumps (also the held-out split key)
    name: str
    docstring: str
    source: str


def module_name(path: str) -> str:
    """json/decoder.py -> json.decoder; files outside the stdlib go by their file name."""
    path = os.path.abspath(path)
    base = os.path.abspath(STDLIB)
    relative = os.path.relpath(path, base) if os.path.commonpath([path, base]) == base else os.path.basename(path)
    parts = os.path.splitext(relative)[0].split(os.sep)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def documented_functions(path: str, max_lines: int, dropped: dict[str, int]) -> list[DocumentedFunction]:
    """The kept top-level functions of one file; `dropped` counts the rest by reason."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        tree = ast.parse(text, filename=path)
    except (SyntaxError, UnicodeDecodeError, ValueError) as e:
        _count(dropped, f"unparsable_file_{type(e).__name__}")
        return []
    kept, module = [], module_name(path)
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        reason = _drop_reason(node, max_lines)
        if reason:
            _count(dropped, reason)
            continue
        kept.append(DocumentedFunction(f"{module}.{node.name}", node.name, ast.get_docstring(node, clean=True),
                                       ast.get_source_segment(text, node)))
    return kept


def _count(dropped: dict[str, int], reason: str) -> None:
    dropped[reason] = dropped.get(reason, 0) + 1


def _drop_reason(node: ast.FunctionDef, max_lines: int) -> str | None:
    if node.name.startswith("_"):
        return "private_function"
    docstring = ast.get_docstring(node, clean=True)
    if not docstring or not docstring.strip():
        return "no_docstring"
    if "\n" in docstring.strip().split("\n\n")[0]:
        return "summary_not_one_line"
    if node.decorator_list:
        return "decorated"            # the decorator's meaning lives outside the function
    if node.end_lineno - node.lineno + 1 > max_lines:
        return "too_long"
    return None


def summary(function: DocumentedFunction) -> str:
    return function.docstring.strip().split("\n")[0].strip()


def code_conversation(function: DocumentedFunction) -> dict:
    prompt = f"Write a Python function `{function.name}` that does this: {summary(function)}"
    return {"id": f"docstring_code:{function.qualified_name}", "source": "docstring_code",
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": function.source}]}


def question_conversation(function: DocumentedFunction) -> dict:
    prompt = f"What does `{function.qualified_name}` do?"
    return {"id": f"docstring_qa:{function.qualified_name}", "source": "docstring_qa",
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": function.docstring}]}
