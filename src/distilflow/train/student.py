"""Building the student: a Hugging Face causal LM as given, or (later) derived from the teacher."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from distilflow.models import load_causal_lm, load_tokenizer

if TYPE_CHECKING:
    from distilflow.runner import StageContext


def baseline_student_ref(ctx: "StageContext") -> str:
    """The student before distillation: the model as given, or its derived copy saved by the train stage."""
    initial = ctx.paths.student_initial
    return str(initial) if (initial / "config.json").exists() else ctx.spec.student.model


def load_student(ctx: "StageContext", device: str):
    """Model and tokenizer of the student to train (right padding for training)."""
    ref = baseline_student_ref(ctx)
    tokenizer = load_tokenizer(ref, padding_side="right")
    model = load_causal_lm(ref, device=device, dtype=ctx.spec.student.dtype)
    return model, tokenizer


def final_student_ref(ctx: "StageContext") -> Path:
    return ctx.paths.student_final
