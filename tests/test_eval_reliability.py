"""Evaluation that survives what users meet: an API model's answers are cached crash-safe (a re-run pays nothing
twice) and one refused input is a failed prediction; an answer with HTML in it is shown as text in report.md and
report.html; comparison labels cannot name folders outside the workspace."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import conversation_rows, write_job, write_jsonl
from distilflow.errors import DistilflowError
from distilflow.evaluate import run_evaluate
from distilflow.jobs.context import StageContext
from distilflow.prepare import prepare_inputs
from distilflow.report import run_report
from distilflow.jobspec import load_spec
from distilflow.teachers.cache import TeacherCache
from distilflow.workspace import Workspace
from openai_server import OpenAIServer, ServerConfig

KEY = "sk-eval-reliability-0123456789"
XSS = "<img src=x onerror=alert(1)> | & done"


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("EVAL_RELIABILITY_KEY", KEY)


def _context(spec_path: Path, workspace: Path) -> StageContext:
    spec = load_spec(spec_path)
    ws = Workspace.open(workspace)
    return StageContext(spec, ws, ws.job(spec.name), None, prepare_inputs(spec))


def api_teacher_job(folder: Path, tiny_models: dict, url: str, n_test: int = 4) -> Path:
    return write_job(folder, tiny_models, name="eval-api", n_test=n_test,
                     teacher={"model": "served", "backend": "openai", "base_url": url,
                              "api_key_env": "EVAL_RELIABILITY_KEY", "max_retries": 0},
                     evaluation={"models": ["teacher"], "warmup": 1, "batch_size": 2, "bootstrap_samples": 20})


def rows(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_api_answers_are_cached_and_one_refused_input_is_a_failed_prediction(tmp_path, tiny_models):
    refused = "Hello number 202, how are you?"
    with OpenAIServer(ServerConfig(bad_request=("number 202,",), echo_auth_in_errors=True)) as server:
        ctx = _context(api_teacher_job(tmp_path / "job", tiny_models, server.url), tmp_path / "ws")
        first = run_evaluate(ctx)["teacher"]
        metrics = json.loads(ctx.paths.eval_metrics("teacher").read_text())
        predictions = rows(ctx.paths.eval_predictions("teacher"))
        before = dict(server.stats()["attempts"])

        # A crash before metrics.json was written: the re-run reads every answer it has from the cache.
        ctx.paths.eval_metrics("teacher").unlink()
        run_evaluate(ctx)
        again = json.loads(ctx.paths.eval_metrics("teacher").read_text())
        after = server.stats()["attempts"]
    assert first["task_metrics"]["bleu"] is not None  # the model was scored, not failed as a whole
    failed = predictions["test-3"]
    assert failed["prediction"] == "" and "(400)" in failed["error"] and KEY not in failed["error"]
    assert metrics["failed_answers"] == 1 and metrics["timed_answers"] == 3 and "answers_from_cache" in metrics
    assert metrics["answers_from_cache"] == 0 and metrics["latency_mean_s"] is not None
    assert all(not r.get("cached") and r["latency_s"] is not None for i, r in predictions.items() if i != "test-3")

    # Nothing answered is asked again (only the refused input is); speed is not made up from cached answers.
    asked_again = {prompt: n - before.get(prompt, 0) for prompt, n in after.items() if n > before.get(prompt, 0)}
    assert set(asked_again) == {refused}
    assert again["answers_from_cache"] == 3 and again["timed_answers"] == 0 and again["failed_answers"] == 1
    assert again["latency_mean_s"] is None and again["throughput_answers_per_s"] is None
    assert again["task_metrics"] == metrics["task_metrics"]
    with TeacherCache(ctx.paths.teacher_cache) as cache:
        assert cache.count() == 3

    run_report(ctx)
    notes = json.loads(ctx.paths.report_json.read_text())["notes"]
    assert any("3 of 4 answers were read from the answer cache" in n for n in notes), notes
    assert any("gave no answer to 1 of 4 inputs" in n for n in notes), notes


def test_an_answer_with_html_is_text_in_report_md_and_report_html(tmp_path, tiny_models):
    from markdown_it import MarkdownIt

    with OpenAIServer(ServerConfig(answers={"number 200,": [XSS]})) as server:
        ctx = _context(api_teacher_job(tmp_path / "job", tiny_models, server.url, n_test=2), tmp_path / "ws")
        run_evaluate(ctx)
    run_report(ctx)
    markdown = ctx.paths.report_md.read_text()
    assert "&lt;img src=x onerror=alert(1)&gt; \\| &amp; done" in markdown
    assert "<img" not in markdown
    rendered = MarkdownIt().enable("table").render(markdown)
    assert "onerror" not in "".join(re.findall(r"<img[^>]*>", rendered))  # the plots are images; the answer is not
    assert "&lt;img src=x onerror=alert(1)&gt;" in rendered
    example_row = next(line for line in markdown.splitlines() if "Hello number 200" in line)
    assert example_row.count(" | ") == 2  # input | reference | teacher: the answer's pipe stays in its cell
    page = ctx.paths.report_html.read_text()
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt; | &amp; done" in page


@pytest.mark.parametrize("label", ["../..", "../escape", "a/b", ".hidden", ""])
def test_comparison_labels_are_checked_like_job_names_before_anything_is_written(tmp_path, tiny_models, label):
    from distilflow import Client

    test_file = write_jsonl(tmp_path / "test.jsonl", conversation_rows(1))
    models = [str(tiny_models["student"]), {"model": str(tiny_models["student"]), "label": label}]
    with pytest.raises(DistilflowError, match="is not a valid name.*nothing was written"):
        Client(workspace=tmp_path / "ws").models.compare(models, test_data=str(test_file), task_type="conversation")
    assert not (tmp_path / "ws" / "evaluations").exists() and not (tmp_path / "escape").exists()
