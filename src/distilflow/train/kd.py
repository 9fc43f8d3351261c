"""Method `kd`: online logit distillation against a local teacher loaded next to the student.

Each batch of synthetic rows (prompt + teacher answer) runs through both models; the student learns
alpha * divergence(teacher || student at kd_temperature) + (1 - alpha) * cross-entropy on the teacher's text,
on the answer tokens only. The teacher sees exactly the student's tokens (the preflight made sure both share
tokenizer and chat template); a teacher of another tokenizer instead scores each row once in its own tokens, and
its top-K is aligned to the student's (cross_teacher.py, alignment.py). Memory: the teacher's weights and its last hidden states; logits exist for one
chunk of tokens at a time (losses.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from distilflow.dist import is_main_process
from distilflow.errors import SpecError
from distilflow.train import recipe
from distilflow.train.compatibility import check_teacher_reads_student_tokens, other_tokenizer
from distilflow.train.layer_map import check_layer_matching, matching_plan, uses_layer_matching
from distilflow.train.teacher_prefix import teacher_prefix_ids, teacher_view

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
        if _across_tokenizers(spec, teacher.model):
            if len(spec.teacher_list()) > 1 or uses_layer_matching(spec):
                raise SpecError(
                    f"training.method kd: the teacher {teacher.model} uses another tokenizer than the student; kd "
                    "across tokenizers takes one teacher and no hidden_states/attention matching (both need the "
                    "teacher to read the student's tokens); use one teacher of the student's family for those")
            log.info("kd: teacher and student tokenizers differ; the teacher's top-%d at its own tokens is aligned "
                     "to the student's tokens by their text (docs/training.md, across tokenizers)",
                     spec.training.teacher_top_logprobs)
            continue
        check_teacher_reads_student_tokens(spec.model_copy(update={"teacher": teacher}), "kd")
    check_layer_matching(spec, "kd")


def _across_tokenizers(spec: JobSpec, teacher_model: str) -> bool:
    from distilflow.models import load_tokenizer

    return other_tokenizer(teacher_model, load_tokenizer(spec.student.model)) is not None


def run(ctx: "StageContext") -> dict[str, Any]:
    from distilflow.train.distill_trainer import DistillationTrainer, distill_settings

    rows = recipe.synthetic_rows(ctx)
    model, tokenizer = recipe.load_student_to_train(ctx)
    settings = distill_settings(ctx.spec.training)
    teacher_tokenizer = other_tokenizer(ctx.spec.teacher.model, tokenizer)
    if teacher_tokenizer is not None:
        return _run_across_tokenizers(ctx, rows, model, tokenizer, teacher_tokenizer)
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


def _run_across_tokenizers(ctx: StageContext, rows: Any, model: Any, tokenizer: Any, teacher_tokenizer: Any
                           ) -> dict[str, Any]:
    """The teacher scores every row once in its own tokens (cross_teacher.py); the student learns the aligned
    top-K targets through the chunked sparse loss, as sparse_kd does."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from distilflow.train.cross_teacher import local_teacher_rows
    from distilflow.train.distill_trainer import DistillationTrainer, distill_settings
    from distilflow.train.logit_store import write_store
    from distilflow.train.sparse_targets import SparseStats, SparseTargetCollator, TargetSettings

    teacher = recipe.load_local_teacher(ctx).to(recipe.training_device(ctx.spec))
    settings = TargetSettings(tokenizer, model.get_output_embeddings().weight.shape[0],
                              ctx.spec.training.max_seq_length, ctx.spec.student.prompt_format)
    stats, k = SparseStats(), ctx.spec.training.teacher_top_logprobs
    view, teacher_format = teacher_view(ctx), ctx.spec.teacher.prompt_format
    train_rows = local_teacher_rows(teacher, teacher_tokenizer, settings, rows.train, k, stats, view, teacher_format)
    validation_rows = local_teacher_rows(teacher, teacher_tokenizer, settings, rows.validation, k, stats, view,
                                         teacher_format)
    del teacher  # not needed while the student trains
    if is_main_process():
        a = stats.alignment
        log.info("kd across tokenizers: %d of %d answer tokens have aligned targets; %d of %d teacher top-%d pieces "
                 "have no student token (ULD)", a.aligned_tokens, a.student_tokens, a.unmatched_pieces,
                 a.teacher_pieces, k)
    store = write_store(ctx.paths.teacher_targets, [train_rows, validation_rows])  # streamed, not held in memory
    collator = SparseTargetCollator(DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id), store)
    plan = recipe.MethodPlan("kd", DistillationTrainer, train_rows, validation_rows,
                             arguments={"packing": False, "padding_free": False},
                             trainer_kwargs={"distill": distill_settings(ctx.spec.training), "data_collator": collator})
    return {**recipe.fit(ctx, plan, model, tokenizer), **stats.metrics(),
            "teacher_target_bytes_per_logit": round(store.bytes_per_kept_logit(), 2)}
