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

from distilflow.dist import is_main_process
from distilflow.errors import SpecError
from distilflow.train import recipe
from distilflow.train.compatibility import check_teacher_reads_student_tokens
from distilflow.train.layer_map import check_layer_matching, matching_plan

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext
    from distilflow.spec import JobSpec

log = logging.getLogger(__name__)


def preflight(spec: "JobSpec") -> None:
    """A local teacher that shares the student's tokenizer and chat template, and whose head covers it."""
    if spec.teacher.backend != "hf":
        raise SpecError(
            "training.method kd runs the teacher next to the student, so it needs a local teacher (teacher.backend: "
            "hf); with an API or recorded teacher use sparse_kd with generation.top_logprobs, or sft")
    check_teacher_reads_student_tokens(spec, "kd")
    check_layer_matching(spec, "kd")


def run(ctx: "StageContext") -> dict[str, Any]:
    from distilflow.train.distill_trainer import DistillationTrainer, distill_settings

    rows = recipe.synthetic_rows(ctx)
    model, tokenizer = recipe.load_student_to_train(ctx)
    settings = distill_settings(ctx.spec.training)
    if is_main_process():
        log.info("kd: %s at temperature %g, alpha %g, up to %d tokens per loss chunk", settings.divergence,
                 settings.temperature, settings.alpha, settings.chunk_size)
    plan = recipe.MethodPlan("kd", DistillationTrainer, train_rows=recipe.prompt_completion_rows(rows.train),
                             validation_rows=recipe.prompt_completion_rows(rows.validation),
                             trainer_kwargs={"distill": settings, "teacher_model": recipe.load_local_teacher(ctx),
                                             "matching": matching_plan(ctx)})
    return recipe.fit(ctx, plan, model, tokenizer)
