"""Method `sparse_kd`: distillation from the teacher's stored top-K log-probs (`generation.top_logprobs: K`),
from any backend that returns them (hf, vLLM, OpenAI-compatible APIs), with the remaining probability mass as
a tail bucket (see losses.py). How stored log-probs become per-token targets: sparse_targets.py.

Rows whose answer does not align with the teacher's stored tokens are trained with cross-entropy only, and
counted in the stage's metrics (`rows_without_teacher_targets`, by reason).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from distilflow.dist import is_main_process
from distilflow.errors import DistilflowError, SpecError
from distilflow.models import load_tokenizer
from distilflow.train import recipe
from distilflow.train.compatibility import SFT_HINT, check_one_tokenizer, other_tokenizer
from distilflow.train.layer_map import check_layer_matching, matching_plan, uses_layer_matching

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext
    from distilflow.jobspec import JobSpec
    from distilflow.train.sparse_targets import SparseStats

log = logging.getLogger(__name__)
# Training stops when more than this share of the stored top-K tokens are not in the student's vocabulary.
MAX_UNMAPPABLE = 0.5


def preflight(spec: JobSpec) -> None:
    """Stored top-K log-probs (or a label distribution), and (for a local teacher) one tokenizer for teacher and
    student."""
    if spec.generation.top_logprobs < 1 and spec.generation.answer_mode != "rank":
        raise SpecError("training.method sparse_kd learns from the teacher's stored top-k log-probs: set "
                        "generation.top_logprobs (for example 8), or rank the labels (generation.answer_mode: rank)")
    if spec.teacher.backend == "recorded":
        raise SpecError("training.method sparse_kd needs the teacher's top-k log-probs, which recorded "
                        "completions do not have; use sft")
    check_layer_matching(spec, "sparse_kd")
    if spec.teacher.backend != "hf":  # API teachers name models, not tokenizers
        log.info("teacher %s has no local tokenizer to compare; its top-k tokens are mapped to the student's "
                 "vocabulary at training time, or aligned by their text where it uses another tokenizer",
                 spec.teacher.model)
        return
    # The teacher must load anyway: let its error speak. Another tokenizer is aligned by text (alignment.py),
    # except where the teacher's inner layers are matched too (that needs one tokenizer).
    teacher, student = load_tokenizer(spec.teacher.model), load_tokenizer(spec.student.model)
    if uses_layer_matching(spec) or teacher.get_vocab() == student.get_vocab():
        check_one_tokenizer(teacher, student, "sparse_kd")
    else:
        log.info("sparse_kd: teacher and student tokenizers differ; the teacher's top-k is aligned to the student's "
                 "tokens by their text (docs/training.md, across tokenizers)")


def run(ctx: StageContext) -> dict[str, Any]:
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from distilflow.teachers.cache import TeacherCache
    from distilflow.train.distill_trainer import DistillationTrainer, distill_settings
    from distilflow.train.logit_store import write_store
    from distilflow.train.sparse_targets import (
        SparseStats,
        SparseTargetCollator,
        TargetSettings,
        teacher_target_rows,
    )

    if ctx.spec.training.packing:
        log.warning("training.packing is not supported with sparse_kd (its per-token targets are not packed); "
                    "training without packing")
    rows = recipe.synthetic_rows(ctx)
    model, tokenizer = recipe.load_student_to_train(ctx)
    settings = TargetSettings(tokenizer, model.get_output_embeddings().weight.shape[0],
                              ctx.spec.training.max_seq_length, ctx.spec.student.prompt_format, ctx.task.labels,
                              teacher_tokenizer=_other_tokenizer(ctx, tokenizer))
    stats = SparseStats()
    cache = TeacherCache(ctx.paths.teacher_cache)
    try:
        train_rows = teacher_target_rows(cache, rows.train, settings, stats)
        validation_rows = teacher_target_rows(cache, rows.validation, settings, stats)
    finally:
        cache.close()
    _check_targets(ctx, stats)
    store = write_store(ctx.paths.teacher_targets, [train_rows, validation_rows])  # streamed, not held in memory
    collator = SparseTargetCollator(DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id), store)
    trainer_kwargs: dict[str, Any] = {"distill": distill_settings(ctx.spec.training), "data_collator": collator}
    if uses_layer_matching(ctx.spec):  # the local teacher runs too, for its inner layers (targets stay the stored ones)
        trainer_kwargs.update(teacher_model=recipe.load_local_teacher(ctx), matching=matching_plan(ctx))
    plan = recipe.MethodPlan("sparse_kd", DistillationTrainer, train_rows, validation_rows,
                             arguments={"packing": False, "padding_free": False}, trainer_kwargs=trainer_kwargs)
    return {**recipe.fit(ctx, plan, model, tokenizer), **stats.metrics(),
            "teacher_target_bytes_per_logit": round(store.bytes_per_kept_logit(), 2)}


def _other_tokenizer(ctx: "StageContext", student: Any) -> Any:
    """A local teacher's tokenizer where it is not the student's (its stored ids are then spelt and aligned)."""
    return other_tokenizer(ctx.spec.teacher.model, student) if ctx.spec.teacher.backend == "hf" else None


def _check_targets(ctx: StageContext, stats: SparseStats) -> None:
    """Stop when the teacher's tokens are mostly not the student's; warn about rows trained without targets."""
    if stats.stored_tokens and stats.unmappable_tokens / stats.stored_tokens > MAX_UNMAPPABLE:
        raise DistilflowError(
            f"sparse_kd: {stats.unmappable_tokens:,} of the teacher's {stats.stored_tokens:,} stored top-k tokens "
            f"are not in the student's vocabulary, and their text does not spell the teacher's answers either, so "
            f"they cannot be aligned: the teacher ({ctx.spec.teacher.model}) uses another tokenizer and returns "
            f"pieces that are not text; {SFT_HINT}")
    if stats.aligned_rows and is_main_process():
        a = stats.alignment
        log.info("sparse_kd: %d rows aligned across tokenizers: %d of %d answer tokens have targets; %d of %d teacher "
                 "top-k pieces have no student token (their mass goes to ULD)", stats.aligned_rows, a.aligned_tokens,
                 a.student_tokens, a.unmatched_pieces, a.teacher_pieces)
    without = stats.rows_without_targets
    if without and is_main_process():
        detail = ", ".join(f"{n} {reason}" for reason, n in stats.reasons.most_common())
        log.warning("sparse_kd: %d of %d rows have no usable teacher log-probs (%s); they are trained with "
                    "cross-entropy on the teacher's text only", without, stats.rows, detail)
