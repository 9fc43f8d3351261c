"""End-to-end jobs through the command line, as a user runs them."""

import json
import re
import subprocess
import sys

import pytest
import yaml

from conftest import cli_env, nli_rows, run_cli, write_job


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_conversation_job_runs_end_to_end_and_resumes_as_no_op(tmp_path, tiny_models):
    spec = write_job(tmp_path / "spec", tiny_models, name="conv")
    ws = tmp_path / "ws"
    result = run_cli("run", str(spec), "--workspace", str(ws))
    assert result.returncode == 0, result.stderr
    show = run_cli("jobs", "show", "conv", "--workspace", str(ws))
    assert show.returncode == 0 and "completed" in show.stdout
    for stage in ("prepare", "generate", "train", "evaluate", "report"):  # each with how long it took
        assert re.search(rf"^  {stage} +completed .* (\d+\.\d s|\d+ min \d\d s)$", show.stdout, re.M), show.stdout

    job = ws / "jobs" / "conv"
    train = read_jsonl(job / "synthetic" / "train.jsonl")
    assert sorted(r["id"] for r in train) == [f"train-{i}" for i in range(1, 9)]  # one row per input
    for row in train:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["source"]["file"].endswith("train.jsonl") and row["source"]["line"] >= 1
    assert (job / "student" / "final" / "model.safetensors").exists()
    report = (job / "report.md").read_text()
    for word in ("Retention", "teacher", "baseline", "distilled", "bleu"):
        assert word in report
    data = json.loads((job / "report.json").read_text())
    assert set(data["models"]) == {"teacher", "baseline", "distilled"}
    assert data["models"]["distilled"]["parameters"] < data["models"]["teacher"]["parameters"]
    assert "speedup" in data["comparison"] and "retention" in data["comparison"]
    # the time of every stage before the report (the report's own is still running while it is written)
    assert list(data["stage_seconds"]) == ["prepare", "generate", "train", "evaluate"]
    assert all(seconds >= 0 for seconds in data["stage_seconds"].values())
    assert "## Time per stage" in report and "| train |" in report
    assert "Traceback" not in result.stderr

    # Running it again resumes: everything is done, nothing is redone.
    final_mtime = (job / "student" / "final" / "model.safetensors").stat().st_mtime_ns
    again = run_cli("run", str(spec), "--workspace", str(ws))
    assert again.returncode == 0, again.stderr
    assert (job / "student" / "final" / "model.safetensors").stat().st_mtime_ns == final_mtime

    listed = run_cli("jobs", "list", "--workspace", str(ws))
    assert "conv" in listed.stdout and "completed" in listed.stdout


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_nli_job_keeps_only_verified_teacher_answers(tmp_path, tiny_models):
    models = {**tiny_models, "teacher": tiny_models["nli_teacher"]}  # always answers "entailment"
    spec = write_job(tmp_path / "spec", models, task_type="nli", rows=nli_rows, n_train=9, n_val=3, n_test=3,
                     name="nli-job")
    ws = tmp_path / "ws"
    result = run_cli("run", str(spec), "--workspace", str(ws))
    assert result.returncode == 0, result.stderr
    job = ws / "jobs" / "nli-job"
    train = read_jsonl(job / "synthetic" / "train.jsonl")
    rejected = read_jsonl(job / "synthetic" / "rejected.jsonl")
    assert len(train) == 3 and all(r["reference"] == "entailment" for r in train)
    assert {r["reason"] for r in rejected} == {"disagrees_with_reference"}
    assert len([r for r in rejected if r["split"] == "train"]) == 6
    report = json.loads((job / "report.json").read_text())
    # test labels cycle entailment/neutral/contradiction: the constant teacher gets exactly 1 of 3
    assert abs(report["models"]["teacher"]["task_metrics"]["accuracy"] - 1 / 3) < 1e-9
    assert report["teacher_stage"]["rejected_by_reason"] == {"disagrees_with_reference": 8}  # 6 train + 2 validation


def test_broken_data_line_stops_before_any_work(tmp_path, tiny_models):
    spec = write_job(tmp_path / "spec", tiny_models, name="broken")
    train = tmp_path / "spec" / "data" / "train.jsonl"
    lines = train.read_text().splitlines()
    lines[2] = '{"messages": [{"role": "user", "content": "unterminated'
    train.write_text("\n".join(lines) + "\n")
    ws = tmp_path / "ws"
    result = run_cli("run", str(spec), "--workspace", str(ws))
    assert result.returncode == 1
    assert f"{train}, line 3: invalid JSON" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (ws / "jobs").exists()  # nothing written for stages that did not run


def test_misspelt_key_is_named_with_a_suggestion(tmp_path, tiny_models):
    spec = write_job(tmp_path / "spec", tiny_models, generation={"max_tokens": 8, "temprature": 0.5})
    result = run_cli("run", str(spec), "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 1
    assert "unknown key 'generation.temprature'; did you mean 'generation.temperature'?" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # five CLI runs (~45 s): CI runs it
def test_single_stages_in_order_and_a_clear_error_when_out_of_order(tmp_path, tiny_models):
    spec = write_job(tmp_path / "spec", tiny_models, name="staged")
    ws = str(tmp_path / "ws")
    early = run_cli("train", str(spec), "--workspace", ws)
    assert early.returncode == 1 and "needs stage 'generate' first" in early.stderr
    for stage in ("generate", "train", "evaluate", "report"):
        result = run_cli(stage, str(spec), "--workspace", ws)
        assert result.returncode == 0, (stage, result.stderr)
    assert "completed" in run_cli("jobs", "show", "staged", "--workspace", ws).stdout


@pytest.mark.slow  # two whole runs of a job (~30 s): CI runs it; the default suite keeps under 10 minutes
def test_changed_evaluation_settings_rerun_only_later_stages(tmp_path, tiny_models):
    spec = write_job(tmp_path / "spec", tiny_models, name="rerun")
    ws = tmp_path / "ws"
    assert run_cli("run", str(spec), "--workspace", str(ws)).returncode == 0
    final = ws / "jobs" / "rerun" / "student" / "final" / "model.safetensors"
    synthetic = ws / "jobs" / "rerun" / "synthetic" / "train.jsonl"
    stamps = (final.stat().st_mtime_ns, synthetic.stat().st_mtime_ns)
    data = yaml.safe_load(spec.read_text())
    data["evaluation"]["max_tokens"] = 4
    spec.write_text(yaml.safe_dump(data))
    assert run_cli("run", str(spec), "--workspace", str(ws)).returncode == 0
    assert (final.stat().st_mtime_ns, synthetic.stat().st_mtime_ns) == stamps
    predictions = read_jsonl(ws / "jobs" / "rerun" / "eval" / "distilled" / "predictions.jsonl")
    assert all(p["output_tokens"] <= 4 for p in predictions)


def test_workspace_from_environment_and_unknown_job(tmp_path):
    env_ws = tmp_path / "home"
    result = subprocess.run([sys.executable, "-m", "distilflow", "jobs", "show", "ghost"], capture_output=True,
                            text=True, env=cli_env(DISTILFLOW_HOME=str(env_ws)))
    assert result.returncode == 1
    assert "no job named 'ghost'" in result.stderr and str(env_ws) in result.stderr
    assert "Traceback" not in result.stderr


def test_jobs_show_prints_how_long_each_stage_took(tmp_path):
    """Durations come from the store's stage start and finish times (set here, so no clock is involved)."""
    import sqlite3

    from distilflow.jobs.store import JobStore

    ws = tmp_path / "ws"
    store = JobStore(ws / "distilflow.db")
    store.upsert_job("timed", "qa", {"task_type": "qa"}, {})
    times = {"prepare": (1000.0, 1000.4, "completed"), "generate": (1001.0, 1126.0, "completed"),
             "train": (1200.0, 4900.0, "completed"), "evaluate": (5000.0, 5012.0, "failed"),
             "report": (None, None, "pending")}
    with sqlite3.connect(store.db_path) as db:
        db.executemany("UPDATE stages SET started_at=?, finished_at=?, status=? WHERE job='timed' AND stage=?",
                       [(start, end, status, stage) for stage, (start, end, status) in times.items()])
    record = store.get("timed")
    assert record.stage_seconds() == pytest.approx({"prepare": 0.4, "generate": 125.0, "train": 3700.0,
                                                    "evaluate": 12.0})
    shown = run_cli("jobs", "show", "timed", "--workspace", str(ws))
    assert shown.returncode == 0, shown.stderr
    lines = {line.split()[0]: line for line in shown.stdout.splitlines() if line.startswith("  ")}
    assert lines["prepare"].rstrip().endswith("0.4 s")
    assert lines["generate"].rstrip().endswith("2 min 05 s")
    assert lines["train"].rstrip().endswith("1 h 01 min")
    assert lines["evaluate"].rstrip().endswith("12.0 s")  # a failed stage's run took time too
    assert lines["report"].split() == ["report", "pending"]  # not run: no duration


def test_a_stage_left_running_by_a_killed_job_shows_no_growing_duration(tmp_path):
    import sqlite3

    from distilflow.jobs.store import JobStore, StageRecord

    assert StageRecord("train", "running", started_at=100.0).elapsed(now=160.0) == 60.0
    assert StageRecord("train", "running", started_at=100.0).seconds is None
    ws = tmp_path / "ws"
    store = JobStore(ws / "distilflow.db")
    store.upsert_job("killed", "qa", {"task_type": "qa"}, {})
    with sqlite3.connect(store.db_path) as db:  # the job process died mid-train: no lock, stage still "running"
        db.execute("UPDATE stages SET started_at=1000, status='running' WHERE job='killed' AND stage='train'")
        db.execute("UPDATE jobs SET status='running' WHERE name='killed'")
    shown = run_cli("jobs", "show", "killed", "--workspace", str(ws))
    assert "status:  failed" in shown.stdout
    train = next(line for line in shown.stdout.splitlines() if line.startswith("  train"))
    assert train.split() == ["train", "running"] and "so far" not in shown.stdout
