"""Training inputs written by a teacher (`inputs:`): from a description and a few seed rows, the writer writes
`inputs.count` new inputs, spread evenly over the task's targets (a classification task's labels), each request
with a sampled variation directive and a few sampled seeds; an optional rewrite round makes a share of them harder
or more specific. Every writing request goes through the one way to ask a teacher (ask.py: the job's teacher cache,
each answer committed as it arrives, so a re-run asks again for nothing). Written inputs that repeat each other or
come near any given input (training, validation or test) are dropped; the rest join the training inputs, with no
reference, and the teacher answers them like any other input (a written input the teacher labels otherwise keeps
the teacher's label, and is counted). synthetic/written_inputs.jsonl keeps each with its provenance.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from distilflow.errors import StageError
from distilflow.generate.ask import Row, ask_planned, known_plan
from distilflow.generate.directives import (
    Directive,
    parse_numbered,
    parse_rewrite,
    rewrite_messages,
    sample_directive,
    unusable,
    writing_messages,
)
from distilflow.io import iter_jsonl, write_jsonl_atomic
from distilflow.jobs.context import StageContext
from distilflow.jobspec import JobSpec
from distilflow.metrics.near_duplicates import NearDuplicateIndex
from distilflow.models import GenerationParams, Message
from distilflow.tasks import Example, Task, read_examples
from distilflow.teachers import TeacherRequest
from distilflow.teachers.base import request_fingerprint
from distilflow.teachers.cache import TeacherCache

WRITTEN_ID = "written-"
# Writing rounds: the first asks for the count (with a margin); later ones for what is still missing, at the yield
# the earlier rounds had. Measured with SmolLM2-135M (bench/written_inputs.py): a request asking for 8 inputs gave
# ~1.5 kept ones (the list ends at a blank line after an item or two, and a share are duplicates).
MAX_ROUNDS = 5
OVERASK = 1.2  # duplicates are common with small writers: ask 20% more than is missing
MIN_YIELD = 0.5  # kept inputs per request assumed at the least (a round that kept nothing does not ask forever)
WRITE_SPLIT, REWRITE_SPLIT = "write", "rewrite"  # the Row names of writing requests in a plan


@dataclass
class Planned:
    """One writing request before it is keyed: its prompt and what it is for."""

    target: str
    messages: list[Message]
    directive: Directive | None
    seeds: list[str]  # the ids of the seed rows it shows
    first_number: int  # completion form: the list number the writer continues


@dataclass
class Written:
    id: str
    text: str
    target: str
    request: str
    round: int
    directive: dict[str, str]
    seeds: list[str]
    rewritten_from: str | None = None


@dataclass
class Tally:
    kept: dict[str, list[Written]]
    dropped: Counter[str] = field(default_factory=Counter)
    dropped_rows: list[dict[str, Any]] = field(default_factory=list)
    failed_requests: int = 0


def seed_examples(spec: JobSpec, task: Task, train: Sequence[Example]) -> list[Example]:
    """The rows each request shows a few of: `inputs.seeds`, else the training rows."""
    if spec.inputs and spec.inputs.seeds:
        return read_examples(spec.inputs.seeds, task, "seed")
    return list(train)


def quotas(count: int, targets: Sequence[str]) -> dict[str, int]:
    """`count` spread evenly over the targets (the first ones take the remainder)."""
    base, extra = divmod(count, len(targets))
    return {target: base + (i < extra) for i, target in enumerate(targets)}


def writing_params(spec: JobSpec, prompt_format: str, first_number: int) -> GenerationParams:
    inputs = spec.inputs
    assert inputs is not None
    stop = (f"\n{first_number + inputs.per_request}.",) if prompt_format == "completion" else ()
    return GenerationParams(max_tokens=inputs.max_tokens, temperature=inputs.temperature, top_p=0.95,
                            seed=inputs.seed, stop=stop)


def plan_round(spec: JobSpec, task: Task, seeds: Sequence[Example], missing: dict[str, int], round_no: int,
               prompt_format: str, per_request: float | None = None) -> list[Planned]:
    """The writing requests of one round: enough for what each target misses, each with its own directive and
    seeds (chosen by inputs.seed, the round and the request: a re-run plans the same requests). `per_request`: the
    inputs a request is expected to keep (default: as many as it asks for)."""
    inputs = spec.inputs
    assert inputs is not None
    pools: dict[str, list[Example]] = {}
    for seed in seeds:
        target = task.answer_key(task.reference_answer(seed.reference)) if seed.reference is not None else None
        pools.setdefault(target or "", []).append(seed)
    planned = []
    for target, wanted in missing.items():
        pool = pools.get(target, []) + pools.get("", []) or list(seeds)  # a target without seeds of its own
        asked = math.ceil(wanted * OVERASK / max(MIN_YIELD, inputs.per_request if per_request is None else per_request))
        for i in range(asked):
            rng = random.Random(f"{inputs.seed}:{round_no}:{target}:{i}")
            shown = rng.sample(pool, min(inputs.seeds_per_request, len(pool)))
            directive = sample_directive(inputs, rng)
            messages = writing_messages(inputs, prompt_format, target, directive,
                                        [task.input_text(s) for s in shown])
            planned.append(Planned(target, messages, directive, [s.id for s in shown], len(shown) + 1))
    return planned


def keyed(planned: Sequence[Planned], spec: JobSpec, prompt_format: str, split: str,
          identity: dict[str, Any]) -> dict[Row, TeacherRequest]:
    return {(split, i): TeacherRequest(request_fingerprint(identity, p.messages,
                                                           writing_params(spec, prompt_format, p.first_number)),
                                       p.messages)
            for i, p in enumerate(planned)}


def given_index(ctx: StageContext, seeds: Sequence[Example]) -> NearDuplicateIndex:
    """Every given input (training, validation, test, the seed rows): what a written input must not come near."""
    index = NearDuplicateIndex(ctx.spec.data.near_duplicate_threshold)  # one threshold per job
    seen: set[str] = set()
    for split, rows in [*ctx.inputs.examples.items(), ("seed", seeds)]:
        for example in rows:
            text = ctx.task.input_text(example)
            if text not in seen:  # the seeds are often the training rows themselves
                seen.add(text)
                index.add(f"given:{split}:{example.id}", text)
    return index


def _judge(text: str, index: NearDuplicateIndex) -> str:
    """Why a written input is dropped ("" when it is kept)."""
    if unusable(text):
        return "unusable"
    found = index.matches(text)
    if any(key.startswith("given:") for key in found):
        return "near_given"
    return "duplicate" if found else ""


def _ask_round(ctx: StageContext, cache: TeacherCache, planned: list[Planned], split: str,
               description: str) -> tuple[dict[Row, TeacherRequest], int]:
    spec = ctx.spec
    assert spec.inputs is not None
    writer = spec.inputs.writer_spec(spec.teacher)
    fmt = writer.prompt_format
    params = writing_params(spec, fmt, 0)  # the plan's own (the requests carry their keys)
    run = ask_planned(ctx, writer, cache, description,
                      lambda identity: known_plan(params, keyed(planned, spec, fmt, split, identity), cache))
    return run.plan.requests, len(run.failures)


def _collect(ctx: StageContext, cache: TeacherCache, seeds: Sequence[Example], index: NearDuplicateIndex,
             tally: Tally, prompt_format: str) -> None:
    """Writing rounds until every target has its quota (or MAX_ROUNDS)."""
    spec = ctx.spec
    assert spec.inputs is not None
    quota = quotas(spec.inputs.count, ctx.task.write_targets() or ("",))
    asked, per_request = 0, None  # requests so far; inputs kept per request so far (None: none asked yet)
    for round_no in range(MAX_ROUNDS):
        missing = {t: n - len(tally.kept.get(t, [])) for t, n in quota.items() if n > len(tally.kept.get(t, []))}
        if not missing:
            return
        planned = plan_round(spec, ctx.task, seeds, missing, round_no, prompt_format, per_request)
        asked += len(planned)
        requests, failed = _ask_round(ctx, cache, planned, f"{WRITE_SPLIT}{round_no}", "writing inputs")
        tally.failed_requests += failed
        for (_, i), request in requests.items():
            answer, plan = cache.get(request.key), planned[i]
            if answer is None:
                continue
            items = parse_numbered(answer.texts[0], prompt_format, plan.first_number, spec.inputs.per_request)
            for text in items:
                mine = tally.kept.setdefault(plan.target, [])
                reason = _judge(text, index) or ("beyond_count" if len(mine) >= quota[plan.target] else "")
                if reason:
                    tally.dropped[reason] += 1
                    tally.dropped_rows.append({"text": text, "written_for": plan.target, "reason": reason,
                                               "request": request.key})
                    continue
                written_id = f"{WRITTEN_ID}{sum(len(v) for v in tally.kept.values()) + 1}"
                index.add(written_id, text)
                mine.append(Written(written_id, text, plan.target, request.key, round_no,
                                    plan.directive.as_dict() if plan.directive else {}, plan.seeds))
        per_request = sum(len(rows) for rows in tally.kept.values()) / asked


def _rewrite(ctx: StageContext, cache: TeacherCache, index: NearDuplicateIndex, tally: Tally,
             prompt_format: str) -> None:
    """The rewrite round: `inputs.rewrite` of the written inputs made harder or more specific. A rewrite that is
    unusable or comes near another input leaves the original in place."""
    inputs = ctx.spec.inputs
    assert inputs is not None
    every = [w for rows in tally.kept.values() for w in rows]
    chosen = random.Random(f"{inputs.seed}:rewrite").sample(every, round(len(every) * inputs.rewrite))
    if not chosen:
        return
    planned = [Planned(w.target, rewrite_messages(inputs, prompt_format, w.target, w.text), None, [], 0)
               for w in chosen]
    requests, failed = _ask_round(ctx, cache, planned, REWRITE_SPLIT, "rewriting inputs")
    tally.failed_requests += failed
    for (_, i), request in requests.items():
        answer, original = cache.get(request.key), chosen[i]
        text = parse_rewrite(answer.texts[0]) if answer is not None else ""
        near = [key for key in index.matches(text) if key != original.id] if text else []
        if not text or unusable(text) or near or text == original.text:
            tally.dropped["rewrite_kept_original"] += 1
            continue
        index.add(f"{original.id}:rewritten", text)
        original.rewritten_from, original.text, original.request = original.text, text, request.key


def write_inputs(ctx: StageContext) -> Tally:
    """Write, deduplicate and store the job's written inputs (synthetic/written_inputs.jsonl)."""
    spec = ctx.spec
    assert spec.inputs is not None
    seeds = seed_examples(spec, ctx.task, ctx.examples("train"))
    prompt_format = spec.inputs.writer_spec(spec.teacher).prompt_format
    index = given_index(ctx, seeds)
    tally = Tally(kept={})
    with TeacherCache(ctx.paths.teacher_cache) as cache:
        _collect(ctx, cache, seeds, index, tally, prompt_format)
        if spec.inputs.rewrite:
            _rewrite(ctx, cache, index, tally, prompt_format)
    rows = [_record(ctx.task, w) for target_rows in tally.kept.values() for w in target_rows]
    if not rows:
        raise StageError(f"the writer wrote no usable input ({dict(tally.dropped) or 'no answer'}; "
                         f"{tally.failed_requests} requests failed, reasons in the log); a stronger writer "
                         f"(inputs.writer), more seeds, or inputs.prompt_format: completion may help")
    write_jsonl_atomic(ctx.paths.written_inputs, rows)
    write_jsonl_atomic(ctx.paths.written_dropped, tally.dropped_rows)
    return tally


def _record(task: Task, w: Written) -> dict[str, Any]:
    return {**task.row_for_input(w.text), "id": w.id, "written_for": w.target or None, "round": w.round,
            "directive": w.directive, "seeds_shown": w.seeds, "request": w.request,
            **({"rewritten_from": w.rewritten_from} if w.rewritten_from else {})}


def written_examples(ctx: StageContext, tally: Tally) -> list[Example]:
    """The written inputs as training Examples, in written_inputs.jsonl's order (no reference: the teacher
    answers them)."""
    examples = []
    for line, w in enumerate((w for rows in tally.kept.values() for w in rows), 1):
        messages, _ = ctx.task.example_from_row(ctx.task.row_for_input(w.text))
        examples.append(Example(id=w.id, messages=messages, source_file=str(ctx.paths.written_inputs),
                                source_line=line, fields={"written_for": w.target}))
    return examples


def with_written_inputs(ctx: StageContext) -> tuple[StageContext, Tally]:
    """The stage's context with the written inputs after the given training inputs."""
    tally = write_inputs(ctx)
    examples = {**ctx.inputs.examples, "train": [*ctx.examples("train"), *written_examples(ctx, tally)]}
    return replace(ctx, inputs=replace(ctx.inputs, examples=examples)), tally


def written_figures(ctx: StageContext, tally: Tally) -> dict[str, Any]:
    """The stage metrics' `written_inputs`: asked for, kept, per label (the teacher's), dropped by reason, and how
    many the teacher labelled otherwise than they were written for."""
    assert ctx.spec.inputs is not None
    targets = {w.id: w.target for rows in tally.kept.values() for w in rows}
    by_label: Counter[str] = Counter()
    relabelled = answered = 0
    path = ctx.paths.synthetic_split("train")
    for row in iter_jsonl(path) if path.exists() else []:
        if row["id"] in targets and row.get("sample", 0) == 0:
            answered += 1
            label = ctx.task.answer_key(row["messages"][-1]["content"]) or ""
            if ctx.task.write_targets():
                by_label[label] += 1
                relabelled += label != targets[row["id"]]
    return {"requested": ctx.spec.inputs.count, "kept": len(targets), "by_label": dict(sorted(by_label.items())),
            "dropped": dict(tally.dropped), "written_for": {t: len(rows) for t, rows in tally.kept.items() if t},
            "relabelled": relabelled, "answered": answered, "failed_requests": tally.failed_requests}
