"""Asking one teacher for a set of inputs: the procedure every path of the teacher stage shares. One teacher is a
team of one (run.py), several teachers are asked one after another (team.py), and the dry run (estimate.py) stops
before asking.

inputs -> their requests (teachers/requests.py builds them) -> the keys the teacher cache already answers -> what is
pending -> asked, each answer committed to the cache as it arrives, before the next one is taken (remote teachers
keep a request's concurrency slot until then, so a crash re-pays at most max_concurrency requests); a re-run asks
only for what is missing.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilflow.errors import StageError
from distilflow.generate.answer_size import clip_oversized
from distilflow.generate.combine import route_of
from distilflow.jobs.context import StageContext
from distilflow.jobspec import JobSpec, TeacherSpec
from distilflow.tasks import Example, Task
from distilflow.teachers import GenerationParams, Teacher, TeacherFailure, TeacherRequest, load_teacher
from distilflow.teachers.cache import TeacherCache
from distilflow.teachers.requests import build_requests, content_free_requests, teacher_plan

log = logging.getLogger(__name__)
TEACHER_SPLITS = ("train", "validation")  # the splits the teacher answers (test stays unseen until evaluation)
Row = tuple[str, int]  # an input: (split, its index in that split)
Examples = Mapping[str, Sequence[Example]]  # split -> its inputs (PreparedInputs.examples)
_NOTE_EVERY_S = 0.25  # the live progress line is rebuilt at most this often (it must not slow the stage)


def teacher_rows(spec: JobSpec, examples: Examples, teacher: int | None = None) -> list[Row]:
    """The inputs a teacher answers: every training and validation input; under combine route, only those whose
    rule picks teacher number `teacher` (its place in `teachers:`)."""
    rows = [(split, i) for split in TEACHER_SPLITS for i in range(len(examples.get(split, ())))]
    if spec.combine == "route" and spec.teachers and teacher is not None:
        rows = [row for row in rows if route_of(examples[row[0]][row[1]], spec.teachers) == teacher]
    return rows


@dataclass
class RequestPlan:
    """What one teacher is to be asked for a set of inputs."""

    params: GenerationParams
    requests: dict[Row, TeacherRequest]  # each input's request
    unique: dict[str, TeacherRequest]  # the distinct prompts, by cache key (inputs may share one)
    known: set[str]  # the keys the cache already answers
    extra: list[TeacherRequest] = field(default_factory=list)  # asked besides the inputs (content-free calibration)

    @property
    def pending(self) -> list[TeacherRequest]:
        return [request for key, request in self.unique.items() if key not in self.known]

    def rows_by_split(self) -> dict[str, int]:
        """How many inputs of each split are asked (splits with none left out)."""
        return dict(Counter(split for split, _ in self.requests))


def plan_requests(spec: JobSpec, task: Task, examples: Examples, rows: Sequence[Row], identity: dict[str, Any],
                  cache: TeacherCache | None) -> RequestPlan:
    """The requests of `rows` for the teacher of `identity`, and which of them `cache` (None: none yet) knows."""
    params, shots = teacher_plan(spec, task, examples.get("train", []))
    requests: dict[Row, TeacherRequest] = {}
    for split in TEACHER_SPLITS:
        mine = [row for row in rows if row[0] == split]
        requests.update(zip(mine, build_requests([examples[split][i] for _, i in mine], spec, identity, params,
                                                 shots)))
    extra = content_free_requests(spec, task, identity, params, shots) if rows else []
    unique = {request.key: request for request in [*requests.values(), *extra]}
    known = cache.known_keys(unique) if cache is not None else set()
    return RequestPlan(params, requests, unique, known, extra)


@dataclass
class TeacherRun:
    """One teacher asked for its inputs: the plan, what failed, and what this run and the whole stage cost."""

    spec: TeacherSpec
    plan: RequestPlan
    failures: dict[str, TeacherFailure]  # by cache key, in the order they were given up on
    usage: dict[str, Any]  # this run's tokens (and cost)
    totals: dict[str, int]  # the tokens of every stored answer of these requests (across resumes)
    seconds: float  # spent asking
    stats: dict[str, int]  # the teacher's own counts (requests, retries, errors by kind)
    by_endpoint: dict[str, int]  # answers per endpoint (several endpoints of one teacher)

    @property
    def answers(self) -> int:
        """Answers this run received."""
        return len(self.plan.pending) - len(self.failures)

    def figures(self) -> dict[str, Any]:
        """The teacher's figures in the stage's metrics: requests, cached before, failed, tokens and cost."""
        cost = self.spec.cost_usd(self.totals["prompt_tokens"], self.totals["completion_tokens"])
        return {"requests": len(self.plan.unique), "cached_before": len(self.plan.known),
                "failed": len(self.failures), **self.totals, **({"cost_usd": round(cost, 6)} if cost is not None else {})}

    def failure_records(self, examples: Examples, teacher: str | None = None) -> list[dict[str, Any]]:
        """failed.jsonl's records: each failed prompt with its reason and messages; with several teachers the
        `teacher`'s name comes first, with one the ids of the inputs that share the prompt."""
        ids_by_key: dict[str, list[str]] = {}
        for (split, i), request in self.plan.requests.items():
            ids_by_key.setdefault(request.key, []).append(examples[split][i].id)
        who = {} if teacher is None else {"teacher": teacher}
        return [{**who, "key": failure.key, **({"ids": ids_by_key.get(failure.key, [])} if teacher is None else {}),
                 "reason": failure.reason, "messages": self.plan.unique[failure.key].messages}
                for failure in self.failures.values()]


def ask_teacher(ctx: StageContext, spec: TeacherSpec, cache: TeacherCache, rows: Sequence[Row],
                description: str) -> TeacherRun:
    """Ask the teacher of `spec` for what `cache` lacks of `rows`, committing each answer as it arrives."""
    return ask_planned(ctx, spec, cache, description, lambda identity: plan_requests(
        ctx.spec, ctx.task, ctx.inputs.examples, rows, identity, cache))


def known_plan(params: GenerationParams, requests: dict[Row, TeacherRequest], cache: TeacherCache | None) -> RequestPlan:
    """A plan of requests built elsewhere (the inputs writer's), with the keys `cache` already answers."""
    unique = {request.key: request for request in requests.values()}
    return RequestPlan(params, requests, unique, cache.known_keys(unique) if cache is not None else set())


def ask_planned(ctx: StageContext, spec: TeacherSpec, cache: TeacherCache, description: str,
                plan_for: Callable[[dict[str, Any]], RequestPlan]) -> TeacherRun:
    """Ask the teacher of `spec` for the pending requests of the plan `plan_for(its identity)` makes: the one way
    every caller (the teacher's answers, the inputs writer) asks, each answer committed as it arrives."""
    teacher = load_teacher(spec)
    try:
        plan = plan_for(teacher.identity())
        pending = plan.pending
        log.info("%s: %d prompts, %d already answered, %d to ask", description, len(plan.unique), len(plan.known),
                 len(pending))
        started = time.monotonic()
        failures, usage = _ask(ctx, teacher, spec, cache, plan, description)
        seconds = time.monotonic() - started
        stats, by_endpoint = teacher.stats(), teacher.answers_by_endpoint()
    finally:
        teacher.close()
    return TeacherRun(spec, plan, failures, usage, cached_usage(cache, plan.unique), seconds, stats, by_endpoint)


def _ask(ctx: StageContext, teacher: Teacher, spec: TeacherSpec, cache: TeacherCache, plan: RequestPlan,
         description: str) -> tuple[dict[str, TeacherFailure], dict[str, Any]]:
    """Ask for `plan`'s pending requests under a progress bar; its failures and this run's tokens and cost."""
    failures: dict[str, TeacherFailure] = {}
    usage: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0}
    already = len(plan.known)
    started, last_note = time.monotonic(), 0.0
    with ctx.progress("generate", len(plan.unique), description) as progress:
        progress.update(already)
        for result in teacher.generate(plan.pending, plan.params):
            if isinstance(result, TeacherFailure):
                failures[result.key] = result
            else:
                result = clip_oversized(result, plan.params.max_tokens)  # a runaway answer is not stored whole
                cache.put_many([result])  # committed (durable) before it counts and before the next is taken
                usage["prompt_tokens"] += result.prompt_tokens
                usage["completion_tokens"] += result.completion_tokens
                progress.advance()
            now = time.monotonic()
            if now - last_note >= _NOTE_EVERY_S:
                last_note = now
                progress.note(_live_note(spec, progress.done - already, now - started, usage,
                                         len(failures), teacher.stats()))
        progress.note(_live_note(spec, progress.done - already, time.monotonic() - started, usage,
                                 len(failures), teacher.stats()))
    cost = spec.cost_usd(usage["prompt_tokens"], usage["completion_tokens"])
    if cost is not None:
        usage["cost_usd"] = round(cost, 6)
    return failures, usage


def cached_usage(cache: TeacherCache, keys: Iterable[str]) -> dict[str, int]:
    """Tokens of every stored answer of these keys (what the teacher stage cost, across resumes)."""
    totals = {"prompt_tokens": 0, "completion_tokens": 0}
    for key in keys:
        answer = cache.get(key)
        if answer is not None:
            totals["prompt_tokens"] += answer.prompt_tokens
            totals["completion_tokens"] += answer.completion_tokens
    return totals


def check_success(spec: JobSpec, failed: int, total: int, failed_file: Path, who: str) -> None:
    """The stage fails when more of its `total` inputs than generation.min_success_ratio allows got no answer
    (`who`: "the teacher" / "the teachers"); the answers are kept in the cache either way."""
    ratio = (total - failed) / total if total else 1.0
    if ratio < spec.generation.min_success_ratio:
        raise StageError(
            f"{who} failed on {failed} of {total} inputs ({1 - ratio:.0%}), more than "
            f"generation.min_success_ratio={spec.generation.min_success_ratio:g} allows; the {total - failed} answers "
            f"are kept and a re-run asks only for the rest (reasons in {failed_file})")


def _live_note(teacher: TeacherSpec, answered: int, seconds: float, usage: dict[str, Any], failed: int,
               stats: dict[str, int]) -> str:
    """`318.2 rows/s avg · tokens 12,340 in / 45,600 out · $0.0123 · errors 4 (retries 4) · failed 1` (this run)."""
    parts = [f"{answered / seconds:,.1f} rows/s avg" if seconds > 0 else "- rows/s",
             f"tokens {usage['prompt_tokens']:,} in / {usage['completion_tokens']:,} out"]
    cost = teacher.cost_usd(usage["prompt_tokens"], usage["completion_tokens"])
    if cost is not None:
        parts.append(f"${cost:,.4f}")
    errors = sum(v for k, v in stats.items() if k in ("rate_limited", "server_errors", "timeouts", "unreachable",
                                                      "connection_errors", "malformed", "api_errors"))
    if errors:
        parts.append(f"errors {errors} (retries {stats.get('retries', 0)})")
    if failed:
        parts.append(f"failed {failed}")
    return " · ".join(parts)
