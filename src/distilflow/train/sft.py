"""Method `sft`: supervised fine-tuning on the teacher's answers (sequence-level KD), loss on assistant tokens
only. TRL's SFTTrainer does the work: prompt/completion rows give it the completion-only mask.

With `training.hidden_states` or `training.attention`, the local teacher runs on the same batches and the
distillation trainer adds the matching terms to the cross-entropy (its divergence weight is 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distilflow.train import recipe
from distilflow.train.layer_map import check_layer_matching, matching_plan, uses_layer_matching

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext
    from distilflow.jobspec import JobSpec


def preflight(spec: "JobSpec") -> None:
    """sft learns from the teacher's text alone, so it works across tokenizers and templates; layer matching,
    which runs the teacher on the student's tokens, does not."""
    check_layer_matching(spec, "sft")


def run(ctx: "StageContext") -> dict[str, Any]:
    from trl import SFTTrainer

    rows = recipe.synthetic_rows(ctx)
    model, tokenizer = recipe.load_student_to_train(ctx)
    fmt = ctx.spec.student.prompt_format
    train_rows = recipe.prompt_completion_rows(rows.train, fmt)
    validation_rows = recipe.prompt_completion_rows(rows.validation, fmt)
    if not uses_layer_matching(ctx.spec):
        return recipe.fit(ctx, recipe.MethodPlan("sft", SFTTrainer, train_rows, validation_rows), model, tokenizer)
    from distilflow.train.distill_trainer import DistillationTrainer, distill_settings
    from distilflow.train.losses import DistillSettings

    settings = distill_settings(ctx.spec.training)
    settings = DistillSettings(settings.divergence, settings.jsd_beta, settings.temperature, 0.0, settings.chunk_size)
    plan = recipe.MethodPlan("sft", DistillationTrainer, train_rows, validation_rows,
                             trainer_kwargs={"distill": settings, "teacher_model": recipe.load_local_teacher(ctx),
                                             "matching": matching_plan(ctx)})
    return recipe.fit(ctx, plan, model, tokenizer)
