"""Inputs too long for the student or the teacher (prepare): refused with file, line, length and limit, or cut
when `data.truncate: true`.

Lengths are the student tokenizer's tokens of the prompt's messages (the chat template adds a few more). The
limits are the student's training.max_seq_length and each teacher's context less generation.max_tokens (the
answer must fit beside the input). Counting loads the student's tokenizer, so it is done only for inputs that may
be over a limit: no tokenizer in use makes more tokens than the text has UTF-8 bytes, so a shorter input is
within every limit without being counted.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from distilflow.errors import DataError
from distilflow.jobspec import JobSpec
from distilflow.tasks import Example
from distilflow.teachers.token_estimate import teacher_context

KEEP_END_TOKENS = 32  # a cut input keeps its end (the task's instruction after the input, e.g. "Label:")
CUT = " … "
SHOWN = 3  # over-long rows named in the error (the count is always the whole count)


def input_limit(spec: JobSpec) -> tuple[int, str]:
    """The most tokens an input may have, and what sets it."""
    limits = [(spec.training.max_seq_length, f"the student's training.max_seq_length ({spec.training.max_seq_length:,})")]
    for teacher in spec.teacher_list():
        context = teacher_context(teacher)
        if context is not None and context > spec.generation.max_tokens:
            what = f"the teacher's context ({context:,}) less generation.max_tokens ({spec.generation.max_tokens:,})"
            limits.append((context - spec.generation.max_tokens, what))
    return min(limits)


def _byte_length(example: Example) -> int:
    return sum(len(m["content"].encode("utf-8")) for m in example.messages)


def _student_counter(spec: JobSpec) -> Any:
    from distilflow.models import load_tokenizer

    return load_tokenizer(spec.student.model)


def check_lengths(spec: JobSpec, examples: dict[str, list[Example]]) -> dict[str, Any]:
    """Refuse (DataError) or cut the inputs over the limit; what was cut, for the report and the fingerprints."""
    limit, what = input_limit(spec)
    maybe = [(split, i) for split, rows in examples.items() for i, e in enumerate(rows) if _byte_length(e) > limit]
    if not maybe:
        return {}
    tokenizer = _student_counter(spec)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    over = [(split, i, n) for split, i in maybe
            if (n := sum(count(m["content"]) for m in examples[split][i].messages)) > limit]
    if not over:
        return {}
    if not spec.data.truncate:
        shown = "; ".join(f"{examples[s][i].source_file}, line {examples[s][i].source_line}: {n:,} tokens"
                          for s, i, n in over[:SHOWN])
        more = f" (and {len(over) - SHOWN} more)" if len(over) > SHOWN else ""
        raise DataError(f"{len(over)} input{'s are' if len(over) > 1 else ' is'} longer than {what} tokens: "
                        f"{shown}{more}; shorten them, raise the limit, or set data.truncate: true to cut them")
    for split, i, n in over:
        example = examples[split][i]
        while n > limit:  # (a cut can merge into a token or two more at its edges: cut again)
            example = _cut(example, n - limit, tokenizer)
            n = sum(count(m["content"]) for m in example.messages)
        examples[split][i] = example
    return {"rows": len(over), "limit": limit, "limit_by": what,
            "ids": [examples[s][i].id for s, i, _ in over]}


def _cut(example: Example, excess: int, tokenizer: Any) -> Example:
    """The example with the middle of its longest message cut by `excess` tokens (and the cut mark's own)."""
    longest = max(range(len(example.messages)), key=lambda k: len(example.messages[k]["content"]))
    ids = tokenizer(example.messages[longest]["content"], add_special_tokens=False)["input_ids"]
    mark = len(tokenizer(CUT, add_special_tokens=False)["input_ids"])
    keep = max(0, len(ids) - excess - mark)
    tail = min(KEEP_END_TOKENS, keep // 2)
    text = tokenizer.decode(ids[:keep - tail]) + CUT + (tokenizer.decode(ids[-tail:]) if tail else "")
    messages = [dict(m) for m in example.messages]
    messages[longest]["content"] = text
    return replace(example, messages=messages)
