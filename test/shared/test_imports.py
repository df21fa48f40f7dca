"""Import hygiene: koch_common stays light, no first-party import cycle, koch_runtime imports its heavy
libraries once at module top.

koch_common is imported by every node (the driver at 1 kHz start-up included); torch, LeRobot and
onnxruntime cost seconds of start-up and hundreds of MB, so they belong to koch_runtime only.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "lerobot", "onnxruntime")


def heavy_modules_after(code: str) -> list[str]:
    """The heavy modules loaded after running `code` in a fresh interpreter with koch_common on the path."""
    probe = f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    path = os.pathsep.join([str(ROOT / "src/shared/koch_common"), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": path}, check=True)
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


def test_koch_common_imports_no_torch_lerobot_or_onnxruntime() -> None:
    assert heavy_modules_after("import koch_common, koch_common.resample, koch_common.safety") == []
    every_module = ("import pkgutil, importlib, koch_common\n"
                    "for m in pkgutil.walk_packages(koch_common.__path__, 'koch_common.'):\n"
                    "    importlib.import_module(m.name)")
    assert heavy_modules_after(every_module) == []


def first_party_modules() -> dict[str, Path]:
    """Module name -> file, for every Python package of every workspace package under src/."""
    modules = {}
    for package_xml in sorted(ROOT.glob("src/*/*/package.xml")):
        package_root = package_xml.parent
        for path in sorted(package_root.glob(f"{package_root.name}/**/*.py")):
            parts = path.relative_to(package_root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: top level, and inside top-level if / try blocks
    (not `if TYPE_CHECKING:`, which never runs)."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                pending.extend(node.body)
            pending.extend(node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend([*node.body, *node.orelse, *node.finalbody])
            for handler in node.handlers:
                pending.extend(handler.body)


def imported_modules(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
                     known: dict[str, Path]) -> set[str]:
    """The first-party modules an import statement in `module` names."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & set(known)
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    targets = {f"{base}.{alias.name}" for alias in node.names} & set(known)
    return targets or ({base} & set(known))


def import_graph() -> dict[str, set[str]]:
    known = first_party_modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[module] = set()
        for node in module_level_imports(tree):
            graph[module] |= imported_modules(node, module, is_package, known) - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None when the graph is acyclic (depth-first search)."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path = [start]
        branches = [iter(sorted(graph[start]))]
        while branches:
            successor = next(branches[-1], None)
            if successor is None:
                done.add(path.pop())
                branches.pop()
            elif successor in path:
                return [*path[path.index(successor):], successor]
            elif successor not in done:
                path.append(successor)
                branches.append(iter(sorted(graph.get(successor, set()))))
    return None


def test_the_cycle_finder_reports_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_first_party_module_takes_part_in_an_import_cycle() -> None:
    graph = import_graph()
    assert "koch_runtime.torch_runtime" in graph and "koch_common.safety" in graph
    assert "koch_runtime.checkpoint" in graph["koch_runtime.torch_runtime"]  # the graph sees real edges
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_koch_runtime_imports_torch_lerobot_and_onnxruntime_at_module_top_only() -> None:
    local = []
    for path in sorted((ROOT / "src/shared/koch_runtime/koch_runtime").glob("**/*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            for node in ast.walk(function):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(name.split(".")[0] in HEAVY for name in names):
                    local.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert local == [], f"function-local imports of {HEAVY}: {local}"
