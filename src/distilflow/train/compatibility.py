"""Checks that logit distillation (`kd`, `sparse_kd`) makes sense for this teacher and student, before any work.

Logit distillation compares the two models' probabilities token by token, so both must use one tokenizer
(same vocabulary and token -> id map; extra padding rows in an embedding are fine) and their chat templates
must put the answer at the same place. Otherwise the loss would silently train on garbage; `sft` works
across tokenizers.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from distilflow.errors import DistilflowError, SpecError
from distilflow.spec import JobSpec

log = logging.getLogger(__name__)

SFT_HINT = "use training.method: sft, which works across tokenizers"
_PROBE_PROMPT = [{"role": "user", "content": "What is 2 + 2?"}]
_PROBE_ANSWER = "The answer is 4."


def check_spec(spec: JobSpec) -> None:
    """Settings a logit method needs (no model is loaded)."""
    t = spec.training
    if t.method == "kd" and spec.teacher.backend != "hf":
        raise SpecError(
            "training.method kd runs the teacher next to the student, so it needs a local teacher (teacher.backend: "
            "hf); with an API or recorded teacher use sparse_kd with generation.top_logprobs, or sft")
    if t.method == "sparse_kd":
        if spec.generation.top_logprobs < 1:
            raise SpecError("training.method sparse_kd learns from the teacher's stored top-k log-probs: set "
                            "generation.top_logprobs (for example 8)")
        if spec.teacher.backend == "recorded":
            raise SpecError("training.method sparse_kd needs the teacher's top-k log-probs, which recorded "
                            "completions do not have; use sft")


def check_logit_distillation(spec: JobSpec) -> None:
    """Refuse kd / sparse_kd for a teacher and student that do not share tokenizer and answer placement."""
    if spec.training.method == "sft":
        return
    check_spec(spec)
    teacher_tokenizer = _teacher_tokenizer(spec)
    if teacher_tokenizer is None:
        log.info("teacher %s has no local tokenizer to compare; its top-k tokens are mapped to the student's "
                 "vocabulary at training time", spec.teacher.model)
        return
    from distilflow.models import load_tokenizer

    student_tokenizer = load_tokenizer(spec.student.model)
    method = spec.training.method
    compare_vocabularies(teacher_tokenizer, student_tokenizer, method)
    for who, tokenizer in (("teacher", teacher_tokenizer), ("student", student_tokenizer)):
        check_answer_placement(tokenizer, who, method)
    if method == "kd":
        compare_chat_templates(teacher_tokenizer, student_tokenizer)
        compare_model_vocab_sizes(spec, len(student_tokenizer))


def _teacher_tokenizer(spec: JobSpec):
    from distilflow.models import load_tokenizer

    if spec.teacher.backend == "hf":
        return load_tokenizer(spec.teacher.model)  # the teacher must load anyway: let its error speak
    if spec.teacher.backend == "vllm":
        try:
            return load_tokenizer(spec.teacher.model)
        except DistilflowError:
            return None
    return None  # API teachers: model names, not tokenizers


def compare_vocabularies(teacher, student, method: str) -> None:
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


def _render(tokenizer, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def check_answer_placement(tokenizer, who: str, method: str) -> None:
    """The answer must follow the generation prompt verbatim (no reasoning block or rewriting in between)."""
    prompt = _render(tokenizer, _PROBE_PROMPT, True)
    full = _render(tokenizer, [*_PROBE_PROMPT, {"role": "assistant", "content": _PROBE_ANSWER}], False)
    if not full.startswith(prompt + _PROBE_ANSWER):
        shared = len(os.path.commonprefix([prompt + _PROBE_ANSWER, full]))
        raise DistilflowError(
            f"training.method {method}: the {who}'s chat template does not place the answer right after its "
            f"generation prompt (it renders {full[shared:shared + 60]!r} there), so the teacher's token "
            f"probabilities cannot be matched to the answer's positions; {SFT_HINT}")


def compare_chat_templates(teacher, student) -> None:
    """kd feeds the student's tokens to the teacher: both templates must render a conversation identically."""
    conversation = [*_PROBE_PROMPT, {"role": "assistant", "content": _PROBE_ANSWER}]
    teacher_text, student_text = _render(teacher, conversation, False), _render(student, conversation, False)
    if teacher_text != student_text:
        at = next((i for i, (a, b) in enumerate(zip(teacher_text, student_text)) if a != b),
                  min(len(teacher_text), len(student_text)))
        raise DistilflowError(
            "training.method kd gives the teacher the student's chat-formatted tokens, but their chat templates "
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


def compare_model_vocab_sizes(spec: JobSpec, tokenizer_size: int) -> None:
    """Each model's head must cover the tokenizer (rows beyond it are padding and are left out of the loss)."""
    for who, ref in (("teacher", spec.teacher.model), ("student", spec.student.model)):
        size = _vocab_size(ref)
        if size is not None and size < tokenizer_size:
            raise DistilflowError(
                f"training.method kd: the {who} model's vocabulary ({size:,} rows) is smaller than its tokenizer "
                f"({tokenizer_size:,} tokens); the tokenizer does not belong to this model; {SFT_HINT}")
