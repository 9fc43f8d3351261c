"""The judge in the evaluation stage (`evaluation.judge`): once every model has answered the test inputs, a judge
model compares each student's answers with the teacher's (pairwise, both orders) and/or scores every model's
answers on a rubric, and judges a control set that says whether it can be believed (controls.py).

A judge is a teacher section (any backend: OpenAI-compatible endpoints, a local model, recorded replies), asked
through the same backends as the teacher (teachers/: rate limits, retries, the circuit breaker, token usage), and
every reply is committed to the job's teacher cache the moment it arrives (keyed by the judge's identity, the
request and its parameters): a re-run, or a run after a crash, pays only for the replies it lacks. A judge that
cannot be reached fails the stage with one sentence; the models' results, written before the judge was asked,
stay in eval/ and are reused by the next run.

Writes eval/judge/NAME/verdicts.jsonl (every request, reply, verdict or score and reason) and eval/judge.json
(every judge's figures, the examples with their reasons, and the judges' agreement), which the report reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from distilflow.errors import DistilflowError, StageError
from distilflow.evaluate.judge_plan import JudgeItem, judge_identity, judge_params, plan_items, with_keys
from distilflow.evaluate.judge_score import judge_agreement, judge_examples, judge_figures, judged_categories
from distilflow.io import write_json_atomic, write_jsonl_atomic
from distilflow.jobspec import JudgeSpec
from distilflow.results import read_predictions
from distilflow.teachers import TeacherAnswer, TeacherFailure, TeacherRequest, load_teacher
from distilflow.teachers.cache import TeacherCache
from distilflow.workspace import JobPaths

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext


def model_answers(paths: JobPaths, labels: Sequence[str]) -> dict[str, dict[str, str]]:
    """label -> test example id -> the model's answer, from its predictions.jsonl (failed answers left out)."""
    answers = {}
    for label in labels:
        rows = read_predictions(paths.eval_predictions(label))
        if rows:
            answers[label] = {str(r["id"]): r.get("prediction") or "" for r in rows if r.get("error") is None}
    return answers


def judge_section(spec_judge: JudgeSpec, index: int, several: bool) -> str:
    """How the spec names this judge in messages: evaluation.judge, or evaluation.judge[N] in a list."""
    return "evaluation.judge" + (f"[{index}]" if several else "")


class _Asker:
    """Asks one judge for the replies the cache lacks, committing each as it arrives; counts tokens and cost."""

    def __init__(self, ctx: "StageContext", judge: JudgeSpec, section: str, cache: TeacherCache) -> None:
        self.ctx, self.judge, self.cache = ctx, judge, cache
        self.backend = load_teacher(judge, section=section)
        self.params = judge_params(judge)
        self.identity = judge_identity(self.backend.identity())
        self.usage = {"asked": 0, "answered": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def fill(self, items: Sequence[JudgeItem], retry: bool, description: str) -> None:
        """Each item's reply (its retry's with `retry`) from the cache, asking first for what is not there."""
        requests = {}
        for item in items:
            key, messages = (item.retry_key, item.retry_messages) if retry else (item.key, item.messages)
            requests.setdefault(key, TeacherRequest(key=key, messages=messages))
        known = self.cache.known_keys(requests)
        pending = [r for k, r in requests.items() if k not in known]
        if pending:
            self._ask(pending, len(known), len(requests), description)
        for item in items:
            stored = self.cache.get(item.retry_key if retry else item.key)
            if stored is not None:
                item.replies.append(stored.texts[0] if stored.texts else "")

    def _ask(self, pending: list[TeacherRequest], already: int, total: int, description: str) -> None:
        self.usage["asked"] += len(pending)
        with self.ctx.progress("evaluate", total, description) as progress:
            progress.update(already)
            for result in self.backend.generate(pending, self.params):
                if isinstance(result, TeacherFailure):
                    self.usage["failed"] += 1
                    continue
                assert isinstance(result, TeacherAnswer)
                self.cache.put_many([result])  # durable before the next reply is taken: never paid twice
                self.usage["answered"] += 1
                self.usage["prompt_tokens"] += result.prompt_tokens
                self.usage["completion_tokens"] += result.completion_tokens
                progress.advance()

    def stored_usage(self, items: Sequence[JudgeItem]) -> dict[str, Any]:
        """Tokens and cost of every stored reply this judge's figures rest on (across runs)."""
        keys = {i.key for i in items} | {i.retry_key for i in items if len(i.replies) > 1}
        prompt = completion = 0
        for key in keys:
            stored = self.cache.get(key)
            if stored is not None:
                prompt, completion = prompt + stored.prompt_tokens, completion + stored.completion_tokens
        cost = self.judge.cost_usd(prompt, completion)
        return {"requests": len(keys), "prompt_tokens": prompt, "completion_tokens": completion,
                **({"cost_usd": round(cost, 6)} if cost is not None else {}), "this_run": dict(self.usage)}

    def close(self) -> None:
        self.backend.close()


def run_one_judge(ctx: "StageContext", judge: JudgeSpec, section: str, answers: dict[str, dict[str, str]],
                  labels: Sequence[str]) -> tuple[dict[str, Any], list[JudgeItem]]:
    """Ask one judge everything it has to judge (each unreadable reply once more) and score its replies."""
    settings = ctx.spec.evaluation
    items, controls = plan_items(judge, ctx.task, ctx.examples("test"), answers)
    cache = TeacherCache(ctx.paths.teacher_cache)
    asker = None
    try:
        asker = _Asker(ctx, judge, section, cache)
        with_keys(items, asker.identity, asker.params)
        asker.fill(items, retry=False, description=f"judge {judge.name}")
        unreadable = [i for i in items if i.replies and not i.reading.readable]  # type: ignore[union-attr]
        if unreadable:
            asker.fill(unreadable, retry=True, description=f"judge {judge.name}: unreadable replies asked again")
        usage = asker.stored_usage(items)
    finally:
        if asker is not None:
            asker.close()
        cache.close()
    write_jsonl_atomic(ctx.paths.judge_verdicts(judge.name or "judge"), (_verdict_row(i) for i in items))
    figures = judge_figures(judge.name or "judge", judge.mode, items, controls, labels,
                            settings.bootstrap_samples, settings.bootstrap_seed)
    shown = [e.id for e in ctx.examples("test")[:settings.examples_in_report]]
    figures.update(model=judge.model, backend=judge.backend, base_url=judge.base_url, usage=usage,
                   examples=judge_examples(items, shown))
    return figures, items


def _verdict_row(item: JudgeItem) -> dict[str, Any]:
    reading = item.reading
    return {"kind": item.kind, "group": item.group, "id": item.example_id, "order": item.order, "key": item.key,
            "replies": item.replies, "verdict": reading.verdict if reading else None,
            "outcome": item.outcome if item.kind == "pairwise" else None,
            "score": reading.score if reading else None, "reason": reading.reason if reading else None,
            "readable": bool(reading and reading.readable), "retried": len(item.replies) > 1}


def run_judges(ctx: "StageContext", labels: Sequence[str]) -> dict[str, Any] | None:
    """Every judge of `evaluation.judge` on the models' answers; eval/judge.json; None (and no stale file) when
    the spec has no judge. A judge that cannot be asked stops the stage with one sentence."""
    judges = ctx.spec.evaluation.judges()
    if not judges:
        ctx.paths.judge_summary.unlink(missing_ok=True)
        return None
    answers = model_answers(ctx.paths, labels)
    several = isinstance(ctx.spec.evaluation.judge, list)
    figures, categories = {}, {}
    for index, judge in enumerate(judges):
        section = judge_section(judge, index, several)
        try:
            found, items = run_one_judge(ctx, judge, section, answers, labels)
        except DistilflowError as error:
            raise StageError(f"the judge {judge.name!r} ({section}) could not judge the answers: {error}; every "
                             f"model's answers and scores are kept in {ctx.paths.eval}, and the next run asks only "
                             f"the judge") from None
        figures[judge.name], categories[judge.name] = found, judged_categories(items, labels)
    first = next(iter(figures.values()))
    # The first judge's figures at the top (each model's also under its own label), every judge's under `judges`.
    summary = {**first, **first["models"], "judges": figures,
               "agreement": judge_agreement(categories) if several else []}
    write_json_atomic(ctx.paths.judge_summary, summary)
    return summary


def judge_headline(summary: dict[str, Any]) -> dict[str, Any]:
    """What the evaluate stage records of the (first) judge in the job store: its shares, retention, reliability."""
    models = summary.get("models") or {}
    out: dict[str, Any] = {"name": summary.get("name"), "reliable": (summary.get("controls") or {}).get("reliable")}
    for label, figures in models.items():
        if "win" in figures:
            out[label] = {k: figures[k] for k in ("win", "tie", "loss")}
    for label, interval in (summary.get("retention") or {}).items():
        out.setdefault(label, {})["judged_retention"] = interval.get("value")
    return out
