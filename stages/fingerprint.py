"""The code part of a stage's cache key, derived rather than listed: the project modules
a stage's implementation imports, followed transitively through every `import` statement
in them (module level and inside functions), read from source without importing.

A module's digest is that of its syntax tree with docstrings removed, so an edit that
changes what the code does changes the key, and a comment, a docstring or a blank line
does not."""

import ast
import functools
import hashlib
import importlib.util
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_PACKAGES = ("model", "stages", "beam_jobs")


def _module_file(name: str, project_only: bool = True) -> str | None:
    """The source file of a project module or package, None for anything else (or, with
    project_only=False, of any module with Python source: a stage defined outside the
    project, as tests do)."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        if project_only:
            return None
        spec = importlib.util.find_spec(name)
        return spec.origin if spec is not None and (spec.origin or "").endswith(".py") else None
    base = os.path.join(REPO_ROOT, *name.split("."))
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _imported_names(path: str, module: str) -> set[str]:
    """Every module name an import statement in `path` may refer to: for `from a import b`
    both `a` and `a.b` (b may be a submodule)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = importlib.util.resolve_name("." * node.level + base, package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    # importing a.b.c runs a/__init__ and a/b/__init__ too
    return {prefix for name in names for prefix in _prefixes(name)}


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def module_closure(module: str) -> tuple[str, ...]:
    """The project modules `module` imports, directly or not, itself included (sorted)."""
    root = _module_file(module, project_only=False)
    if root is None:
        raise ValueError(f"{module}: no Python source to fingerprint")
    seen, todo = {module}, sorted(_imported_names(root, module))
    while todo:
        name = todo.pop()
        if name in seen or _module_file(name) is None:
            continue
        seen.add(name)
        todo.extend(_imported_names(_module_file(name), name) - seen)
    return tuple(sorted(seen))


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(path: str) -> str:
    """sha256 of what the module does: its syntax tree without docstrings or comments."""
    stat = os.stat(path)
    return _source_digest(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4096)
def _source_digest(path: str, mtime_ns: int, size: int) -> str:
    # keyed by modification time and size: `seekforge pipeline` digests each module once
    with open(path, encoding="utf-8") as f:
        tree = _strip_docstrings(ast.parse(f.read(), path))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


def code_digest(*modules: str) -> tuple[str, dict[str, str]]:
    """(digest, {module: its source digest}) over the closure of `modules`."""
    closure = sorted({m for module in modules for m in module_closure(module)})
    digests = {m: source_digest(_module_file(m, project_only=False)) for m in closure}
    h = hashlib.sha256()
    for name, digest in digests.items():
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest(), digests
