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
from distilflow.train.teacher_prefix import teacher_prefix_ids

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext
    from distilflow.jobspec import JobSpec

log = logging.getLogger(__name__)


def preflight(spec: "JobSpec") -> None:
    """A local teacher that shares the student's tokenizer and chat template, and whose head covers it; with several
    teachers, every one of them (the student learns the weighted mixture of their distributions)."""
    for teacher in spec.teacher_list():
        if teacher.backend != "hf":
            where = f"teachers.{teacher.name}" if spec.teachers else "teacher"  # type: ignore[attr-defined]
            raise SpecError(
                f"training.method kd runs the teacher next to the student, so it needs a local teacher ({where}."
                "backend: hf); with an API or recorded teacher use sparse_kd with generation.top_logprobs, or sft")
        check_teacher_reads_student_tokens(spec.model_copy(update={"teacher": teacher}), "kd")
    check_layer_matching(spec, "kd")


def run(ctx: "StageContext") -> dict[str, Any]:
    from distilflow.train.distill_trainer import DistillationTrainer, distill_settings

    rows = recipe.synthetic_rows(ctx)
    model, tokenizer = recipe.load_student_to_train(ctx)
    settings = distill_settings(ctx.spec.training)
    fmt = ctx.spec.student.prompt_format
    if is_main_process():
        log.info("kd: %s at temperature %g, alpha %g, up to %d tokens per loss chunk", settings.divergence,
                 settings.temperature, settings.alpha, settings.chunk_size)
    prefix_ids = teacher_prefix_ids(ctx, tokenizer, rows.train[0])
    teachers = ctx.spec.teachers or []
    mixture = {"more_teachers": [(recipe.load_local_teacher(ctx, t), t.weight) for t in teachers[1:]],
               "teacher_weight": teachers[0].weight} if len(teachers) > 1 else {}
    if mixture and is_main_process():
        log.info("kd: the target is the mixture of %d teachers (weights %s)", len(teachers),
                 ", ".join(f"{t.name} {t.weight:g}" for t in teachers))
    plan = recipe.MethodPlan("kd", DistillationTrainer, train_rows=recipe.prompt_completion_rows(rows.train, fmt),
                             validation_rows=recipe.prompt_completion_rows(rows.validation, fmt),
                             arguments={"packing": False, "padding_free": False} if prefix_ids else {},
                             trainer_kwargs={"distill": settings, "teacher_model": recipe.load_local_teacher(ctx),
                                             "teacher_prefix_ids": prefix_ids, "matching": matching_plan(ctx),
                                             **mixture},
                             report=(lambda trainer: {"kd_teachers": {t.name: t.weight for t in teachers}})
                             if mixture else None)
    return recipe.fit(ctx, plan, model, tokenizer)
