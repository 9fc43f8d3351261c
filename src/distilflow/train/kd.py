"""Method `kd`: online logit distillation against a local teacher loaded next to the student.

Each batch of synthetic rows (prompt + teacher answer) runs through both models; the student learns
alpha * divergence(teacher || student at kd_temperature) + (1 - alpha) * cross-entropy on the teacher's text,
on the answer tokens only. The teacher sees exactly the student's tokens (the preflight made sure both share
tokenizer and chat template). Memory: the teacher's weights and its last hidden states; logits exist for one
chunk of tokens at a time (losses.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from distilflow.errors import StageError
from distilflow.dist import is_main_process
from distilflow.train.losses import DistillSettings
from distilflow.train.student import load_student

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext

log = logging.getLogger(__name__)


def distill_settings(ctx: "StageContext") -> DistillSettings:
    t = ctx.spec.training
    return DistillSettings(divergence=t.divergence, jsd_beta=t.jsd_beta, temperature=t.kd_temperature,
                           alpha=t.kd_alpha, chunk_size=t.loss_chunk_size)


def load_teacher_model(ctx: "StageContext"):
    """The teacher for online KD, frozen, in the dtype its spec asks for on the training device."""
    import torch

    from distilflow.models import load_causal_lm, pick_device, pick_dtype

    t = ctx.spec.teacher
    training_device = "cpu" if ctx.spec.training.device == "cpu" or not torch.cuda.is_available() else "cuda"
    dtype = pick_dtype(t.dtype, pick_device(training_device))
    # Loaded on the CPU; the trainer moves it to its (per-process) device.
    model = load_causal_lm(t.model, device="cpu", dtype=str(dtype).removeprefix("torch."))
    return model.eval().requires_grad_(False)


def train_kd(ctx: "StageContext") -> dict[str, Any]:
    from datasets import Dataset

    from distilflow.train.distill_trainer import DistillationTrainer
    from distilflow.train.fit import fit
    from distilflow.train.compatibility import check_logit_distillation
    from distilflow.train.sft import prompt_completion_rows

    check_logit_distillation(ctx.spec)
    train_rows = prompt_completion_rows(ctx.paths.synthetic_split("train"))
    if not train_rows:
        raise StageError(f"no training rows in {ctx.paths.synthetic_split('train')}; run the generate stage first")
    validation_rows = prompt_completion_rows(ctx.paths.synthetic_split("validation"))
    model, tokenizer = load_student(ctx, device="cpu", save=is_main_process())
    teacher = load_teacher_model(ctx)
    settings = distill_settings(ctx)
    if is_main_process():
        log.info("kd: %s at temperature %g, alpha %g, up to %d tokens per loss chunk", settings.divergence,
                 settings.temperature, settings.alpha, settings.chunk_size)
    return fit(ctx, method="kd", trainer_class=DistillationTrainer, model=model, tokenizer=tokenizer,
               train_dataset=Dataset.from_list(train_rows),
               eval_dataset=Dataset.from_list(validation_rows) if validation_rows else None,
               distill=settings, teacher_model=teacher)
