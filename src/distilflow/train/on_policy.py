"""Method `on_policy`: on-policy distillation (GKD; MiniLLM; Thinking Machines' on-policy distillation). The student
answers a share `on_policy_ratio` of each batch's prompts itself (`student_temperature`, `student_max_tokens`), a
share that rises from 0 over the first `on_policy_warmup` of the steps (the stored answers teach an untrained
student first; DistiLLM's adaptive schedule, Ko et al. 2024, makes the same point); the other rows keep the
teacher's stored answers; the teacher scores every answer token, and the student learns the
token-level `divergence` (forward_kl | reverse_kl | jsd with `jsd_beta`) at `kd_temperature` on the answer tokens
only. Learning from its own samples removes the mismatch of off-policy KD, where the student is trained on
prefixes it would never produce itself.

The loss is the divergence alone (GKD's): cross-entropy on the student's own samples would reinforce them, so
`kd_alpha` does not apply here.

- A local teacher (`teacher.backend: hf`) scores with its full distribution, through the chunked losses of
  losses.py; layer matching (`training.hidden_states`, `training.attention`) can be added.
- A served teacher (`teacher.backend: openai`) scores through its completions endpoint with prompt log-probs
  (teachers/scoring.py): the top `teacher_top_logprobs` tokens at every answer token plus a tail bucket
  (losses.sparse_kd_loss). Requests, retries and tokens go into the stage's metrics.
The trainer: on_policy_trainer.py; the batch surgery: rollout.py.
"""

from __future__ import annotations

import dataclasses
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
    """A teacher that can score the student's tokens: local (one tokenizer and template with the student) or served."""
    backend = spec.teacher.backend
    if backend not in ("hf", "openai"):
        hint = (" (run `vllm serve MODEL` and use teacher.backend: openai)" if backend == "vllm" else "")
        raise SpecError(f"training.method on_policy needs a teacher that scores the student's own answers: a local "
                        f"model (teacher.backend: hf) or a served one (teacher.backend: openai), not {backend}{hint}")
    check_layer_matching(spec, "on_policy")  # before any request: layer matching needs the local teacher
    if backend == "hf":
        check_teacher_reads_student_tokens(spec, "on_policy")
    elif spec.teacher.api_version:
        raise SpecError("training.method on_policy scores through the completions endpoint with prompt log-probs, "
                        "which Azure OpenAI does not offer; use a local teacher or a vLLM / llama.cpp server")


def run(ctx: "StageContext") -> dict[str, Any]:
    from distilflow.train.distill_trainer import distill_settings
    from distilflow.train.on_policy_trainer import OnPolicyTrainer
    from distilflow.train.rollout import OnPolicySettings

    t = ctx.spec.training
    rows = recipe.synthetic_rows(ctx)
    model, tokenizer = recipe.load_student_to_train(ctx)
    settings = dataclasses.replace(distill_settings(t), alpha=1.0)
    on_policy = OnPolicySettings(ratio=t.on_policy_ratio, temperature=t.student_temperature,
                                 max_tokens=t.student_max_tokens, max_length=t.max_seq_length,
                                 warmup=t.on_policy_warmup)
    kwargs: dict[str, Any] = {"distill": settings, "on_policy": on_policy}
    if ctx.spec.teacher.backend == "hf":
        # The teacher scores the student's samples after its own few-shot block, as kd does (context distillation).
        kwargs.update(teacher_model=recipe.load_local_teacher(ctx), matching=matching_plan(ctx),
                      teacher_prefix_ids=teacher_prefix_ids(ctx, tokenizer, rows.train[0]))
    else:
        kwargs["served"] = _served_teacher(ctx, tokenizer, model.get_output_embeddings().weight.shape[0])
    if is_main_process():
        log.info("on_policy: the student samples %.0f%% of each batch (temperature %g, up to %d tokens); %s at "
                 "temperature %g, scored by the %s teacher", 100 * t.on_policy_ratio, t.student_temperature,
                 t.student_max_tokens, t.divergence, t.kd_temperature, ctx.spec.teacher.backend)
    if t.packing:
        log.warning("training.packing is not supported with on_policy (samples replace answers row by row); "
                    "training without packing")
    fmt = ctx.spec.student.prompt_format
    plan = recipe.MethodPlan("on_policy", OnPolicyTrainer, train_rows=recipe.prompt_completion_rows(rows.train, fmt),
                             validation_rows=recipe.prompt_completion_rows(rows.validation, fmt),
                             arguments={"packing": False, "padding_free": False}, trainer_kwargs=kwargs,
                             report=lambda trainer: trainer.on_policy_metrics())
    metrics = recipe.fit(ctx, plan, model, tokenizer)
    _warn_on_unfinished_samples(metrics, t.student_max_tokens)
    return metrics


def _warn_on_unfinished_samples(metrics: dict[str, Any], max_tokens: int) -> None:
    """Samples cut at student_max_tokens are mostly noise past the answer, and they dilute the tokens that teach
    (bench/README.md, "on_policy"): say so, with the settings that help."""
    finished = metrics.get("sampled_finished_share")
    if metrics.get("sampled_rows") and finished is not None and finished < 0.5 and is_main_process():
        log.warning("on_policy: only %.0f%% of the student's samples ended before training.student_max_tokens "
                    "(%d); the rest were cut. A lower training.student_temperature, a longer on_policy_warmup or "
                    "more steps help; at this length kd or sft on the teacher's answers may teach more per step",
                    100 * finished, max_tokens)


def _served_teacher(ctx: "StageContext", tokenizer: Any, vocab_size: int) -> Any:
    from distilflow.teachers.scoring import PromptLogprobScorer
    from distilflow.train.served_targets import ServedTeacher

    scorer = PromptLogprobScorer(ctx.spec.teacher, ctx.spec.training.teacher_top_logprobs)
    return ServedTeacher(scorer, tokenizer, vocab_size)
