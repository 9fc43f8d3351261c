"""The front door works: every file the README, the guides and scripts/ name exists, and every job spec a script
runs loads and passes prepare (data checks and every stage's preflight), so `bash scripts/demo.sh` cannot fail on
a missing or broken spec after six minutes of setup."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "scripts").glob("*.sh")),
             *sorted((REPO / "bench").glob("*.md"))]
# A path into the repository as the documents write it (examples/..., scripts/..., bench/..., docs/...).
REPO_PATH = re.compile(r"(?<![\w/.-])((?:examples|scripts|bench|docs)/[\w./-]*\w)")
# A job spec run by a script: `distilflow run|generate|train|evaluate|report SPEC.yaml`.
SCRIPT_SPEC = re.compile(r"distilflow\s+(?:run|generate|train|evaluate|report)\s+(\S+\.ya?ml)")


def _named_paths() -> list[tuple[str, str]]:
    found = []
    for document in DOCUMENTS:
        for match in REPO_PATH.finditer(document.read_text()):
            found.append((document.name, match.group(1)))
    return found


def _script_specs() -> list[Path]:
    specs = []
    for script in sorted((REPO / "scripts").glob("*.sh")):
        specs += [REPO / m.group(1) for m in SCRIPT_SPEC.finditer(script.read_text())]
    return specs


def test_every_file_the_documents_name_exists():
    for folder in ("docs", "scripts", "bench"):  # each glob above found its documents
        assert any(d.parent == REPO / folder for d in DOCUMENTS), f"no documents found in {folder}/"
    assert _named_paths(), "the documents name no files: the pattern no longer matches how they name them"
    missing = [f"{doc}: {path}" for doc, path in _named_paths() if not (REPO / path).exists()]
    assert not missing, f"named but missing: {missing}"


def test_the_demo_script_runs_a_job_spec():
    assert _script_specs(), "scripts/demo.sh should run `distilflow run examples/....yaml`"


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
@pytest.mark.parametrize("spec_path", _script_specs(), ids=lambda p: p.name)
def test_every_spec_a_script_runs_loads_and_passes_prepare(spec_path: Path):
    from distilflow.pipeline.stages import preflight
    from distilflow.jobspec import load_spec

    assert spec_path.is_file(), f"{spec_path} does not exist"
    spec = load_spec(spec_path)
    inputs = preflight(spec)  # data rows, then every stage's own checks; sends nothing, writes nothing
    assert inputs.examples["train"], "the demo has training rows"


def test_every_example_spec_loads():
    from distilflow.jobspec import load_spec

    examples = sorted((REPO / "examples").glob("*.yaml"))
    assert examples, "examples/ holds no job spec"
    for path in examples:
        load_spec(path)
