"""The teacher stage with several teachers (`teachers:`): each teacher is asked for the inputs generation.combine
gives it (vote: all; best_of: those no earlier teacher answered acceptably; route: those its rule picks), its
answers are committed to the one teacher cache under its own keys (a teacher added later is the only one asked),
then each input's answers are combined (combine.py) and the synthetic set is built as for one teacher.

The stage's metrics hold, per teacher, what it was asked, what it cost, how often it agreed with the references,
and its share of the kept answers; and the teachers' agreement matrix."""

from __future__ import annotations

import logging
import time
from typing import Any

from distilflow.errors import StageError
from distilflow.generate.combine import AgreementMatrix, Vote, passes, route_of, vote
from distilflow.generate.run import TEACHER_SPLITS, ask_teacher, cached_usage
from distilflow.generate.synthetic import RowAnswer, build_synthetic
from distilflow.io import write_jsonl_atomic
from distilflow.jobs.context import StageContext
from distilflow.jobspec import TeamTeacherSpec
from distilflow.teachers import GenerationParams, TeacherRequest, load_teacher
from distilflow.teachers.cache import TeacherCache
from distilflow.teachers.requests import build_requests, teacher_plan

log = logging.getLogger(__name__)
Row = tuple[str, int]  # (split, index of the input in that split)


def team_stage(ctx: StageContext) -> dict[str, Any]:
    spec = ctx.spec
    assert spec.teachers
    params, shots = teacher_plan(spec, ctx.task, ctx.examples("train"))
    rows = [(split, i) for split in TEACHER_SPLITS for i in range(len(ctx.examples(split)))]
    votes: dict[Row, list[Vote]] = {row: [] for row in rows}
    per_teacher: dict[str, dict[str, Any]] = {}
    failed: list[dict[str, Any]] = []
    started = time.monotonic()
    with TeacherCache(ctx.paths.teacher_cache) as cache:
        for index, teacher in enumerate(spec.teachers):
            wanted = _rows_for(ctx, index, rows, votes)
            per_teacher[teacher.name] = _ask(ctx, teacher, cache, params, shots, wanted, votes, failed)
        answers, matrix = _combine(ctx, rows, votes)
        write_jsonl_atomic(ctx.paths.failed, failed)
        _check_success(ctx, rows, votes)
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
                         "answers": sum(f["this_run"]["answers"] for f in per_teacher.values())}, **summary}


def _rows_for(ctx: StageContext, index: int, rows: list[Row], votes: dict[Row, list[Vote]]) -> list[Row]:
    """The inputs teacher `index` answers under generation.combine."""
    spec = ctx.spec
    assert spec.teachers
    if spec.combine == "route":
        return [r for r in rows if route_of(ctx.examples(r[0])[r[1]], spec.teachers) == index]
    if spec.combine == "best_of":  # the cascade: only where every earlier teacher failed or was rejected
        verify = spec.generation.verify
        return [r for r in rows if not any(passes(ctx.task, v.texts, ctx.examples(r[0])[r[1]].reference, verify)
                                           for v in votes[r])]
    return rows


def _ask(ctx: StageContext, spec: TeamTeacherSpec, cache: TeacherCache, params: GenerationParams,
         shots: list[Any], wanted: list[Row], votes: dict[Row, list[Vote]],
         failed: list[dict[str, Any]]) -> dict[str, Any]:
    """Ask one teacher for `wanted` (what its cache lacks); record its answers as votes; its figures."""
    teacher = load_teacher(spec)
    try:
        identity = teacher.identity()
        requests: dict[Row, TeacherRequest] = {}
        for split in TEACHER_SPLITS:
            mine = [r for r in wanted if r[0] == split]
            built = build_requests([ctx.examples(split)[i] for _, i in mine], ctx.spec, identity, params, shots)
            requests.update(zip(mine, built))
        unique = {r.key: r for r in requests.values()}
        known = cache.known_keys(unique)
        pending = [r for key, r in unique.items() if key not in known]
        log.info("teacher %s: %d inputs, %d already answered, %d to ask", spec.name, len(unique), len(known),
                 len(pending))
        failures, usage = ask_teacher(ctx, teacher, cache, pending, params, already=len(known), total=len(unique),
                                      spec=spec, description=f"answers from {spec.name}")
        stats = teacher.stats()
    finally:
        teacher.close()
    for row, request in requests.items():
        answer = cache.get(request.key)
        votes[row].append(Vote(spec.name, spec.weight, request.key, answer.texts if answer else None))
    failed += [{"teacher": spec.name, "key": f.key, "reason": f.reason, "messages": unique[f.key].messages}
               for f in failures.values()]
    totals = cached_usage(cache, unique)
    cost = spec.cost_usd(totals["prompt_tokens"], totals["completion_tokens"])
    return {"model": spec.model, "backend": spec.backend, "weight": spec.weight, "asked": len(requests),
            "requests": len(unique), "cached_before": len(known), "failed": len(failures), **totals,
            **({"cost_usd": round(cost, 6)} if cost is not None else {}),
            "reference_agreement": _reference_agreement(ctx, spec.name, votes),
            "this_run": {"answers": len(pending) - len(failures), **usage, **stats}}


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


def _check_success(ctx: StageContext, rows: list[Row], votes: dict[Row, list[Vote]]) -> None:
    """The stage fails when more inputs than generation.min_success_ratio allows got no answer from any teacher."""
    asked = [r for r in rows if votes[r]]
    answered = sum(any(v.texts for v in votes[r]) for r in asked)
    ratio = answered / len(asked) if asked else 1.0
    if ratio < ctx.spec.generation.min_success_ratio:
        raise StageError(
            f"the teachers failed on {len(asked) - answered} of {len(asked)} inputs ({1 - ratio:.0%}), more than "
            f"generation.min_success_ratio={ctx.spec.generation.min_success_ratio:g} allows; the answers are kept "
            f"and a re-run asks only for the rest (reasons in {ctx.paths.failed})")
