"""Memory-bounded distillation losses, computed from hidden states one chunk of tokens at a time.

The naive loss holds full-vocabulary logits for every token of the batch, for teacher and student, several
times over (logits, log-softmax, probabilities, their gradients): at V = 49k and 4k tokens that is gigabytes.
Here the LM head is applied to one chunk of `chunk_size` tokens, the chunk's loss and its gradient with respect
to the hidden states and head weights are computed at once (autograd inside the chunk), and the chunk's
logits are freed before the next chunk: extra memory is one chunk's worth, whatever the sequence length.

Written by hand because no library does this for all we need: TRL's `ChunkedDivergenceFunction` tiles at fixed
4096 tokens x 32768 vocabulary (about 1 GB of fp32 buffers whatever the chunk setting, more on CPU) and has
neither the cross-entropy term nor sparse top-K targets; Liger's fused JSD runs on Triton GPUs only.

Conventions (those of TRL's `generalized_jsd_loss`, so values compare one to one):
- `p` is the teacher, `q` the student, both softmax(logits / temperature); no T^2 factor.
- forward_kl = KL(p || q); reverse_kl = KL(q || p);
  jsd(beta) = beta * KL(p || m) + (1 - beta) * KL(q || m) with m = beta * p + (1 - beta) * q
  (beta = 0 is forward KL and beta = 1 reverse KL, as in TRL).
- The cross-entropy term is on the teacher's text (the labels) at temperature 1.
- loss = (alpha * sum of divergences + (1 - alpha) * sum of cross-entropies) / normalizer, sums over the
  positions whose label is not -100. `normalizer` is the number of label tokens of the whole optimizer step
  (all gradient-accumulation micro-batches, all ranks: the Trainer's `num_items_in_batch`), so accumulated
  micro-batches weigh every token equally; without it, the micro-batch's own count.

Sparse targets (`sparse_kd`): the teacher's top-K log-probs at each position, plus one "tail" bucket holding
the rest of the probability mass (1 - sum of the top-K). The student's distribution is folded into the same
K + 1 buckets (its own probabilities of the K tokens, and the mass of every other token), and the divergence is
taken between the two (K + 1)-bucket distributions. Slots with id -1 (no token, or a token the student's
tokenizer cannot map) count as part of the tail. With a temperature, the teacher's buckets are tempered as
p_b^(1/T) and renormalised (exact for the K tokens; for the tail it treats the rest as one token).
Targets from a teacher of another tokenizer (alignment.py) also carry the teacher's probabilities that no student
token stands for; they are compared to the student's largest probabilities outside the K tokens by the universal
logit distance (ULD, sorted probabilities, at temperature 1), added to the divergence with weight 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
# Teacher tail mass below this is treated as this (stored fp16 log-probs can sum to slightly more than 1).
TAIL_FLOOR = 1e-6
# A chunk never holds more logits than this (64 MB per fp32 copy; autograd keeps about ten copies), so large
# vocabularies get fewer tokens per chunk than `chunk_size` asks for (at 49k: 341 tokens; at 152k: 110).
MAX_CHUNK_LOGITS = 2**24


@dataclass(frozen=True)
class DistillSettings:
    divergence: str = "forward_kl"
    jsd_beta: float = 0.5
    temperature: float = 1.0
    alpha: float = 0.5  # weight of the divergence; 1 - alpha goes to cross-entropy on the labels
    chunk_size: int = 1024  # tokens per chunk (at most MAX_CHUNK_LOGITS // vocabulary)

    def __post_init__(self) -> None:
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, not {self.divergence!r}")


@dataclass(frozen=True)
class Head:
    """An LM head: logits = scale * (hidden @ weight.T + bias), then softcap * tanh(logits / softcap) if set."""

    weight: torch.Tensor  # [V, H]
    bias: torch.Tensor | None = None
    scale: float = 1.0
    softcap: float | None = None

    def logits(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return self.transform(F.linear(hidden, weight, bias))

    def transform(self, linear: torch.Tensor) -> torch.Tensor:
        """fp32 logits from the projection's output."""
        out = linear.float()
        if self.scale != 1.0:
            out = out * self.scale
        if self.softcap is not None:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out


@dataclass
class LossTerms:
    loss: torch.Tensor  # differentiable: weighted sums / normalizer
    kd_sum: torch.Tensor  # detached sums, for logging
    ce_sum: torch.Tensor
    tokens: torch.Tensor  # label positions in this micro-batch


# ----- per-token terms on one chunk ------------------------------------------------------------------------


def _divergence(log_p: torch.Tensor, log_q: torch.Tensor, settings: DistillSettings,
                valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row divergence between teacher log-probs `log_p` and student log-probs `log_q` (last dim = classes).

    `valid` marks the classes that exist (sparse buckets); others contribute nothing. Invalid entries are
    replaced by 0 before use so no -inf reaches a product (a masked NaN would still poison the gradient).
    """
    if valid is not None:
        log_p = torch.where(valid, log_p, 0.0)
        log_q = torch.where(valid, log_q, 0.0)

    def kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:  # KL(a || b), per row
        term = log_a.exp() * (log_a - log_b)
        return (term if valid is None else torch.where(valid, term, 0.0)).sum(-1)

    beta = settings.jsd_beta
    if settings.divergence == "forward_kl" or (settings.divergence == "jsd" and beta == 0.0):
        return kl(log_p, log_q)
    if settings.divergence == "reverse_kl" or (settings.divergence == "jsd" and beta == 1.0):
        return kl(log_q, log_p)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1 - beta))
    return beta * kl(log_p, log_m) + (1 - beta) * kl(log_q, log_m)


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row -log softmax(logits)[label] at temperature 1."""
    return torch.logsumexp(logits, dim=-1) - logits.gather(1, labels[:, None]).squeeze(1)


def sparse_buckets(student_log_probs: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor,
                   temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher and student log-probs over K + 1 buckets (the K stored tokens, then the tail), and bucket validity.

    `student_log_probs` [n, V] are already tempered; `topk_ids` [n, K] (-1 = no token), `topk_logprobs` [n, K]
    are the teacher's stored log-probs at temperature 1.
    """
    valid_k = topk_ids >= 0
    safe_ids = topk_ids.clamp(min=0)
    # Student: its probability of each stored token, and the log of the mass of every other token.
    student_k = student_log_probs.gather(1, safe_ids)
    member = torch.zeros(student_log_probs.shape, dtype=torch.uint8, device=student_log_probs.device)
    member = member.scatter_reduce_(1, safe_ids, valid_k.to(torch.uint8), reduce="amax").bool()  # -1 slots: no mark
    student_tail = torch.logsumexp(student_log_probs.masked_fill(member, float("-inf")), dim=-1, keepdim=True)
    student = torch.cat([torch.where(valid_k, student_k, float("-inf")), student_tail], dim=1)
    # Teacher: stored log-probs, the remaining mass as the tail; tempered and renormalised over the buckets.
    teacher_k = torch.where(valid_k, topk_logprobs.float(), float("-inf"))
    tail_mass = (1.0 - teacher_k.exp().sum(-1, keepdim=True)).clamp(min=TAIL_FLOOR)
    teacher = torch.log_softmax(torch.cat([teacher_k, tail_mass.log()], dim=1) / temperature, dim=1)
    valid = torch.cat([valid_k, torch.ones_like(valid_k[:, :1])], dim=1)
    return teacher, student, valid


# A chunk's targets: given the student's fp32 logits of rows [start, end), per-row divergence and cross-entropy.
ChunkTerms = Callable[[torch.Tensor, slice], tuple[torch.Tensor | None, torch.Tensor | None]]


@dataclass(frozen=True)
class TeacherTarget:
    """One local teacher's last hidden states (aligned with the student's) and LM head, and its mixture weight."""

    hidden: torch.Tensor
    head: Head
    weight: float = 1.0


def _mixture_log_probs(teachers: list[TeacherTarget], rows: slice, settings: DistillSettings,
                       vocab: int) -> torch.Tensor:
    """log of sum_i w_i softmax(teacher_i logits / T) over the rows, the weights normalised: one teacher's logits
    exist at a time (two chunk-sized buffers whatever the number of teachers). One teacher: its log-softmax."""
    total = sum(t.weight for t in teachers)
    log_p: torch.Tensor | None = None
    for teacher in teachers:
        bias = None if teacher.head.bias is None else teacher.head.bias[:vocab]
        logits = teacher.head.logits(teacher.hidden[rows], teacher.head.weight[:vocab], bias)
        log_i = torch.log_softmax(logits / settings.temperature, dim=-1)
        del logits
        if len(teachers) > 1:
            log_i = log_i + math.log(teacher.weight / total)
        log_p = log_i if log_p is None else torch.logaddexp(log_p, log_i)
    assert log_p is not None
    return log_p


def _dense_terms(teachers: list[TeacherTarget], labels: torch.Tensor, settings: DistillSettings,
                 vocab: int) -> ChunkTerms:
    def terms(student_logits: torch.Tensor, rows: slice):
        kd = ce = None
        if settings.alpha > 0:
            with torch.no_grad():
                log_p = _mixture_log_probs(teachers, rows, settings, vocab)
            log_q = torch.log_softmax(student_logits / settings.temperature, dim=-1)
            kd = _divergence(log_p, log_q, settings)
        if settings.alpha < 1:
            ce = _cross_entropy(student_logits, labels[rows])
        return kd, ce

    return terms


def uld_distance(student_log_probs: torch.Tensor, topk_ids: torch.Tensor, unmatched: torch.Tensor) -> torch.Tensor:
    """Universal logit distance (Boizard et al. 2024) on the mass no token identity links: the teacher's unmatched
    probabilities `unmatched` [n, U] (sorted, 0-padded) against the student's U largest probabilities outside the
    matched ids `topk_ids` [n, K], sum of absolute differences of the sorted values (Wasserstein-1 on sorted
    probabilities, as in ULD and TRL's GOLD). `student_log_probs` [n, V] at temperature 1."""
    probs = student_log_probs.exp()
    matched = torch.zeros(probs.shape, dtype=torch.uint8, device=probs.device)  # -1 slots (clamped to 0): no mark
    matched = matched.scatter_reduce_(1, topk_ids.clamp(min=0), (topk_ids >= 0).to(torch.uint8), reduce="amax").bool()
    width = min(unmatched.shape[1], probs.shape[1])
    largest = probs.masked_fill(matched, 0.0).topk(width, dim=-1).values
    return (largest - unmatched[:, :width].float()).abs().sum(-1)


def _sparse_terms(topk_ids: torch.Tensor, topk_logprobs: torch.Tensor, labels: torch.Tensor,
                  settings: DistillSettings, unmatched: torch.Tensor | None = None) -> ChunkTerms:
    # Positions without any stored token (e.g. the end-of-turn tokens after the teacher's answer) get no divergence.
    has_target = (topk_ids >= 0).any(-1)
    has_unmatched = None if unmatched is None else (unmatched > 0).any(-1) & has_target

    def terms(student_logits: torch.Tensor, rows: slice):
        kd = ce = None
        if settings.alpha > 0:
            log_q = torch.log_softmax(student_logits / settings.temperature, dim=-1)
            log_p, log_q_buckets, valid = sparse_buckets(log_q, topk_ids[rows], topk_logprobs[rows],
                                                         settings.temperature)
            kd = torch.where(has_target[rows], _divergence(log_p, log_q_buckets, settings, valid), 0.0)
            if unmatched is not None and has_unmatched is not None:  # cross-tokenizer targets: ULD on the rest
                log_q1 = log_q if settings.temperature == 1.0 else torch.log_softmax(student_logits, dim=-1)
                uld = uld_distance(log_q1, topk_ids[rows], unmatched[rows])
                kd = kd + torch.where(has_unmatched[rows], uld, 0.0)
        if settings.alpha < 1:
            ce = _cross_entropy(student_logits, labels[rows])
        return kd, ce

    return terms


# ----- the chunked function ---------------------------------------------------------------------------------


class _ChunkedHeadLoss(torch.autograd.Function):
    """sum over chunks of (alpha * divergence + (1 - alpha) * cross-entropy), from hidden states and head weights.

    The forward pass computes each chunk's gradient right away and keeps only the gradients (sizes of the inputs),
    never the chunk's logits; backward scales them. Autograd differentiates the loss with respect to the chunk's
    projection output (n x V); the projection's own gradients are two matrix products accumulated in place, so no
    vocabulary-sized weight gradient is allocated per chunk.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, head: Head, terms: ChunkTerms, settings: DistillSettings):
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        need_bias = need_bias and bias is not None
        grad_hidden = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_bias else None
        kd_total = hidden.new_zeros((), dtype=torch.float32)
        ce_total = hidden.new_zeros((), dtype=torch.float32)
        chunk = max(1, min(settings.chunk_size, MAX_CHUNK_LOGITS // weight.shape[0]))
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, min(start + chunk, hidden.shape[0]))
            with torch.enable_grad():
                linear = F.linear(hidden[rows].detach(), weight.detach(), None if bias is None else bias.detach())
                linear.requires_grad_(need_hidden or need_weight or need_bias)
                kd, ce = terms(head.transform(linear), rows)
                objective = linear.new_zeros((), dtype=torch.float32)
                if kd is not None:
                    kd_sum = kd.sum()
                    objective = objective + settings.alpha * kd_sum
                    kd_total += kd_sum.detach()
                if ce is not None:
                    ce_sum = ce.sum()
                    objective = objective + (1 - settings.alpha) * ce_sum
                    ce_total += ce_sum.detach()
                grad_linear = torch.autograd.grad(objective, linear)[0] if objective.requires_grad else None
            del linear, kd, ce, objective
            if grad_linear is None:
                continue
            with torch.autocast(hidden.device.type, enabled=False):
                if grad_hidden is not None:
                    grad_hidden[rows] = grad_linear.to(weight.dtype).mm(weight).float()
                grad_linear = grad_linear.float()
                if grad_weight is not None:
                    grad_weight.addmm_(grad_linear.t(), hidden[rows].float())
                if grad_bias is not None:
                    grad_bias += grad_linear.sum(0)
            del grad_linear
        ctx.grads = [grad_hidden, grad_weight, grad_bias]
        ctx.dtypes = [hidden.dtype, weight.dtype, None if bias is None else bias.dtype]
        total = settings.alpha * kd_total + (1 - settings.alpha) * ce_total
        ctx.mark_non_differentiable(kd_total, ce_total)
        return total, kd_total, ce_total

    @staticmethod
    def backward(ctx, grad_total, _kd, _ce):
        out = [None if g is None else (g * grad_total).to(dtype) for g, dtype in zip(ctx.grads, ctx.dtypes)]
        ctx.grads = None
        return *out, None, None, None


def _reduce(total: torch.Tensor, kd: torch.Tensor, ce: torch.Tensor, tokens: torch.Tensor,
            normalizer: torch.Tensor | int | None) -> LossTerms:
    if normalizer is None:
        normalizer = tokens.clamp(min=1)  # a micro-batch without label tokens gives a finite zero
    elif isinstance(normalizer, torch.Tensor):
        normalizer = normalizer.to(total.device)
    return LossTerms(loss=total / normalizer, kd_sum=kd, ce_sum=ce, tokens=tokens)


def _valid_rows(labels: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Only positions with a label are projected through the LM head (the prompt costs nothing here)."""
    mask = labels != -100
    return (labels[mask], *(t[mask] for t in tensors))


def dense_kd_loss(student_hidden: torch.Tensor, student_head: Head, teacher_hidden: torch.Tensor, teacher_head: Head,
                  labels: torch.Tensor, settings: DistillSettings,
                  normalizer: torch.Tensor | int | None = None) -> LossTerms:
    """Online KD against a teacher's hidden states. Shapes: hidden [..., H], labels [...] (-100 = ignored), both
    already aligned (the hidden state at a position predicts the label at that position).

    The two heads may have more rows than the shared vocabulary (padding rows); both are cut to the smaller one.
    """
    return mixture_kd_loss(student_hidden, student_head, [TeacherTarget(teacher_hidden, teacher_head)], labels,
                           settings, normalizer)


def mixture_kd_loss(student_hidden: torch.Tensor, student_head: Head, teachers: list[TeacherTarget],
                    labels: torch.Tensor, settings: DistillSettings,
                    normalizer: torch.Tensor | int | None = None) -> LossTerms:
    """Online KD against the weighted mixture of several local teachers' distributions (sharing the student's
    tokenizer): p = sum_i w_i p_i / sum_i w_i at the kd temperature, then the divergence as for one teacher."""
    mask = labels != -100
    labels, student_hidden = labels[mask], student_hidden[mask]
    teachers = [TeacherTarget(t.hidden[mask], t.head, t.weight) for t in teachers]
    vocab = min(student_head.weight.shape[0], *(t.head.weight.shape[0] for t in teachers))
    terms = _dense_terms(teachers, labels, settings, vocab)
    bias = None if student_head.bias is None else student_head.bias[:vocab]
    total, kd, ce = _ChunkedHeadLoss.apply(student_hidden, student_head.weight[:vocab], bias, student_head, terms,
                                           settings)
    return _reduce(total, kd, ce, labels.new_tensor(labels.numel()), normalizer)


def sparse_kd_loss(student_hidden: torch.Tensor, student_head: Head, topk_ids: torch.Tensor,
                   topk_logprobs: torch.Tensor, labels: torch.Tensor, settings: DistillSettings,
                   normalizer: torch.Tensor | int | None = None, unmatched: torch.Tensor | None = None) -> LossTerms:
    """KD against stored teacher top-K log-probs. Shapes: hidden [..., H], topk_* [..., K], labels [...];
    `unmatched` [..., U]: teacher probabilities no student token stands for (cross-tokenizer targets), for ULD."""
    rest = () if unmatched is None else (unmatched,)
    labels, student_hidden, topk_ids, topk_logprobs, *kept = _valid_rows(labels, student_hidden, topk_ids,
                                                                         topk_logprobs, *rest)
    topk_ids = torch.where(topk_ids < student_head.weight.shape[0], topk_ids, -1)  # ids the student lacks: tail
    terms = _sparse_terms(topk_ids, topk_logprobs, labels, settings, kept[0] if kept else None)
    total, kd, ce = _ChunkedHeadLoss.apply(student_hidden, student_head.weight, student_head.bias, student_head, terms,
                                           settings)
    return _reduce(total, kd, ce, labels.new_tensor(labels.numel()), normalizer)
