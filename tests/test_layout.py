"""The code stays readable in one sitting: modules under 400 lines, functions under 60 (README, "Design notes"),
and the import direction of pyproject's import-linter contract holds (a wrong-way import fails here too), with no import
cycle (lazy imports included) and no stage asking which task type it has."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

from conftest import REPO, SRC

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    modules = sorted((SRC / "distilflow").rglob("*.py"))
    assert modules, f"no modules found under {SRC / 'distilflow'}"
    return modules


def test_modules_are_short():
    long = {str(p.relative_to(SRC)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_are_short():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(SRC)}:{node.lineno} {node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_imports_follow_the_layers():
    lint = shutil.which("lint-imports")
    assert lint, "import-linter is a test dependency (pip install -e .[test])"
    # PYTHONPATH: lint this checkout's package (a git worktree beside an editable install included).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(SRC), os.environ.get("PYTHONPATH"))))}
    result = subprocess.run([lint], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def _imports(path: Path) -> set[str]:
    """Every distilflow module `path` imports, at the top or inside a function (lazy imports count)."""
    module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {name for name in found if name.startswith("distilflow")}


def test_no_import_cycles():
    """No two modules import each other, directly or around a circle, lazy imports included."""
    modules = {".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p for p in _modules()}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges = {m: {t for n in _imports(p) if (t := resolve(n)) and t != m and not m.startswith(t + ".")}
             for m, p in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                return path + [m, t]
            if t not in state and (cycle := visit(t, path + [m])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(modules):
        if m not in state:
            cycle = visit(m, [])
            assert cycle is None, "import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]):])


def test_no_stage_asks_which_task_it_has():
    """Outside tasks/, nothing calls isinstance on a Task subclass: the task's own interface answers."""
    task_classes = {node.name for p in (SRC / "distilflow" / "tasks").glob("*.py")
                    for node in ast.walk(ast.parse(p.read_text()))
                    if isinstance(node, ast.ClassDef) and node.name.endswith("Task") and node.name != "Task"}
    assert task_classes, "found no task classes under tasks/"
    asking = []
    for path in _modules():
        if "tasks" in path.relative_to(SRC).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance" and len(node.args) == 2:
                names = {getattr(n, "id", getattr(n, "attr", "")) for n in ast.walk(node.args[1])}
                if names & task_classes:
                    asking.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not asking, f"isinstance on a task class outside tasks/: {asking}"


def test_a_stage_importing_the_runner_breaks_the_contract(tmp_path):
    """The contract has teeth: a lazy import of the pipeline's runner from inside a stage fails lint-imports."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    (copy / "src/distilflow/train/wrong_way.py").write_text(
        "def run():\n    from distilflow.pipeline.runner import run_job\n    return run_job\n")
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}
    result = subprocess.run([shutil.which("lint-imports") or "lint-imports"], cwd=copy, capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode != 0 and "distilflow.train.wrong_way" in result.stdout, result.stdout + result.stderr
