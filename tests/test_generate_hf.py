"""The teacher stage with a local Hugging Face teacher (tiny random model): rows, token-id log-probs, resume, dry run."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli, write_job
from distilflow.teachers.cache import TeacherCache


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_hf_teacher_stores_token_id_logprobs_and_resumes_from_its_cache(tmp_path, tiny_models):
    spec = write_job(tmp_path, tiny_models, n_train=4, n_val=1, name="hf-job",
                     generation={"max_tokens": 6, "top_logprobs": 4, "verify": "none", "deduplicate": False})
    workspace = tmp_path / "ws"
    dry = run_cli("generate", str(spec), "--dry-run", "--workspace", str(workspace))
    assert dry.returncode == 0, dry.stderr
    assert "estimated with the teacher's tokenizer" in dry.stdout and "requests to send:  5" in dry.stdout

    first = run_cli("generate", str(spec), "--workspace", str(workspace))
    assert first.returncode == 0, first.stderr
    job = workspace / "jobs" / "hf-job"
    rows = [json.loads(line) for line in (job / "synthetic" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    with TeacherCache(job / "cache" / "teacher.sqlite") as cache:
        for row in rows:
            top = cache.get(row["teacher_key"], with_logprobs=True).top_logprobs[row["sample"]]
            assert top.token_ids is not None and top.tokens is None  # a local teacher stores vocabulary ids
            assert len(top.token_ids) == len(top.logprobs) and all(len(ids) == 4 for ids in top.token_ids)
        answered = cache.count()

    again = run_cli("generate", str(spec), "--workspace", str(workspace))
    assert again.returncode == 0, again.stderr
    record = json.loads(run_cli("jobs", "show", "hf-job", "--json", "--workspace", str(workspace)).stdout)
    metrics = next(s for s in record["stages"] if s["stage"] == "generate")["metrics"]
    assert metrics["cached_before"] == answered == 5 and metrics["this_run"]["answers"] == 0
