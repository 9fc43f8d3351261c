"""The code stays readable in one sitting: modules under 400 lines, functions under 60 (DESIGN.md, 'Layout'),
and the import direction of pyproject's import-linter contract holds (a wrong-way import fails here too)."""

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
