"""The dashboard with real jobs, in real headless Chromium (what issue 20 asks to be checked): a finished
classification job and a running one, both taught by an OpenAI-protocol teacher on 127.0.0.1. The jobs page lists
both and the running job's progress moves without a reload; Cancel on its page stops it (its process is gone, the
store says canceled) and the page shows it; the finished job's page shows its report's figures and a rejected
teacher row; a label `<img src=x onerror=alert(1)>` from the data is shown as text; Resume finishes the canceled job
without asking the teacher again for what it already answered; compare and models show both. The screenshots of
docs/ui.md are taken here (DISTILFLOW_UPDATE_SCREENSHOTS=1 copies them to docs/ui/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli, start_cli, write_job
from openai_server import OpenAIServer, ServerConfig
from ui_helpers import (CHROMIUM, HOSTILE, chromium_page, dashboard, mark_loaded, save_screenshot,
                        still_same_document)

from distilflow.jobs.store import JobStore, pid_alive
from distilflow.report.tables import model_results, score_cell

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/install-chromium.sh)")]

LABELS = ["card_arrival", "change_pin", HOSTILE]
EVALUATION = {"max_tokens": 4, "warmup": 0, "throughput": False, "uncached_examples": 0, "bootstrap_samples": 200,
              "models": ["teacher", "distilled"]}


def text_of(i: int, verb: str) -> str:
    return f"customer {verb} {chr(97 + i % 26)}{i} <b>bold</b>"


def rows_by(verb: str):
    """Each job's rows say their own verb, so the teacher's counts tell the two jobs' requests apart."""
    return lambda n, offset=0: [{"text": text_of(i, verb), "label": LABELS[i % 3]} for i in range(offset, offset + n)]


def teacher_answers(verb: str, count: int) -> dict[str, list[str]]:
    """The teacher names the row's label, except every fourth row: "no idea" (rejected: not a label)."""
    indices = [*range(count), *range(100, 103), *range(200, 204)]
    return {f"{verb} {chr(97 + i % 26)}{i} ": [LABELS[i % 3] if i % 4 else "no idea"] for i in indices}


def classification_job(folder: Path, models: dict, server: OpenAIServer, name: str, verb: str, n_train: int,
                       **sections) -> Path:
    return write_job(folder, models, task_type="classification", rows=rows_by(verb), n_train=n_train, n_val=3,
                     n_test=4, name=name, training={"logging_steps": 1}, evaluation=EVALUATION,
                     teacher={"model": "teacher-model", "backend": "openai", "base_url": server.url,
                              "max_concurrency": 1, "price_per_million_input_tokens": 1.0,
                              "price_per_million_output_tokens": 2.0}, **sections)


def status_is(page, status: str, timeout: float) -> None:
    page.wait_for_function(f"""() => document.querySelector('#job-header [data-field="status"]')
                                    .textContent === "{status}" """, timeout=timeout * 1000)


def test_the_dashboard_follows_cancels_resumes_and_compares_real_jobs(tmp_path, tiny_models):
    workspace = tmp_path / "ws"
    shots = tmp_path / "shots"
    shots.mkdir()
    answers = {**teacher_answers("says", 12), **teacher_answers("writes", 60)}
    with OpenAIServer(ServerConfig(answers=answers)) as server:
        done = run_cli("run", str(classification_job(tmp_path / "a", tiny_models, server, "intents", "says", 12)),
                       "--workspace", str(workspace))
        assert done.returncode == 0, done.stderr[-3000:]
        # The second job: one answer every 0.3 s, so its teacher stage runs while the page is watched.
        server.config.latency = 0.3
        spec = classification_job(tmp_path / "b", tiny_models, server, "intents-1-layer", "writes", 60,
                                  student={"prune": [0], "name": "student-1-layer"})
        running = start_cli("run", str(spec), "--workspace", str(workspace))
        store = JobStore(workspace / "distilflow.db")
        try:
            _watch_and_cancel(workspace, store, running, shots, server)
        finally:
            if running.poll() is None:
                running.kill()
            running.wait(timeout=30)


def _watch_and_cancel(workspace: Path, store: JobStore, running, shots: Path, server: OpenAIServer) -> None:
    with dashboard(workspace) as ui, chromium_page() as page:
        page.goto(ui.url)
        page.wait_for_function("""() => { const cell = document.querySelector(
            'tr[data-job="intents-1-layer"] [data-field="progress"]'); return cell && /^[1-9]/.test(cell.textContent); }""",
                               timeout=120_000)  # the page reloads itself when the new job appears
        assert page.locator('tr[data-job="intents"] [data-field="status"]').text_content() == "completed"
        progress = page.locator('tr[data-job="intents-1-layer"] [data-field="progress"]')
        before = progress.text_content()
        mark_loaded(page)
        page.wait_for_function(f"""() => document.querySelector('tr[data-job="intents-1-layer"] [data-field="progress"]')
                                        .textContent !== "{before}" """, timeout=30_000)
        assert still_same_document(page), "the jobs page reloaded instead of updating"
        assert page.locator('tr[data-job="intents-1-layer"] [data-field="status"]').text_content() == "running"
        save_screenshot(page, "jobs", shots)

        page.goto(f"{ui.base}/jobs/intents-1-layer")
        pid = store.get("intents-1-layer").pid
        assert pid_alive(pid)
        with page.expect_navigation():
            page.click("#cancel")
        status_is(page, "canceled", 60)
        assert running.wait(timeout=30) == 130 and not pid_alive(pid)
        assert store.raw_status("intents-1-layer") == "canceled"
        assert store.get("intents-1-layer").status == "canceled"
        assert page.locator("#resume").count() == 1

        _finished_job_page(page, ui.base, workspace, shots)

        asked = {p: n for p, n in server.stats()["answered"].items() if " writes " in p}
        server.config.latency = 0.0
        page.goto(f"{ui.base}/jobs/intents-1-layer")
        with page.expect_navigation():
            page.click("#resume")
        status_is(page, "completed", 400)  # the page reloads itself when the job ends
        after = server.stats()["answered"]
        # What the job's teacher stage answered before the cancel is not asked again (one request may have been in
        # flight then: max_concurrency 1); its test inputs are asked for the first time, by evaluation.
        repeated = [p for p, n in asked.items() if " writes " in p and after.get(p, 0) > n]
        assert len(repeated) <= 1, repeated
        assert sum(" writes " in p for p in after) == 60 + 3 + 4

        page.goto(f"{ui.base}/compare")
        columns = page.locator("#compare thead th a")
        assert sorted(columns.all_text_contents()) == ["intents", "intents-1-layer"]
        assert "1 (kept [0])" in page.locator("#compare").text_content()
        assert page.locator("#frontier g.point").count() == 2
        save_screenshot(page, "compare", shots, full_page=True)
        page.goto(f"{ui.base}/models")
        assert page.locator("#models tr[data-model]").count() == 4
        assert "distilflow export intents --format ollama" in page.locator("#models").text_content()
        save_screenshot(page, "models", shots)
        assert page.dialogs == []


def _finished_job_page(page, base: str, workspace: Path, shots: Path) -> None:
    page.goto(f"{base}/jobs/intents")
    report = json.loads((workspace / "jobs" / "intents" / "report.json").read_text())
    quality = page.locator("#quality").text_content()
    for label, result in model_results(report).items():
        assert label in quality and score_cell(result, "accuracy") in quality
    rejected = page.locator("#rejected tbody tr").first
    assert rejected.locator(".reason").text_content() == "not_a_label"
    assert "no idea" in rejected.text_content()
    assert HOSTILE in page.locator("#synthetic").text_content()  # the label, as text
    assert page.locator('img[src="x"]').count() == 0 and page.dialogs == []
    assert page.locator("#loss-chart polyline[data-series=train_loss]").get_attribute("points")
    save_screenshot(page, "job", shots)
