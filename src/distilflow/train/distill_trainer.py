"""TRL's SFTTrainer with a distillation loss: checkpoints, resume, accelerate (DDP/FSDP/DeepSpeed), logging and
evaluation come from the Trainer; only `compute_loss` changes.

loss = (alpha * divergence + (1 - alpha) * cross-entropy on the teacher's text) over the label tokens, from the
student's last hidden states through the chunked losses of losses.py (no full-vocabulary logits). The teacher
is either a local model run on the same batch (`kd`, `on_policy`) or top-K log-probs carried in the batch
(`sparse_kd`, `on_policy` with a served teacher). Intermediate-layer and attention matching (layer_matching.py)
add their terms when the spec asks for them; they need the local teacher's forward pass.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import is_peft_model
from trl import SFTTrainer
from torch.distributed.tensor import DTensor
from trl.models.utils import _ForwardRedirection
from trl.trainer.utils import maybe_gather_lm_head_ctx

from distilflow.train.layer_map import MatchingPlan
from distilflow.train.layer_matching import capture_layers, matching_terms, prepare_models_for_matching
from distilflow.train.losses import (DistillSettings, Head, LossTerms, TeacherTarget, mixture_kd_loss,
                                     sparse_kd_loss)

if TYPE_CHECKING:
    from distilflow.jobspec import TrainingSpec

# Batch columns holding stored teacher targets (sparse_kd), [batch, sequence, K]; the target at position j is
# the teacher's distribution for token j.
TOPK_IDS, TOPK_LOGPROBS = "teacher_topk_ids", "teacher_topk_logprobs"
# Targets from a teacher of another tokenizer: its probabilities no student token stands for (alignment.py), [b, s, U].
UNMATCHED = "teacher_unmatched"
TARGET_COLUMNS = (TOPK_IDS, TOPK_LOGPROBS, UNMATCHED)
TARGET_ROW = "teacher_target_row"  # a row's index in the memory-mapped target store (logit_store.py; -1: none)


def distill_settings(training: "TrainingSpec") -> DistillSettings:
    """The loss settings of the spec's training section (shared by kd and sparse_kd)."""
    return DistillSettings(divergence=training.divergence, jsd_beta=training.jsd_beta,
                           temperature=training.kd_temperature, alpha=training.kd_alpha,
                           chunk_size=training.loss_chunk_size)


def causal_lm(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (LoRA layers are injected in place, so they still run)."""
    return model.get_base_model() if is_peft_model(model) else model


def last_hidden_state(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
    """The backbone's output, without the LM head (the losses apply it chunk by chunk)."""
    return causal_lm(model).base_model(**inputs).last_hidden_state


def lm_head(model: Any) -> Head:
    """The output layer and the logit transforms some families apply after it (Cohere's scale, Gemma's softcap)."""
    lm = causal_lm(model)
    layer = lm.get_output_embeddings()
    config = lm.config.get_text_config()
    scale = getattr(config, "logit_scale", None)
    weight, bias = layer.weight, getattr(layer, "bias", None)
    if isinstance(weight, DTensor):  # FSDP2 shards: gather once (differentiable), not once per chunk
        weight = weight.full_tensor()
        bias = bias.full_tensor() if isinstance(bias, DTensor) else bias
    return Head(weight=weight, bias=bias, scale=1.0 if scale is None else scale,
                softcap=getattr(config, "final_logit_softcapping", None))


class DistillationTrainer(SFTTrainer):
    def __init__(self, *args: Any, distill: DistillSettings, teacher_model: Any = None,
                 teacher_prefix_ids: list[int] | None = None, matching: MatchingPlan | None = None,
                 more_teachers: list[tuple[Any, float]] | None = None, teacher_weight: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.distill = distill
        self.teacher_model = teacher_model
        # Several local teachers (kd with `teachers:`): the target is the weighted mixture of their distributions.
        self.more_teachers = more_teachers or []
        self.teacher_weight = teacher_weight
        for other, _ in self.more_teachers:
            other.to(self.args.device).eval().requires_grad_(False)
        self.teacher_prefix_ids = teacher_prefix_ids  # a few-shot block only the teacher reads (context distillation)
        self._teacher_prefix: Any = None
        self.matching = matching if matching is not None and matching.active else None
        if teacher_model is not None:
            teacher_model.to(self.args.device).eval().requires_grad_(False)
        if self.matching is not None:
            prepare_models_for_matching(causal_lm(self.model), teacher_model, self.matching)
        self._forward_redirection = _ForwardRedirection()

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        self._signature_columns = [*self._signature_columns, *TARGET_COLUMNS, "teacher_offset", TARGET_ROW]

    def _captured(self, model: Any, which: str) -> Any:
        """Forward hooks on the mapped layers of `model` (`which`: student / teacher side of each pair)."""
        if self.matching is None:
            return contextlib.nullcontext(None)
        side = 0 if which == "student" else 1
        return capture_layers(causal_lm(model), [p[side] for p in self.matching.hidden_pairs],
                              [p[side] for p in self.matching.attention_pairs])

    def teacher_forward(self, model_inputs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        """The local teacher's last hidden states (and its mapped layers) for this batch."""
        with torch.no_grad(), self._captured(self.teacher_model, "teacher") as states:
            return self._teacher_hidden(model_inputs), states

    def _targets(self, teacher_hidden: torch.Tensor, model_inputs: dict[str, Any]) -> list[TeacherTarget]:
        """The teacher (and the further teachers of a mixture), each at the student's positions."""
        targets = [TeacherTarget(teacher_hidden[:, :-1], lm_head(self.teacher_model), self.teacher_weight)]
        for other, weight in self.more_teachers:
            with torch.no_grad():
                hidden = last_hidden_state(other, model_inputs)
            targets.append(TeacherTarget(hidden[:, :-1], lm_head(other), weight))
        return targets

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None) -> Any:
        mode = "train" if self.model.training else "eval"
        labels = inputs["labels"]
        targets = {k: inputs[k] for k in TARGET_COLUMNS if k in inputs}
        model_inputs = {k: v for k, v in inputs.items() if k != "labels" and k not in TARGET_COLUMNS}
        model_inputs["use_cache"] = False
        teacher_hidden = teacher_states = None
        if self.teacher_model is not None:
            teacher_hidden, teacher_states = self.teacher_forward(model_inputs)
        # The whole loss runs inside the (DDP/FSDP) wrapper's forward, so the wrapper sees every parameter used,
        # the LM head included (the same redirection TRL's own distillation trainer uses).
        unwrapped = self.accelerator.unwrap_model(model)
        loss, sums, tokens = self._forward_redirection(
            model, unwrapped, self._student_loss, unwrapped, model_inputs, labels, teacher_hidden, teacher_states,
            targets, num_items_in_batch)
        # As in SFTTrainer: `num_items_in_batch` counts the tokens of every rank and DDP averages gradients.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        self._record_terms(mode, sums, tokens, inputs)
        return (loss, None) if return_outputs else loss

    def _teacher_hidden(self, model_inputs: dict[str, Any]) -> torch.Tensor:
        """The teacher's hidden states at the student's positions; with a teacher prefix, read after it (its
        key/value cache is computed once and reused for every batch)."""
        if not self.teacher_prefix_ids:
            with torch.no_grad():
                return last_hidden_state(self.teacher_model, model_inputs)
        if self._teacher_prefix is None:
            from distilflow.models.scoring import PrefixCache

            self._teacher_prefix = PrefixCache(causal_lm(self.teacher_model), self.teacher_prefix_ids)
        ids = model_inputs["input_ids"]
        mask = model_inputs.get("attention_mask")
        return self._teacher_prefix.hidden_states(ids, torch.ones_like(ids) if mask is None else mask)

    def _student_loss(self, unwrapped: Any, model_inputs: dict[str, Any], labels: torch.Tensor,
                      teacher_hidden: torch.Tensor | None, teacher_states: Any, targets: dict[str, torch.Tensor],
                      normalizer: torch.Tensor | int | None) -> tuple[torch.Tensor, ...]:
        with self._captured(unwrapped, "student") as student_states:
            full_hidden = last_hidden_state(unwrapped, model_inputs)
        hidden = full_hidden[:, :-1]  # position j predicts token j + 1
        shifted = labels[:, 1:]
        layer = causal_lm(unwrapped).get_output_embeddings()
        # DeepSpeed ZeRO-3 materialises a weight only inside its module's forward: gather the head for the loss.
        with maybe_gather_lm_head_ctx(layer.weight, getattr(layer, "bias", None)):
            head = lm_head(unwrapped)
            if targets:  # stored or served top-K targets (sparse_kd, on_policy with a served teacher)
                unmatched = targets[UNMATCHED][:, 1:] if UNMATCHED in targets else None
                terms: LossTerms = sparse_kd_loss(hidden, head, targets[TOPK_IDS][:, 1:], targets[TOPK_LOGPROBS][:, 1:],
                                                  shifted, self.distill, normalizer, unmatched)
            else:
                assert teacher_hidden is not None, "a distillation batch needs a local teacher or top-K targets"
                terms = mixture_kd_loss(hidden, head, self._targets(teacher_hidden, model_inputs), shifted,
                                        self.distill, normalizer)
        loss, zero = terms.loss, terms.kd_sum.new_zeros(())
        matched, hidden_sum, attention_sum = zero, zero, zero
        if self.matching is not None:
            # Answer positions (the tokens with a label), the same token count the divergence is divided by.
            matched, hidden_sum, attention_sum = matching_terms(self.matching, causal_lm(unwrapped), student_states,
                                                                teacher_states, labels != -100)
            loss = loss + matched / _denominator(normalizer, terms.tokens, matched.device)
        sums = torch.stack([terms.kd_sum.float(), terms.ce_sum.float(), hidden_sum.float(), attention_sum.float()])
        return loss, sums, terms.tokens

    def _record_terms(self, mode: str, sums: torch.Tensor, tokens: torch.Tensor, inputs: dict[str, Any]) -> None:
        """Per-token divergence, cross-entropy and matching terms of this micro-batch (all ranks), logged as kd_loss,
        ce_loss, hidden_loss, attention_loss."""
        gather = self.accelerator.gather  # plain gather: one row per process (gather_for_metrics trims eval remainders)
        row = torch.cat([sums.float(), tokens.float().to(sums.device)[None]])[None]
        kd, ce, hidden, attention, n = gather(row).reshape(-1, 5).sum(0).tolist()
        if n > 0:
            if self.distill.alpha > 0:
                self._metrics[mode]["kd_loss"].append(kd / n)
            if self.distill.alpha < 1:
                self._metrics[mode]["ce_loss"].append(ce / n)
            if self.matching is not None and self.matching.hidden_pairs:
                self._metrics[mode]["hidden_loss"].append(hidden / n)
            if self.matching is not None and self.matching.attention_pairs:
                self._metrics[mode]["attention_loss"].append(attention / n)
        if mode == "train":  # tokens seen, for tokens/s (SFTTrainer counts them the same way)
            if "attention_mask" in inputs:
                local = inputs["attention_mask"].sum()
            else:
                local = torch.tensor(inputs["input_ids"].numel(), device=inputs["input_ids"].device)
            self._total_train_tokens += int(gather(local[None]).sum().item())
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]


def _denominator(normalizer: torch.Tensor | int | None, tokens: torch.Tensor, device: torch.device) -> Any:
    """What losses.py divides its sums by: the step's token count, or this micro-batch's own."""
    if normalizer is None:
        return tokens.clamp(min=1).to(device)
    return normalizer.to(device) if isinstance(normalizer, torch.Tensor) else normalizer
