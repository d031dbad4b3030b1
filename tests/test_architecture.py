"""The package's import graph, read from the source: layers, no import circle, no hidden deferred import.

The four packages are layered ``trainables < analysis < sweeps < groupsweep`` (docs/architecture.md; the
last is the Python API): a module may import its own package and the packages below it, never one above. No set of modules may import each
other in a circle, counting imports inside functions too. An import inside a function is allowed only
where a heavy import is deliberately deferred, and the function says so in a comment containing
"deferred" above that import or on its line.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"trainables": 0, "analysis": 1, "sweeps": 2, "groupsweep": 3}


def package_modules() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the layered packages."""
    modules = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_modules(node: ast.AST, modules: dict) -> list[str]:
    """The project modules an ``import`` / ``from ... import`` statement brings in."""
    names = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    found = []
    for name in names:
        # ``import a.b.c`` imports a, a.b and a.b.c; keep the deepest project module named
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.append(name)
    return found


def import_graph() -> tuple[dict[str, set], list[tuple[str, int, str]]]:
    """``(graph, deferred)``: module -> project modules it imports (anywhere in the file), and every
    import inside a function as ``(module, line, source line)``."""
    modules = package_modules()
    graph, deferred = {}, []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges = set()
        for node in ast.walk(tree):
            edges.update(name for name in imported_modules(node, modules) if name != module)
        graph[module] = edges
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        deferred.append((module, path, function.lineno, node.lineno))
    return graph, deferred


def layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def circles(graph: dict[str, set]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan's algorithm)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_packages_import_no_circle():
    graph, _ = import_graph()
    assert len(graph) > 40  # the scan found the package
    assert circles(graph) == []


def test_no_module_imports_a_higher_layer():
    graph, _ = import_graph()
    upward = sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                    if layer(target) > layer(module))
    assert upward == []


def test_every_import_inside_a_function_is_a_commented_deliberate_deferral():
    _, deferred = import_graph()
    unexplained = []
    for module, path, function_line, line in deferred:
        lines = path.read_text().splitlines()[function_line - 1: line]
        if not any("#" in text and "deferred" in text.split("#", 1)[1] for text in lines):
            unexplained.append(f"{module}:{line}")
    assert unexplained == []


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_sweep_driver_imports_no_training_library():
    """The driver of ``groupsweep run`` (the command line, a spec built with every model and dataset name
    checked, the launcher with its trainable and the local node's resources) imports neither torch nor a
    model library: the trials do (``trainables.entry``)."""
    code = ("import sys; from sweeps.cli import build_parser; from sweeps.spec import load_spec; "
            "import sweeps.launcher as launcher; spec = load_spec('demo-table1'); "
            "assert len(spec.trials) > 10 and launcher.local_node_shape()['CPU'] >= 1; "
            "print(sorted(name for name in ('torch', 'timm', 'transformers', 'accelerate', 'tensorboardX') "
            "if name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
