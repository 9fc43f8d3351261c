"""The teacher stage with several teachers (`teachers:`): each teacher is asked, as one teacher is (ask.py), for the
inputs generation.combine gives it (vote: all; best_of: those no earlier teacher answered acceptably; route: those
its rule picks); its answers are committed to the one teacher cache under its own keys (a teacher added later is
the only one asked), then each input's answers are combined (combine.py) and the synthetic set is built as for one
teacher.

The stage's metrics hold, per teacher, what it was asked, what it cost, how often it agreed with the references,
and its share of the kept answers; and the teachers' agreement matrix."""

from __future__ import annotations

import time
from typing import Any

from distilflow.generate.ask import TEACHER_SPLITS, Row, TeacherRun, ask_teacher, check_success, teacher_rows
from distilflow.generate.combine import AgreementMatrix, Vote, passes, vote
from distilflow.generate.labels import label_balance
from distilflow.generate.synthetic import RowAnswer, build_synthetic
from distilflow.io import write_jsonl_atomic
from distilflow.jobs.context import StageContext
from distilflow.jobspec import TeamTeacherSpec
from distilflow.teachers.cache import TeacherCache


def team_stage(ctx: StageContext) -> dict[str, Any]:
    spec = ctx.spec
    assert spec.teachers
    rows = teacher_rows(spec, ctx.inputs.examples)
    votes: dict[Row, list[Vote]] = {row: [] for row in rows}
    per_teacher: dict[str, dict[str, Any]] = {}
    failed: list[dict[str, Any]] = []
    started = time.monotonic()
    with TeacherCache(ctx.paths.teacher_cache) as cache:
        for index, teacher in enumerate(spec.teachers):
            run = ask_teacher(ctx, teacher, cache, _rows_for(ctx, index, rows, votes), f"answers from {teacher.name}")
            per_teacher[teacher.name] = _figures(ctx, teacher, run, cache, votes)
            failed += run.failure_records(ctx.inputs.examples, teacher.name)
        answers, matrix = _combine(ctx, rows, votes)
        balance = label_balance(ctx, answers.get("train", []))  # the combined labels, before training on them
        write_jsonl_atomic(ctx.paths.failed, failed)
        asked = [row for row in rows if votes[row]]
        unanswered = sum(not any(v.texts for v in votes[row]) for row in asked)
        check_success(spec, unanswered, len(asked), ctx.paths.failed, "the teachers")
        summary = build_synthetic(ctx, answers)
    kept = summary.get("kept_by_teacher", {})
    for name, figures in per_teacher.items():
        figures["kept"] = kept.get(name, 0)
        figures["kept_share"] = round(kept.get(name, 0) / max(1, sum(kept.values())), 4)
    totals = {key: sum(f[key] for f in per_teacher.values()) for key in
              ("requests", "cached_before", "failed", "prompt_tokens", "completion_tokens")}
    costs = [f["cost_usd"] for f in per_teacher.values() if "cost_usd" in f]
    return {**totals, **({"cost_usd": round(sum(costs), 6)} if costs else {}), "combine": spec.combine,
            "teachers": per_teacher, "agreement_matrix": matrix.as_dict(),
            "this_run": {"seconds": round(time.monotonic() - started, 3),
                         "answers": sum(f["this_run"]["answers"] for f in per_teacher.values())}, **summary,
            **({"label_balance": balance} if balance else {})}


def _rows_for(ctx: StageContext, index: int, rows: list[Row], votes: dict[Row, list[Vote]]) -> list[Row]:
    """The inputs teacher `index` answers under generation.combine."""
    spec = ctx.spec
    if spec.combine == "best_of":  # the cascade: only where every earlier teacher failed or was rejected
        verify = spec.generation.verify
        return [r for r in rows if not any(passes(ctx.task, v.texts, ctx.examples(r[0])[r[1]].reference, verify)
                                           for v in votes[r])]
    return teacher_rows(spec, ctx.inputs.examples, index)  # route: the rows its rule picks; vote: all


def _figures(ctx: StageContext, teacher: TeamTeacherSpec, run: TeacherRun, cache: TeacherCache,
             votes: dict[Row, list[Vote]]) -> dict[str, Any]:
    """Record the teacher's answers as votes; its figures in the stage's metrics."""
    for row, request in run.plan.requests.items():
        answer = cache.get(request.key)
        votes[row].append(Vote(teacher.name, teacher.weight, request.key, answer.texts if answer else None))
    return {"model": teacher.model, "backend": teacher.backend, "weight": teacher.weight,
            "asked": len(run.plan.requests), **run.figures(),
            "reference_agreement": _reference_agreement(ctx, teacher.name, votes),
            "this_run": {"answers": run.answers, **run.usage, **run.stats}}


def _reference_agreement(ctx: StageContext, name: str, votes: dict[Row, list[Vote]]) -> dict[str, Any] | None:
    """How often this teacher's answer passes the task's checks against the row's reference (its quality on the
    training and validation inputs that have one)."""
    agree = n = 0
    for (split, i), row_votes in votes.items():
        reference = ctx.examples(split)[i].reference
        mine = next((v for v in row_votes if v.teacher == name and v.texts), None)
        if mine is not None and reference is not None:
            n += 1
            agree += ctx.task.check_teacher_answer(mine.texts[0], reference, True) is None  # type: ignore[index]
    return {"rate": round(agree / n, 4), "n": n} if n else None


def _combine(ctx: StageContext, rows: list[Row],
             votes: dict[Row, list[Vote]]) -> tuple[dict[str, list[RowAnswer | None]], AgreementMatrix]:
    """Each input's answer under generation.combine (None: no teacher answered it)."""
    spec, task = ctx.spec, ctx.task
    assert spec.teachers
    matrix = AgreementMatrix([t.name for t in spec.teachers])
    answers: dict[str, list[RowAnswer | None]] = {split: [] for split in TEACHER_SPLITS if ctx.examples(split)}
    for row in rows:
        row_votes, example = votes[row], ctx.examples(row[0])[row[1]]
        matrix.add(task, row_votes)
        answered = [v for v in row_votes if v.texts]
        answer: RowAnswer | None = None
        if spec.combine == "route" and not row_votes:
            answer = RowAnswer("", [], rejected="no_route")
        elif spec.combine == "vote" and answered:
            kept, record = vote(task, row_votes)
            chosen = kept or answered[0]  # no key at all (nothing parseable): the task's own checks say why
            no_majority = kept is None and "agreement" in record
            answer = RowAnswer(chosen.key, chosen.texts or [], record, "no_majority" if no_majority else "")
        elif answered:  # best_of: the first acceptable answer, else the last one (rejected with its own reason)
            verify = spec.generation.verify
            chosen = next((v for v in answered if passes(task, v.texts, example.reference, verify)), answered[-1])
            answer = RowAnswer(chosen.key, chosen.texts or [], {"teacher": chosen.teacher,
                                                                "asked": [v.teacher for v in row_votes]})
        answers[row[0]].append(answer)
    return answers, matrix
