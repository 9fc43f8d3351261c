"""The distillation trainer, on-policy (GKD, Agarwal et al. 2024): before each optimizer step, the current student
answers a share (`on_policy_ratio`) of the step's prompts itself (rollout.py); the teacher then scores every answer
token, sampled or stored, and the student learns the token-level divergence on them. The loss, the teacher's
forward pass and the layer-matching terms are DistillationTrainer's; a served teacher's scores arrive as sparse
top-K targets in the batch (served_targets.py).

Why here and not TRL's GKDTrainer: GKD draws one coin per batch (all rows sampled or none) and counts the loss's
tokens before sampling (a step's normalizer then no longer matches its tokens); it computes the divergence on full
logits of both models (no chunking; bench/kd_loss_memory.py) and has no served teacher. This trainer samples per
row, inside `get_batch_samples`, so the token count of each optimizer step (`num_items_in_batch`) is that of the
samples the loss will see, across gradient accumulation and processes.

The step time is split and logged (TensorBoard, train_log.json): `time_sample_s` (the student's generate),
`time_score_s` (the teacher: local forward pass or endpoint round trip) and `time_update_s` (the rest of the step:
student forward, backward, optimizer).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import torch
from transformers import TrainerCallback
from trl.models.utils import unwrap_model_for_generation

from distilflow.train.distill_trainer import TOPK_IDS, DistillationTrainer
from distilflow.train.rollout import OnPolicySettings, answer_starts, mix_answers, rows_to_sample, sample_answers
from distilflow.train.served_targets import ServedTeacher


class OnPolicyTrainer(DistillationTrainer):
    def __init__(self, *args: Any, on_policy: OnPolicySettings, served: ServedTeacher | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_policy, self.served = on_policy, served
        tokenizer = self.processing_class
        self.pad_id = tokenizer.pad_token_id
        stop = getattr(self.model.generation_config, "eos_token_id", None)
        stop = stop if isinstance(stop, list) else [stop]
        self.stop_ids = {int(i) for i in [*stop, tokenizer.eos_token_id] if i is not None}
        self.rollout: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()  # whole training: sample / score / update
        self._step: Counter[str] = Counter()  # the current optimizer step
        self._step_started: float | None = None
        self.add_callback(_StepClock(self))

    # ----- each optimizer step's batches: samples, then (served teacher) scores -------------------------------
    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> tuple[list, Any]:
        self._step_started = time.perf_counter()
        self._step.clear()
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        with self._timed("sample"):
            batches = [self._with_student_answers(batch) for batch in batches]
        if self.served is not None and batches:
            with self._timed("score"):
                batches = self.served.attach(batches)
        # The step's token count is that of the answers the loss will see (samples differ in length); a step whose
        # every answer token lost its target (a served teacher that could not score them) divides zero by one.
        count = self._get_num_items_in_batch(batches, device)
        if isinstance(count, torch.Tensor):
            count = count.clamp(min=1)
        elif isinstance(count, int):
            count = max(count, 1)
        return batches, count

    def _with_student_answers(self, batch: dict[str, Any]) -> dict[str, Any]:
        starts = answer_starts(batch["labels"])
        ratio = self.on_policy.ratio_at(self.state.global_step, self.state.max_steps)
        rows = rows_to_sample(batch["input_ids"].shape[0], ratio, starts, batch["input_ids"].shape[1])
        self.rollout["rows"] += batch["input_ids"].shape[0]
        if not rows:
            return batch
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs) as model:
            was_training = model.training
            model.eval()  # no dropout while sampling
            try:
                answers = sample_answers(model, batch["input_ids"], starts, rows, self.on_policy, self.pad_id,
                                         self.stop_ids)
            finally:
                model.train(was_training)
        self.rollout["sampled_rows"] += len(rows)
        self.rollout["sampled_tokens"] += sum(len(a) for a in answers)
        self.rollout["sampled_finished"] += sum(bool(a) and a[-1] in self.stop_ids for a in answers)
        return mix_answers(batch, dict(zip(rows, answers)), self.pad_id, self.on_policy.max_length)

    # ----- scoring ---------------------------------------------------------------------------------------------
    def teacher_forward(self, model_inputs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        if not self.model.training:
            return super().teacher_forward(model_inputs)
        with self._timed("score"):
            return super().teacher_forward(model_inputs)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if self.served is not None and TOPK_IDS not in inputs:  # validation batches: scored when they are used
            inputs = self.served.attach([inputs])[0]
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    # ----- timing ----------------------------------------------------------------------------------------------
    def _timed(self, what: str) -> "_Timer":
        return _Timer(self, what)

    def finish_step(self) -> None:
        """At the end of an optimizer step: log its sample / score / update seconds."""
        if self._step_started is None:
            return
        _synchronize()
        total = time.perf_counter() - self._step_started
        update = max(0.0, total - self._step["sample"] - self._step["score"])
        for what, seconds in (("sample", self._step["sample"]), ("score", self._step["score"]), ("update", update)):
            self._metrics["train"][f"time_{what}_s"].append(seconds)
            self.seconds[what] += seconds
        self._step_started = None

    def on_policy_metrics(self) -> dict[str, Any]:
        """What the stage records: samples, the time split, and the served teacher's calls and tokens."""
        r = self.rollout
        metrics: dict[str, Any] = {
            "sampled_rows": r["sampled_rows"], "stored_rows": r["rows"] - r["sampled_rows"],
            "sampled_tokens": r["sampled_tokens"],
            "sampled_mean_tokens": r["sampled_tokens"] / r["sampled_rows"] if r["sampled_rows"] else 0.0,
            "sampled_finished_share": r["sampled_finished"] / r["sampled_rows"] if r["sampled_rows"] else 0.0,
            **{f"time_{k}_s": round(v, 3) for k, v in self.seconds.items()}}
        if self.served is not None:
            metrics.update(self.served.metrics())
        return metrics


def _synchronize() -> None:
    """Timings of GPU work are only true once the queued kernels have run."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class _Timer:
    def __init__(self, trainer: OnPolicyTrainer, what: str) -> None:
        self.trainer, self.what = trainer, what

    def __enter__(self) -> None:
        _synchronize()
        self.started = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        _synchronize()
        self.trainer._step[self.what] += time.perf_counter() - self.started


class _StepClock(TrainerCallback):
    """Closes each optimizer step's timing before the Trainer logs (on_step_end runs just before logging)."""

    def __init__(self, trainer: OnPolicyTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.finish_step()
