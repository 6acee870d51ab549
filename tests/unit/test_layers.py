"""The package's layers: core <- training <- inference <- applications (docs/architecture.md).

The layers contract lives in pyproject.toml ([tool.importlinter]) and import-linter checks it
on the import graph, imports inside functions included. These tests run it, show that it
catches an upward import, and check what the contract cannot: no import cycles, imports
inside functions only where a comment says why, and a training loop that loads no application.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "fundamentallm"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(pythonpath)})


def test_the_layers_contract_is_kept():
    result = lint_imports(ROOT, ROOT / "src")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, upward", [
    ("model/kv_cache.py", "    from fundamentallm.training import loop  # core -> training\n"),
    ("training/schedule.py", "    from fundamentallm import evaluation  # training -> inference\n"),
    ("sampling.py", "    from fundamentallm.interop import export  # inference -> applications\n"),
])
def test_an_upward_import_breaks_the_contract_even_inside_a_function(tmp_path, module, upward):
    copy = tmp_path / "src" / "fundamentallm"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / module, "a", encoding="utf-8") as f:
        f.write("\n\ndef _upward():\n" + upward)
    result = lint_imports(tmp_path, tmp_path / "src")
    assert result.returncode == 1 and "BROKEN" in result.stdout, result.stdout[-2000:]


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles_between_modules():
    graph = grimp.build_graph("fundamentallm", cache_dir=None)
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=a, imported=b)
    assert cycles(graph) == [["p.a", "p.b", "p.c"]]


def imports_inside_functions(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    name = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    found.append((node.lineno, ("." if getattr(node, "level", 0) else "") + (name or "")))
    return found


def explained(lines: list[str], i: int) -> bool:
    """A comment on line i, or above it through a run of imports, comments and a `try:`."""
    while i >= 0:
        if "#" in lines[i]:
            return True
        if not lines[i].strip().startswith(("import ", "from ", "try:")):
            return False
        i -= 1
    return False


def test_imports_inside_functions_only_for_a_reason_said_in_a_comment():
    """An import inside a function is for an optional extra or a heavy module loaded only
    where it is used, and a comment on its line or the lines just above says so. Only the
    CLI imports parts of the package inside functions (torch loads when a command runs)."""
    unexplained, inner = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("interop/remote/"):
            continue  # written beside an exported model, where fundamentallm may not be installed
        lines = path.read_text(encoding="utf-8").splitlines()
        for lineno, name in imports_inside_functions(path):
            if name.startswith(("fundamentallm", ".")):
                if relative != "cli/__init__.py":
                    inner.append(f"{relative}:{lineno} {name}")
                continue
            if not explained(lines, lineno - 1):
                unexplained.append(f"{relative}:{lineno} {name}")
    assert inner == [], "a module of the package imported inside a function"
    assert unexplained == [], "an import inside a function without a comment saying why"


def test_importing_the_training_loop_loads_no_application_and_no_inference():
    code = ("import sys, fundamentallm.training.loop\n"
            "print(' '.join(m for m in sys.modules if m.startswith('fundamentallm')))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                timeout=120).stdout.split())
    assert "fundamentallm.training.loop" in loaded
    above = {"cli", "api", "server", "openai_api", "interactive", "sweep", "interop", "corpus", "experiments",
             "generation", "sampling", "evaluation"}
    assert {m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in above} == set()
