"""Method `sft`: supervised fine-tuning on the teacher's answers (sequence-level KD), loss on assistant tokens
only. TRL's SFTTrainer does the work: prompt/completion rows give it the completion-only mask."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distilflow.train import recipe

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext
    from distilflow.spec import JobSpec


def preflight(spec: "JobSpec") -> None:
    """Nothing to check: sft learns from the teacher's text alone, so it works across tokenizers and templates."""


def run(ctx: "StageContext") -> dict[str, Any]:
    from trl import SFTTrainer

    rows = recipe.synthetic_rows(ctx)
    model, tokenizer = recipe.load_student_to_train(ctx)
    fmt = ctx.spec.student.prompt_format
    plan = recipe.MethodPlan("sft", SFTTrainer, train_rows=recipe.prompt_completion_rows(rows.train, fmt),
                             validation_rows=recipe.prompt_completion_rows(rows.validation, fmt))
    return recipe.fit(ctx, plan, model, tokenizer)
