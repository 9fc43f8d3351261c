"""The dashboard, `distilflow ui`, started as a user starts it, over a workspace filled through the job store's own
API (what running jobs write): a hundred jobs listed in real headless Chromium, a running job's progress and its
loss curve changing on the open pages without a reload, the page reloading itself when the job ends, hostile text
shown as text; safe by default: a foreign Host or a cross-site form
refused on loopback, and off loopback nothing read or changed without the token. The whole route with real jobs
(a finished one, a running one canceled from the page) is tests/test_ui_jobs.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from conftest import SRC
from ui_helpers import (CHROMIUM, HOSTILE, chromium_page, dashboard, mark_loaded, request, still_same_document)

from distilflow.io import write_json_atomic
from distilflow.jobs.lock import JobLock
from distilflow.jobs.store import STAGES, JobStore, pid_alive
from distilflow.workspace import Workspace

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/install-chromium.sh)")

# A process that holds a job's lock and claims it, as `distilflow run` does, then waits to be stopped.
_HOLD_JOB = """
import os, sys, time
from pathlib import Path
from distilflow.io import write_json_atomic
from distilflow.jobs.lock import JobLock
from distilflow.jobs.store import JobStore
ws, name = Path(sys.argv[1]), sys.argv[2]
assert JobLock(ws / "jobs" / name / "job.lock").acquire()
JobStore(ws / "distilflow.db").claim(name, os.getpid())
print("holding", flush=True)
time.sleep(300)
"""


def recorded_jobs(workspace: Path, count: int) -> JobStore:
    """`count` jobs recorded through the store: every tenth one completed, the others queued (each write is a
    committed transaction: a hundred jobs of five finished stages each would take the test seconds)."""
    store = JobStore(workspace / "distilflow.db")
    for i in range(count):
        name = f"job-{i:03d}"
        spec = {"name": name, "task_type": "classification", "teacher": {"model": "teacher"},
                "student": {"model": "student"}}
        store.upsert_job(name, "classification", spec, {stage: f"inputs-{i}" for stage in STAGES})
        if i % 10 == 0:
            for stage in STAGES:
                store.finish_stage(name, stage, "completed", metrics={})
            store.set_job_status(name, "completed")
    return store


@needs_chromium
def test_a_hundred_jobs_are_listed_and_a_running_one_moves_on_the_open_page(tmp_path):
    workspace = tmp_path / "ws"
    store = recorded_jobs(workspace, 100)
    running = "job-050"
    lock = JobLock(Workspace(workspace).job(running).lock)
    assert lock.acquire()  # this process runs the job, as `distilflow run` would
    try:
        store.claim(running, os.getpid())
        store.start_stage(running, "generate")
        store.update_progress(running, "generate", 3, 40, f"3.0 rows/s avg · {HOSTILE}")
        with dashboard(workspace) as ui, chromium_page() as page:
            page.goto(ui.url)
            rows = page.locator("tr[data-job]")
            assert rows.count() == 100
            row = page.locator(f'tr[data-job="{running}"]')
            assert row.locator('[data-field="status"]').text_content() == "running"
            assert row.locator('[data-field="progress"]').text_content() == "3/40"
            assert row.locator('[data-field="note"]').text_content() == f"3.0 rows/s avg · {HOSTILE}"
            assert page.locator('img[src="x"]').count() == 0  # the note is text, not an element
            assert page.locator('tr[data-job="job-030"] [data-field="status"]').text_content() == "completed"
            mark_loaded(page)
            store.update_progress(running, "generate", 17, 40, "5.1 rows/s avg")
            page.wait_for_function(  # polled in the page until it changes (or the deadline passes)
                f"""() => document.querySelector('tr[data-job="{running}"] [data-field="progress"]')
                          .textContent === "17/40" """, timeout=10_000)
            assert still_same_document(page), "the page was reloaded instead of updated"
            assert row.locator("progress").evaluate("bar => bar.value") == pytest.approx(42.5)
            # Its page: the loss curve grows as the training log does (a file, not a row of the store).
            paths = Workspace(workspace).job(running)
            store.finish_stage(running, "generate", "completed", metrics={"requests": 40})
            store.start_stage(running, "train")
            page.goto(f"{ui.base}/jobs/{running}")
            mark_loaded(page)
            line = page.locator("#loss-chart polyline[data-series=train_loss]")
            assert (line.get_attribute("points") or "") == ""
            write_json_atomic(paths.train_log, [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}])
            page.wait_for_function("""() => document.querySelector('#loss-chart polyline[data-series=train_loss]')
                                            .getAttribute("points").split(" ").length === 2""", timeout=10_000)
            last_tick = page.locator('#loss-chart text[data-x-tick="4"]').text_content()
            write_json_atomic(paths.train_log, [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5},
                                                {"step": 3, "loss": 1.2, "eval_loss": 1.4}])
            page.wait_for_function("""() => document.querySelector('#loss-chart polyline[data-series=train_loss]')
                                            .getAttribute("points").split(" ").length === 3""", timeout=10_000)
            validation = page.locator("#loss-chart polyline[data-series=validation_loss]").get_attribute("points")
            assert len(validation.split(" ")) == 1  # the validation loss arrived with it
            assert page.locator('#loss-chart text[data-x-tick="4"]').text_content() != last_tick  # the axis grew
            assert still_same_document(page), "the job page was reloaded instead of updated"
            store.finish_stage(running, "train", "failed", error=f"teacher said {HOSTILE}")
            store.set_job_status(running, "failed", error=f"teacher said {HOSTILE}")
            # The job ended: its page reloads itself, to show how it ended and offer to resume it.
            page.wait_for_function("""() => document.querySelector('#job-header')?.dataset.terminal === "true" """,
                                   timeout=10_000)
            assert not still_same_document(page)
            assert page.locator('#job-header [data-field="status"]').text_content() == "failed"
            assert page.locator("#job-header .note").text_content() == f"teacher said {HOSTILE}"
            assert page.locator("#resume").count() == 1
            assert page.locator('img[src="x"]').count() == 0 and page.dialogs == []
    finally:
        lock.release()


def test_loopback_refuses_a_foreign_host_and_a_form_from_another_site(tmp_path):
    workspace = tmp_path / "ws"
    recorded_jobs(workspace, 2)
    with dashboard(workspace) as ui:
        status, headers, page = request(f"{ui.base}/jobs/job-001")
        assert status == 200
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
        assert headers["x-content-type-options"] == "nosniff"
        status, _, missing = request(f"{ui.base}/jobs/{urllib.parse.quote(HOSTILE)}")
        assert status == 404 and HOSTILE not in missing  # a name in the address is shown escaped
        # A page of another site whose name resolves to 127.0.0.1 (DNS rebinding) is refused.
        assert request(f"{ui.base}/", headers={"Host": "attacker.example"})[0] == 400
        form_token = page.split('name="form_token" value="', 1)[1].split('"', 1)[0]
        cancel = f"{ui.base}/jobs/job-001/cancel"
        body = f"form_token={form_token}".encode()
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert request(cancel, method="POST", data=body, headers={**form, "Origin": "http://attacker.example"})[0] == 403
        assert request(cancel, method="POST", data=b"form_token=guess", headers={**form, "Origin": ui.base})[0] == 403
        assert JobStore(workspace / "distilflow.db").raw_status("job-001") == "queued"
        status, headers, _ = request(cancel, method="POST", data=body, headers={**form, "Origin": ui.base})
        assert status == 303 and headers["location"] == "/jobs/job-001"
        assert JobStore(workspace / "distilflow.db").get("job-001").status == "canceled"


def test_off_loopback_nothing_is_read_or_canceled_without_the_token(tmp_path):
    workspace = tmp_path / "ws"
    store = recorded_jobs(workspace, 1)
    (workspace / "jobs" / "job-000").mkdir(parents=True, exist_ok=True)
    job = subprocess.Popen([sys.executable, "-c", _HOLD_JOB, str(workspace), "job-000"], stdout=subprocess.PIPE,
                           text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        assert job.stdout.readline().strip() == "holding"
        assert store.get("job-000").status == "running"
        with dashboard(workspace, "--host", "0.0.0.0") as ui:
            assert ui.token and len(ui.token) >= 24, ui.output
            cancel = f"{ui.base}/jobs/job-000/cancel"
            assert request(f"{ui.base}/")[0] == 401
            assert request(f"{ui.base}/events")[0] == 401
            assert request(cancel, method="POST", data=b"", headers={"Origin": ui.base})[0] == 401
            assert request(f"{ui.base}/", headers={"Authorization": "Bearer not-the-token"})[0] == 401
            time.sleep(0.5)
            assert job.poll() is None and store.raw_status("job-000") == "running"
            # The printed address sets a cookie and drops the token from the address bar.
            status, headers, _ = request(f"{ui.base}/jobs/job-000?token={ui.token}")
            assert status == 303 and headers["location"] == "/jobs/job-000"
            cookie = headers["set-cookie"].split(";", 1)[0]
            assert "httponly" in headers["set-cookie"].lower() and "samesite=strict" in headers["set-cookie"].lower()
            status, _, page = request(f"{ui.base}/jobs/job-000", headers={"Cookie": cookie})
            assert status == 200 and ui.token not in page  # the page's forms carry a derived value, not the token
            # With the cookie but without the page's form token, a cancel is still refused.
            assert request(cancel, method="POST", data=b"", headers={"Cookie": cookie, "Origin": ui.base})[0] == 403
            assert job.poll() is None
            status, _, _ = request(cancel, method="POST", data=b"", headers={"Authorization": f"Bearer {ui.token}"})
            assert status == 303
            job.wait(timeout=30)
            assert not pid_alive(job.pid) and store.get("job-000").status == "canceled"
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
