"""`distilflow tune` with tiny models, as a user runs it: trials are scored on the validation set, a trial that
lags after its first evaluation is pruned (stops early), kill -9 mid-study then a second call finishes without
redoing finished trials, best.yaml holds the best trial's settings, and only the chosen student meets the test set
(once)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import nli_rows, start_cli, write_job
from distilflow import Client
from distilflow.errors import SpecError
from distilflow.report.plots import tuning_svg
from distilflow.report.tuning import tuning_markdown
from distilflow.jobspec import load_spec

N_TEST = 3


def tune_job(folder: Path, tiny_models: dict[str, Path], **tune: Any) -> Path:
    """An NLI job whose teacher always answers "entailment": a student trained at a usable learning rate learns it
    within one epoch (validation accuracy 1/3), one trained at 1e-9 does not (0), which the pruner sees after the
    first evaluation. The job's own settings (3e-3) are the first trial."""
    models = {**tiny_models, "teacher": tiny_models["nli_teacher"]}
    return write_job(folder, models, task_type="nli", rows=nli_rows, n_train=8, n_val=6, n_test=N_TEST, name="tuned",
                     generation={"verify": "none", "max_tokens": 4},
                     evaluation={"max_tokens": 4, "bootstrap_samples": 0, "throughput": False, "uncached_examples": 0},
                     hyperparameters={"learning_rate": 3e-3, "batch_size": 2, "num_epochs": 2},
                     training={"save_steps": 1000, "logging_steps": 1},
                     tune={"space": {"learning_rate": {"choices": [3e-3, 1e-9]}}, "startup_trials": 1, **tune})


def study_trials(job: Path) -> list[Any]:
    import optuna

    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{job / 'tune' / 'study.sqlite'}")
    return study.get_trials(deepcopy=False)


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
def test_tune_prunes_resumes_after_kill_and_writes_best_yaml(tmp_path, tiny_models):
    spec = tune_job(tmp_path, tiny_models)
    workspace = tmp_path / "ws"
    job = workspace / "jobs" / "tuned"
    process = start_cli("tune", str(spec), "--trials", "4", "--workspace", str(workspace))
    assert process.stdout is not None
    seen = []
    for line in process.stdout:  # kill -9 once trial 2 has started (trials 0 and 1 are finished)
        seen.append(line)
        if "trial 2:" in line:
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(60)
    assert process.returncode == -signal.SIGKILL, "".join(seen)
    before = {t.number: (t.state.name, t.value) for t in study_trials(job) if t.state.name != "RUNNING"}
    assert set(before) == {0, 1}
    assert not (job / "best.yaml").exists()

    client = Client(workspace=workspace)  # the second call from Python (the first was the command line)
    client.jobs.tune(load_spec(spec), trials=4)
    trials = study_trials(job)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4
    for number, (state, value) in before.items():  # finished before the kill: kept as they were, not redone
        assert (trials[number].state.name, trials[number].value) == (state, value)
    interrupted = trials[2]
    assert interrupted.state.name == "FAIL"  # the trial the kill stopped runs again with the same settings
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 2)
    assert retry.params == interrupted.params

    summary = json.loads((job / "tune" / "summary.json").read_text())
    by_number = {t["number"]: t for t in summary["trials"]}
    assert by_number[0]["job_settings"] and by_number[0]["state"] == "complete"
    pruned = [t for t in summary["trials"] if t["state"] == "pruned"]
    assert pruned and all(t["settings"]["learning_rate"] == 1e-9 for t in pruned)
    assert all(len(t["scores"]) == 1 and t["steps"] == 4 for t in pruned)  # stopped after epoch 1 of 2 (8 steps)
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert summary["best"]["value"] == best.value == pytest.approx(1 / 3)
    chosen = yaml.safe_load((job / "best.yaml").read_text())
    assert chosen["hyperparameters"]["learning_rate"] == best.params["learning_rate"] == 3e-3
    assert "tune" not in chosen and chosen["name"] == "tuned"

    # Only the chosen student met the test set, and only once.
    evaluated = sorted(p.parent.parent.parent.name for p in job.glob("tune/trial-*/eval/distilled/metrics.json"))
    assert evaluated == [f"trial-{summary['best']['number']}"]
    predictions = job / "tune" / f"trial-{summary['best']['number']}" / "eval" / "distilled" / "predictions.jsonl"
    assert len(predictions.read_text().splitlines()) == N_TEST
    assert summary["test"]["task_metrics"]["accuracy"] is not None
    students = sorted(p.parent.parent.name for p in job.glob("tune/trial-*/student/final"))
    assert students == [f"trial-{summary['best']['number']}"]  # the others' students are not kept
    scored_at = predictions.stat().st_mtime_ns

    again = client.jobs.tune(load_spec(spec), trials=4)  # nothing left to do
    assert len(again["trials"]) == len(summary["trials"]) and predictions.stat().st_mtime_ns == scored_at
    report = "\n".join(tuning_markdown(again))
    assert "## Tuning" in report and "(chosen)" in report and "test accuracy of the chosen student" in report
    plot = tuning_svg({"tuning": again})  # the report's plot: validation score against each setting
    assert plot is not None and plot.startswith("<svg")


def test_tune_needs_validation_data_and_known_settings(tmp_path, tiny_models):
    spec = write_job(tmp_path, tiny_models, n_val=0, name="noval")
    with pytest.raises(SpecError, match="tune scores each trial on the validation set; the job spec needs"):
        Client(workspace=tmp_path / "ws").jobs.tune(load_spec(spec), trials=2)
    bad = tune_job(tmp_path / "bad", tiny_models, space={"learning_rte": {"low": 1e-5, "high": 1e-3}})
    with pytest.raises(SpecError, match="did you mean 'learning_rate'"):
        load_spec(bad)


def test_validation_scores_answer_as_the_test_evaluation_does(tiny_models):
    """With evaluation.answer_mode rank, a trial's validation score ranks the labels like the evaluation worker's
    ranked model: the same answers, so the same accuracy."""
    from distilflow.evaluate.ranked import RankedLocalModel
    from distilflow.models import load_causal_lm, load_tokenizer
    from distilflow.tasks import ClassificationTask, Example
    from distilflow.tune.scorer import Answering, validation_score

    labels = ["activate_my_card", "card_arrival", "change_pin"]
    task = ClassificationTask(labels)
    examples = [Example(f"v{i}", [{"role": "user", "content": f"customer message number {i}"}]) for i in range(6)]
    references = [labels[i % 3] for i in range(6)]
    ranked = RankedLocalModel(str(tiny_models["student"]), device="cpu", dtype="float32", prompt_format="completion",
                              choices=labels, uncached_examples=0)
    expected = [a.text for a in ranked.answer_all([e.messages for e in examples], 4, lambda n: None)]
    want = task.metric_stats(expected, references)["accuracy"].value()
    model, tokenizer = load_causal_lm(str(tiny_models["student"]), device="cpu"), load_tokenizer(str(tiny_models["student"]))
    got = validation_score(model, tokenizer, task, examples, references, Answering("completion", 8, 4, tuple(labels)))
    assert got == pytest.approx(want) and set(expected) <= set(labels)


def test_budget_spent_stops_the_search_with_a_clear_error(tmp_path, tiny_models):
    from distilflow.errors import StageError

    spec = tune_job(tmp_path, tiny_models)
    with pytest.raises(StageError, match="no trial finished .* a larger --budget-minutes may help"):
        Client(workspace=tmp_path / "ws").jobs.tune(load_spec(spec), trials=50, budget_minutes=0.001)
    # The teacher stage ran; no trial was started after the budget (of the 50 asked for).
    trials = study_trials(tmp_path / "ws" / "jobs" / "tuned")
    assert not any(t.state.name in ("COMPLETE", "PRUNED", "RUNNING") for t in trials)  # (the job's settings wait)


def test_settings_that_cannot_train_fail_their_trials_then_the_search(tmp_path, tiny_models):
    """sparse_kd without stored log-probs is refused by its preflight: three such trials in a row end the search
    with that sentence (a search over an impossible space must not loop)."""
    from distilflow.errors import StageError

    spec = tune_job(tmp_path, tiny_models, space={"method": {"choices": ["sparse_kd"]}})
    with pytest.raises(StageError, match="3 trials in a row failed .*sparse_kd learns from the teacher's stored"):
        Client(workspace=tmp_path / "ws").jobs.tune(load_spec(spec), trials=4)
    trials = study_trials(tmp_path / "ws" / "jobs" / "tuned")
    assert [t.state.name for t in trials] == ["FAIL"] * 3
