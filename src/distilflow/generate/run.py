"""Stage 2, generate, with one teacher (a team of one): it is asked for every training and validation input it has
not answered yet (ask.py: each answer is committed to the job's teacher cache as it arrives, so a crash re-pays at
most max_concurrency requests and a re-run asks only for what is missing); when all are in, the synthetic data set
is built from the cache (synthetic.py): a ranking teacher's label scores calibrated first (labels.py), and its
labels for the training inputs checked for label bias."""

from __future__ import annotations

from typing import Any

from distilflow.generate.ask import TeacherRun, ask_teacher, check_success, teacher_rows
from distilflow.generate.labels import Calibration, calibrated, fit_calibration, label_balance, save_calibration
from distilflow.generate.synthetic import RowAnswer, build_synthetic
from distilflow.io import write_jsonl_atomic
from distilflow.jobs.context import StageContext
from distilflow.teachers.cache import TeacherCache


def generate_stage(ctx: StageContext) -> dict[str, Any]:
    spec, examples = ctx.spec, ctx.inputs.examples
    with TeacherCache(ctx.paths.teacher_cache) as cache:
        run = ask_teacher(ctx, spec.teacher, cache, teacher_rows(spec, examples), "teacher answers")
        write_jsonl_atomic(ctx.paths.failed, run.failure_records(examples))
        check_success(spec, len(run.failures), len(run.plan.unique), ctx.paths.failed, "the teacher")
        calibration = fit_calibration(ctx, cache, run)
        answers = _answers_by_split(cache, run, calibration)
        raw = _answers_by_split(cache, run, None).get("train", []) if calibration is not None else []
        balance = label_balance(ctx, answers.get("train", []), raw)
        save_calibration(ctx, calibration)
        summary = build_synthetic(ctx, answers)
    this_run = {"answers": run.answers, "seconds": round(run.seconds, 3),
                "answers_per_s": round(run.answers / run.seconds, 2) if run.seconds > 0 else None,
                **run.usage, **run.stats, **({"answers_by_endpoint": run.by_endpoint} if run.by_endpoint else {})}
    labels = {**({"calibration": calibration.record()} if calibration else {}),
              **({"label_balance": balance} if balance else {})}
    return {**run.figures(), "this_run": this_run, **summary, **labels}


def _answers_by_split(cache: TeacherCache, run: TeacherRun,
                      calibration: Calibration | None) -> dict[str, list[RowAnswer | None]]:
    """Per split, each input's cached answer in order, calibrated where the job calibrates (None: it failed for
    good, in failed.jsonl)."""
    answers: dict[str, list[RowAnswer | None]] = {}
    for (split, _), request in run.plan.requests.items():
        stored = cache.get(request.key, with_logprobs=calibration is not None)
        answers.setdefault(split, []).append(None if stored is None else calibrated(stored, calibration))
    return answers
