"""Building the student: a Hugging Face causal LM as given, or a depth-pruned copy of `student.model`.

A pruned student is saved (a normal HF folder with the source's tokenizer) to student/initial, which
evaluation then scores as the baseline: the student before distillation.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilflow.io import atomic_folder
from distilflow.models import load_causal_lm, load_tokenizer, model_revision

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext
    from distilflow.jobspec import JobSpec

log = logging.getLogger(__name__)
PRUNING_RECORD = "distilflow_pruning.json"


def _pruning_record(ctx: "StageContext") -> dict[str, Any]:
    student = ctx.spec.student
    rule = student.prune.model_dump() if hasattr(student.prune, "model_dump") else student.prune
    return {"source": student.model, "revision": model_revision(student.model), "prune": rule,
            "dtype": student.dtype}


def _saved_pruned_student(ctx: "StageContext") -> Path | None:
    """student/initial when it was pruned from the same source with the same rule."""
    record = ctx.paths.student_initial / PRUNING_RECORD
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    return ctx.paths.student_initial if saved.get("record") == _pruning_record(ctx) else None


def load_student(ctx: "StageContext", device: str, *, save: bool = True) -> tuple[Any, Any]:
    """Model and tokenizer of the student to train (right padding for training).

    Every process of a multi-process launch builds the same pruned model (pruning is deterministic); only the
    main process (`save`) writes it.
    """
    from distilflow.train.prune import layers_to_keep, prune_layers

    student = ctx.spec.student
    if student.prune is None:
        if save and ctx.paths.student_initial.exists():  # a pruned copy from an earlier spec is no baseline now
            shutil.rmtree(ctx.paths.student_initial, ignore_errors=True)
        tokenizer = load_tokenizer(student.model, padding_side="right")
        return load_causal_lm(student.model, device=device, dtype=student.dtype), tokenizer

    tokenizer = load_tokenizer(student.model, padding_side="right")
    saved = _saved_pruned_student(ctx)
    if saved is not None:
        return load_causal_lm(str(saved), device=device, dtype=student.dtype), tokenizer
    model = load_causal_lm(student.model, device=device, dtype=student.dtype)
    total = model.config.get_text_config().num_hidden_layers
    keep = layers_to_keep(student.prune, total)
    prune_layers(model, keep)
    if save:
        log.info("student: kept layers %s of %d from %s", keep, total, student.model)
        _save_pruned(ctx, model, tokenizer, keep, total)
    return model, tokenizer


def _save_pruned(ctx: "StageContext", model: Any, tokenizer: Any, keep: list[int], total: int) -> None:
    with atomic_folder(ctx.paths.student_initial) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        padding_side = tokenizer.padding_side
        tokenizer.padding_side = "left"  # the saved baseline is used for generation
        tokenizer.save_pretrained(staging)
        tokenizer.padding_side = padding_side
        record = {"record": _pruning_record(ctx), "kept_layers": keep, "source_layers": total}
        (staging / PRUNING_RECORD).write_text(json.dumps(record, indent=2))



def check_student_loads(spec: "JobSpec") -> None:
    """Before any teacher request: the student's tokenizer and config load, and a prune rule fits its layers.
    (Weights are loaded by the train stage; a missing model or a layer out of range fails here, for free.)"""
    from transformers import AutoConfig

    from distilflow.models import load_tokenizer, local_model_dir
    from distilflow.train.prune import layers_to_keep

    load_tokenizer(spec.student.model)  # one sentence when the model is not found
    if spec.student.prune is not None:
        config = AutoConfig.from_pretrained(local_model_dir(spec.student.model))
        layers_to_keep(spec.student.prune, config.get_text_config().num_hidden_layers)
