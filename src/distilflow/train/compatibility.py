"""Checks that logit distillation (`kd`, `sparse_kd`) makes sense for this teacher and student, before any work.

Logit distillation compares the two models' probabilities token by token, so both must use one tokenizer
(same vocabulary and token -> id map; extra padding rows in an embedding are fine) and their chat templates
must put the answer at the same place. Otherwise the loss would silently train on garbage; `sft` works
across tokenizers. Each logit method's preflight picks the checks it needs.
"""

from __future__ import annotations

import os
from typing import Any

from distilflow.errors import DistilflowError
from distilflow.models import Message, render_chat
from distilflow.jobspec import JobSpec

SFT_HINT = "use training.method: sft, which works across tokenizers"
_PROBE_PROMPT: list[Message] = [{"role": "user", "content": "What is 2 + 2?"}]
_PROBE_ANSWER = "The answer is 4."
_PROBE_CONVERSATION: list[Message] = [*_PROBE_PROMPT, {"role": "assistant", "content": _PROBE_ANSWER}]


def check_one_tokenizer(teacher: Any, student: Any, method: str) -> None:
    """Teacher and student share one vocabulary, and each template puts the answer right after its prompt."""
    compare_vocabularies(teacher, student, method)
    for who, tokenizer in (("teacher", teacher), ("student", student)):
        check_answer_placement(tokenizer, who, method)


def other_tokenizer(teacher_model: str, student: Any) -> Any:
    """The teacher's tokenizer where it is not the student's (its targets are then aligned by text, alignment.py);
    None where both share one vocabulary."""
    from distilflow.models import load_tokenizer

    teacher = load_tokenizer(teacher_model)
    return None if teacher.get_vocab() == student.get_vocab() else teacher


def compare_vocabularies(teacher: Any, student: Any, method: str) -> None:
    teacher_vocab, student_vocab = teacher.get_vocab(), student.get_vocab()
    if teacher_vocab == student_vocab:
        return
    missing = sum(1 for token in teacher_vocab if token not in student_vocab)
    moved = sum(1 for token, i in teacher_vocab.items() if token in student_vocab and student_vocab[token] != i)
    raise DistilflowError(
        f"training.method {method} needs teacher and student to share one tokenizer, but their vocabularies differ "
        f"(teacher {len(teacher_vocab):,} tokens, student {len(student_vocab):,}; {missing:,} teacher tokens missing "
        f"from the student, {moved:,} mapped to other ids); logit distillation compares the models' probabilities "
        f"token by token, so {SFT_HINT}")


def check_answer_placement(tokenizer: Any, who: str, method: str) -> None:
    """The answer must follow the generation prompt verbatim (no reasoning block or rewriting in between)."""
    prompt = render_chat(tokenizer, _PROBE_PROMPT, generation_prompt=True)
    full = render_chat(tokenizer, _PROBE_CONVERSATION, generation_prompt=False)
    if not full.startswith(prompt + _PROBE_ANSWER):
        shared = len(os.path.commonprefix([prompt + _PROBE_ANSWER, full]))
        raise DistilflowError(
            f"training.method {method}: the {who}'s chat template does not place the answer right after its "
            f"generation prompt (it renders {full[shared:shared + 60]!r} there), so the teacher's token "
            f"probabilities cannot be matched to the answer's positions; {SFT_HINT}")


def compare_chat_templates(teacher: Any, student: Any, method: str = "kd") -> None:
    """kd feeds the student's tokens to the teacher: both templates must render a conversation identically."""
    teacher_text = render_chat(teacher, _PROBE_CONVERSATION, generation_prompt=False)
    student_text = render_chat(student, _PROBE_CONVERSATION, generation_prompt=False)
    if teacher_text != student_text:
        at = next((i for i, (a, b) in enumerate(zip(teacher_text, student_text)) if a != b),
                  min(len(teacher_text), len(student_text)))
        raise DistilflowError(
            f"training.method {method} gives the teacher the student's chat-formatted tokens, but their chat templates "
            f"place the answer differently (teacher renders {teacher_text[at:at + 40]!r} where the student renders "
            f"{student_text[at:at + 40]!r}); use models with the same chat template, or sparse_kd, or "
            f"training.method: sft, which works across tokenizers and templates")


def _vocab_size(ref: str) -> int | None:
    from transformers import AutoConfig

    from distilflow.models import local_model_dir

    try:
        config: Any = AutoConfig.from_pretrained(local_model_dir(ref))
    except (OSError, ValueError):
        return None
    return getattr(config.get_text_config(), "vocab_size", None)


def check_teacher_reads_student_tokens(spec: JobSpec, method: str) -> None:
    """Methods that feed the student's tokens to the teacher (kd, on_policy, layer matching): one tokenizer, one
    chat template, and heads that cover it."""
    from distilflow.models import load_tokenizer

    teacher_tokenizer = load_tokenizer(spec.teacher.model)  # the teacher must load anyway: let its error speak
    student_tokenizer = load_tokenizer(spec.student.model)
    check_one_tokenizer(teacher_tokenizer, student_tokenizer, method)
    compare_chat_templates(teacher_tokenizer, student_tokenizer, method)
    compare_model_vocab_sizes(spec, len(student_tokenizer), method)


def compare_model_vocab_sizes(spec: JobSpec, tokenizer_size: int, method: str = "kd") -> None:
    """Each model's head must cover the tokenizer (rows beyond it are padding and are left out of the loss)."""
    for who, ref in (("teacher", spec.teacher.model), ("student", spec.student.model)):
        size = _vocab_size(ref)
        if size is not None and size < tokenizer_size:
            raise DistilflowError(
                f"training.method {method}: the {who} model's vocabulary ({size:,} rows) is smaller than its tokenizer "
                f"({tokenizer_size:,} tokens); the tokenizer does not belong to this model; {SFT_HINT}")
