"""Intermediate-layer and attention matching, added to any method's loss (`training.hidden_states`,
`training.attention`); which layers pair up is layer_map.py's.

- Hidden states: per answer position, MSE (mean over the teacher's width) or 1 - cosine between the student layer's
  output, through a learned linear projection when the widths differ (DistillKit's and Minitron's recipe), and the
  teacher layer's output.
- Attention: per answer position (query), KL(teacher || student) between the two attention distributions over the
  keys; heads are matched one to one when both models have as many, otherwise each model's heads are averaged first.
Both are summed over answer positions and mapped layer pairs are averaged, then divided by the same token count as
the divergence (losses.py), so `weight` compares directly with the KD term.

Layer outputs are taken with forward hooks on the decoder layers (transformers returns either every layer's hidden
states or none: hooks keep only the mapped ones). Attention probabilities exist only with eager attention (SDPA and
flash kernels never materialise them), so attention matching switches both models to eager: memory grows by
batch x heads x length^2 per layer, which is why it is opt-in.

The projections live on the student module while it trains (so optimizer, DDP and checkpoints see them) and are
removed before the student is saved (`detach_projections`): the saved student is a plain model of its own family.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distilflow.train.layer_map import MatchingPlan
from distilflow.train.prune import decoder_layers

PROJECTIONS = "distilflow_projections"  # the attribute holding the projections on the student while it trains


# ----- the losses (sums over positions; tested against brute force in tests/test_layer_matching.py) -----------


def hidden_state_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """Sum over rows of MSE (mean over features) or 1 - cosine; student already projected. Shapes [n, H]."""
    student, teacher = student.float(), teacher.float()
    if kind == "mse":
        return (student - teacher).pow(2).mean(-1).sum()
    if kind == "cosine":
        return (1 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-8)).sum()
    raise ValueError(f"unknown hidden-state loss {kind!r}")


def attention_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Sum over query rows of KL(teacher || student) between attention distributions, heads matched or averaged.

    Shapes [n, heads, keys] (the rows already selected); keys a query cannot see have probability 0 in both.
    """
    student, teacher = student.float(), teacher.float()
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
    # xlogy: 0 * log 0 = 0 for masked keys; the student's log is clamped where the teacher has no mass anyway.
    kl = torch.special.xlogy(teacher, teacher) - teacher * student.clamp_min(1e-30).log()
    return kl.sum(-1).mean(-1).sum()


# ----- capturing layer outputs --------------------------------------------------------------------------------


class LayerCapture:
    """Outputs of chosen decoder layers (hidden states) and attention modules (probabilities) of one forward pass."""

    def __init__(self) -> None:
        self.hidden: dict[int, torch.Tensor] = {}
        self.attention: dict[int, torch.Tensor] = {}


@contextmanager
def capture_layers(model: Any, hidden: list[int], attention: list[int]) -> Iterator[LayerCapture]:
    _, _, layers = decoder_layers(model)
    captured = LayerCapture()
    handles = []

    def keep(store: dict[int, torch.Tensor], index: int, position: int):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            value = output[position] if isinstance(output, tuple) else output
            if value is None:
                raise RuntimeError("attention probabilities are missing: attention matching needs eager attention")
            store[index] = value
        return hook

    for index in sorted(set(hidden)):
        handles.append(layers[index].register_forward_hook(keep(captured.hidden, index, 0)))
    for index in sorted(set(attention)):
        handles.append(layers[index].self_attn.register_forward_hook(keep(captured.attention, index, 1)))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


# ----- projections --------------------------------------------------------------------------------------------


def attach_projections(student: Any, plan: MatchingPlan, teacher_width: int) -> None:
    """One linear map student width -> teacher width per hidden-state pair (identity when the widths agree)."""
    width = student.config.get_text_config().hidden_size
    if not plan.hidden_pairs or width == teacher_width:
        return
    reference = next(student.parameters())
    modules = nn.ModuleList(nn.Linear(width, teacher_width, bias=False) for _ in plan.hidden_pairs)
    setattr(student, PROJECTIONS, modules.to(device=reference.device, dtype=torch.float32).requires_grad_(True))


def detach_projections(student: Any) -> Any:
    """Remove the training-only projections (before the student is saved)."""
    if hasattr(student, PROJECTIONS):
        delattr(student, PROJECTIONS)
    return student


# ----- the combined term --------------------------------------------------------------------------------------


def matching_terms(plan: MatchingPlan, student: Any, student_states: LayerCapture, teacher_states: LayerCapture,
                   positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weighted sum to add to the loss, hidden-state sum, attention sum) over the answer `positions` [B, T]."""
    zero = positions.new_zeros((), dtype=torch.float32)
    hidden_sum, attention_sum = zero, zero
    projections = getattr(student, PROJECTIONS, None)
    for k, (s, t) in enumerate(plan.hidden_pairs):
        mine = student_states.hidden[s][positions]
        if projections is not None:
            mine = projections[k](mine.float())
        hidden_sum = hidden_sum + hidden_state_loss(mine, teacher_states.hidden[t][positions], plan.hidden_loss)
    for s, t in plan.attention_pairs:
        # [B, heads, queries, keys] -> the answer queries' rows, [n, heads, keys]
        mine = student_states.attention[s].transpose(1, 2)[positions]
        theirs = teacher_states.attention[t].transpose(1, 2)[positions]
        attention_sum = attention_sum + attention_kl(mine, theirs)
    if plan.hidden_pairs:
        hidden_sum = hidden_sum / len(plan.hidden_pairs)
    if plan.attention_pairs:
        attention_sum = attention_sum / len(plan.attention_pairs)
    total = plan.hidden_weight * hidden_sum + plan.attention_weight * attention_sum
    return total, hidden_sum.detach(), attention_sum.detach()


def prepare_models_for_matching(student: Any, teacher: Any, plan: MatchingPlan) -> None:
    """Eager attention where attention distributions are compared; projections on the student."""
    if plan.attention_pairs:
        for model in (student, teacher):
            model.set_attn_implementation("eager")
    attach_projections(student, plan, teacher.config.get_text_config().hidden_size)
