"""`distilflow tune JOB.yaml --trials N`: a search over the training settings of a job with Optuna.

The teacher stage runs once (or not at all: its answers are the job's, cached); each trial trains a student with
its settings in a folder of its own (tune/trial-N) on the same synthetic data and is scored on the validation
inputs only (scorer.py); TPE samples the next settings, the median pruner stops trials that lag after the same
number of evaluations. The study lives in the job's folder (Optuna's SQLite storage), so a killed search resumes:
finished trials are kept, the one that was running is tried again with the same settings. At the end the best
settings are written as best.yaml and the chosen student alone is scored on the test set (once)."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from distilflow.errors import DistilflowError, SpecError, StageError
from distilflow.fingerprint import digest
from distilflow.io import write_text_atomic
from distilflow.jobs.context import StageContext
from distilflow.jobs.lock import JobLock
from distilflow.pipeline.runner import already_running_message, run_job
from distilflow.jobs.store import JobStore
from distilflow.pipeline.stages import stage_fingerprints
from distilflow.prepare import prepare_inputs
from distilflow.jobspec import JobSpec, dump_spec
from distilflow.tune.report import summarize, write_summary
from distilflow.tune.space import own_settings, search_space, suggest, with_settings
from distilflow.workspace import JobPaths, Workspace

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)
FINISHED = ("COMPLETE", "PRUNED")


def tune_job(spec: JobSpec, workspace: Workspace, trials: int | None = None,
             budget_minutes: float | None = None) -> dict[str, Any]:
    """Run the search until `trials` trials have finished (counting those of earlier runs) or the budget is spent;
    returns the summary (also tune/summary.json)."""
    assert spec.name
    if not spec.validation_data:
        raise SpecError(f"job {spec.name!r}: tune scores each trial on the validation set; the job spec needs "
                        "validation_data")
    settings = spec.tune
    wanted = trials or (settings.trials if settings else 20)
    budget = budget_minutes or (settings.budget_minutes if settings else None)
    started = time.monotonic()
    run_job(spec, workspace, ["generate"], rerun=False)  # the teacher's answers: asked once, for every trial
    paths = workspace.job(spec.name)
    lock = JobLock(paths.lock)
    if not lock.acquire():
        raise DistilflowError(already_running_message(workspace, spec.name))
    try:
        inputs = prepare_inputs(spec)
        base = StageContext(spec, workspace, paths, None, inputs, stage_fingerprints(spec, inputs.data_hashes))
        study = _open_study(spec, paths, inputs.data_hashes)
        deadline = started + budget * 60 if budget else None
        _run_trials(base, study, wanted, deadline)
        summary = _finish(base, study, time.monotonic() - started)
    finally:
        lock.release()
    if JobStore(workspace.db_path).get(spec.name).stage("evaluate").status == "completed":
        run_job(spec, workspace, ["report"])  # the job's report gains the tuning section
    return summary


def _open_study(spec: JobSpec, paths: JobPaths, data_hashes: dict[str, str]) -> "optuna.Study":
    """The job's study (created, or loaded to resume); a trial a kill left running is failed and queued again."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    paths.tune.mkdir(parents=True, exist_ok=True)
    settings = spec.tune
    seed = settings.seed if settings else 0
    startup = settings.startup_trials if settings else 2
    pruner: optuna.pruners.BasePruner = (optuna.pruners.NopPruner() if settings and settings.pruner == "none" else
                                         optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0))
    storage = f"sqlite:///{paths.tune_study}"
    space = search_space(spec)
    # What the trials' scores depend on besides their settings: data, teacher, the job's other settings, the space.
    fingerprint = digest([stage_fingerprints(spec, data_hashes)["train"],
                          {k: v.model_dump() for k, v in space.items()}])
    if paths.tune_study.exists() and "tune" in optuna.get_all_study_names(storage):
        old = optuna.load_study(study_name="tune", storage=storage)
        if old.user_attrs.get("fingerprint") != fingerprint:
            log.info("tune: the job or its search space changed since the last search; starting a new one")
            optuna.delete_study(study_name="tune", storage=storage)
            for folder in paths.tune.glob("trial-*"):
                shutil.rmtree(folder, ignore_errors=True)
    study = optuna.create_study(study_name="tune", storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner, load_if_exists=True)
    study.set_user_attr("fingerprint", fingerprint)
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        log.info("trial %d was interrupted: it runs again with the same settings", stale.number)
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(stale.params, user_attrs={"retry_of": stale.number})
        shutil.rmtree(paths.trial(stale.number).root, ignore_errors=True)
    if not study.trials:
        own = own_settings(spec, space)
        if own is not None:
            study.enqueue_trial(own, user_attrs={"job_settings": True})
    return study


def _finished(study: "optuna.Study") -> int:
    return sum(t.state.name in FINISHED for t in study.get_trials(deepcopy=False))


MAX_FAILED_IN_A_ROW = 3  # trials whose settings cannot train: the space, not bad luck, is the problem


def _run_trials(base: StageContext, study: "optuna.Study", wanted: int, deadline: float | None) -> None:
    space = search_space(base.spec)
    failed_in_a_row = 0
    while _finished(study) < wanted:
        if deadline is not None and time.monotonic() >= deadline:
            log.info("tune: the time budget is spent after %d trials", _finished(study))
            return
        trial = study.ask()
        outcome = _run_trial(base, trial, suggest(trial, space), deadline)
        if outcome == "budget":
            return
        failed_in_a_row = failed_in_a_row + 1 if outcome == "failed" else 0
        if failed_in_a_row >= MAX_FAILED_IN_A_ROW:
            error = study.trials[trial.number].user_attrs.get("error")
            raise StageError(f"tune: {failed_in_a_row} trials in a row failed (the last: {error}); check tune.space")


def _run_trial(base: StageContext, trial: "optuna.Trial", settings: dict[str, Any], deadline: float | None) -> str:
    """Train and score one trial; tell the study how it ended. Returns complete | pruned | failed | budget."""
    import optuna

    from distilflow.train import preflight as train_preflight
    from distilflow.train import run_train
    from distilflow.tune.scorer import Answering, TrialScorer

    study, started = trial.study, time.monotonic()
    trial.set_user_attr("settings", settings)
    log.info("trial %d: %s", trial.number, ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                     for k, v in settings.items()))
    try:
        spec = with_settings(base.spec, settings, f"tune trial {trial.number}")
        train_preflight(spec)
    except DistilflowError as error:  # settings that cannot train together (e.g. kd with an API teacher)
        trial.set_user_attr("error", str(error))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return "failed"
    paths = base.paths.trial(trial.number)
    examples, references = _validation_set(base)
    how = Answering(spec.student.prompt_format, spec.evaluation.max_tokens, spec.evaluation.throughput_batch_size,
                    base.task.choices(spec.evaluation.answer_mode))
    scorer = TrialScorer(trial, base.task, examples, references, how, deadline)
    ctx = replace(base, spec=spec, paths=paths, fingerprints=stage_fingerprints(spec, base.inputs.data_hashes),
                  results={}, callbacks=[scorer])
    try:
        metrics = run_train(ctx)
    except DistilflowError as error:  # this trial's training failed (one sentence): the search goes on
        trial.set_user_attr("error", str(error))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        shutil.rmtree(paths.student, ignore_errors=True)
        return "failed"
    trial.set_user_attr("seconds", round(time.monotonic() - started, 2))
    trial.set_user_attr("steps", metrics.get("steps"))
    trial.set_user_attr("scores", [s for _, s in scorer.scores])
    if scorer.out_of_time:
        trial.set_user_attr("error", "stopped: the time budget was spent")
        shutil.rmtree(paths.student, ignore_errors=True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return "budget"
    if scorer.pruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        shutil.rmtree(paths.student, ignore_errors=True)  # a pruned student is never chosen
        return "pruned"
    study.tell(trial, scorer.last)
    _keep_best_student(base, study)
    return "complete"


def _validation_set(base: StageContext) -> tuple[list[Any], list[Any]]:
    """The validation inputs and what each is scored against: its reference, else the teacher's accepted answer."""
    from distilflow.io import iter_jsonl
    from distilflow.tasks import RowError

    teacher = {row["id"]: row["messages"][-1]["content"]
               for row in iter_jsonl(base.paths.synthetic_split("validation"))}
    examples, references = [], []
    for example in base.examples("validation"):
        reference = example.reference
        if reference is None and example.id in teacher:
            try:
                reference = base.task.reference_from_text(teacher[example.id])
            except RowError:
                continue
        if reference is not None:
            examples.append(example)
            references.append(reference)
    if not examples:
        raise StageError("tune: no validation input has a reference or an accepted teacher answer to score against")
    return examples, references


def _keep_best_student(base: StageContext, study: "optuna.Study") -> None:
    """Only the best trial's student is kept on disk (the others' scores are in the study)."""
    best = study.best_trial.number
    for trial in study.get_trials(deepcopy=False):
        if trial.number != best and trial.state.name == "COMPLETE":
            shutil.rmtree(base.paths.trial(trial.number).student, ignore_errors=True)


def _finish(base: StageContext, study: "optuna.Study", seconds: float) -> dict[str, Any]:
    """best.yaml, the chosen student's test score (once: a re-run finds it scored), the summary."""
    from distilflow.evaluate import run_evaluate

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        raise StageError("tune: no trial finished (see the trials' errors in tune/summary.json; a larger "
                         "--budget-minutes may help)")
    best = study.best_trial
    spec = with_settings(base.spec, best.user_attrs["settings"], "tune best trial")
    write_text_atomic(base.paths.best_spec, dump_spec(spec.model_copy(update={"tune": None})))
    test = None
    if base.examples("test"):
        evaluation = spec.evaluation.model_copy(update={"models": ["distilled"]})
        paths = base.paths.trial(best.number)
        ctx = replace(base, spec=spec.model_copy(update={"evaluation": evaluation}), paths=paths, results={})
        test = run_evaluate(ctx).get("distilled")
    summary = summarize(base, study, test, seconds)
    write_summary(base, summary)
    return summary
