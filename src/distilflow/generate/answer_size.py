"""Answers longer than `generation.max_tokens`: rejected with reason `too_long`, and never stored whole.

A server that ignores max_tokens (a misconfigured proxy, a buggy local server) can answer megabytes to a request
for 8 tokens; kept whole, such answers fill the teacher cache, synthetic/ and rejected.jsonl. Each answer is
measured before it is committed to the cache; one that is too long is replaced there by a short preview that
ends with CUT_MARK, so a re-run neither asks again nor stores more.

Counted in tokens of the answer's text: the estimate of teachers/token_estimate.py (tiktoken's o200k_base when it
is installed, else characters / 4). The API's own completion_tokens is not used: it covers every sample of a
request at once and, for reasoning models, hidden reasoning tokens a short answer does not contain. An estimate
from another tokenizer can be off for an answer the server cut at exactly max_tokens, so an answer is too long
only beyond twice max_tokens plus 16 tokens: the guard is against runaway sizes, not against a token or two.
Not the student's tokenizer either: it is not the teacher's, and a small one counts far more tokens than the
teacher made (the tests' 512-entry BPE makes a token of 1.5 characters), which would reject answers cut right.
"""

from __future__ import annotations

import re
from dataclasses import replace

from distilflow.teachers.base import TeacherAnswer
from distilflow.teachers.token_estimate import token_counter

TOO_LONG = "too_long"
PREVIEW_CHARS = 500  # what is kept of a too-long answer (cache, rejected.jsonl): enough to see what went wrong
_SLACK_FACTOR, _SLACK_TOKENS = 2, 16
_CUT = re.compile(r" …\[cut by distilflow: [\d,]+ characters, over generation\.max_tokens\]$")


def cut_mark(chars: int) -> str:
    return f" …[cut by distilflow: {chars:,} characters, over generation.max_tokens]"


def answer_too_long(text: str, max_tokens: int | None) -> bool:
    """Whether an answer is over `max_tokens` (see the module's note on counting), or is a preview of one that
    was (it carries CUT_MARK; max_tokens None: only that)."""
    if _CUT.search(text[-100:]):
        return True
    if max_tokens is None:
        return False
    bound = _SLACK_FACTOR * max_tokens + _SLACK_TOKENS
    if len(text) <= bound:  # no tokenizer makes more tokens than characters of ordinary text: nothing to count
        return False
    if len(text) > 64 * bound:  # far beyond any tokenizer's characters per token: not worth counting
        return True
    return token_counter()[0](text) > bound


def preview(text: str) -> str:
    """What is kept of a too-long answer: its start and CUT_MARK with its whole length (itself when cut already)."""
    return text if _CUT.search(text[-100:]) else text[:PREVIEW_CHARS] + cut_mark(len(text))


def clip_oversized(answer: TeacherAnswer, max_tokens: int) -> TeacherAnswer:
    """The answer as the cache stores it: each too-long sample replaced by its preview (finish reason too_long,
    no log-probs); the answer itself when every sample fits."""
    cut = [i for i, text in enumerate(answer.texts) if answer_too_long(text, max_tokens)]
    if not cut:
        return answer
    texts = [preview(t) if i in cut else t for i, t in enumerate(answer.texts)]
    reasons = list(answer.finish_reasons) + [""] * (len(texts) - len(answer.finish_reasons))
    for i in cut:
        reasons[i] = TOO_LONG
    top = answer.top_logprobs
    if top is not None:
        top = [replace(sample, logprobs=[], token_ids=None, tokens=None) if i in cut else sample
               for i, sample in enumerate(top)]
    return replace(answer, texts=texts, finish_reasons=reasons, top_logprobs=top)
