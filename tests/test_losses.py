"""The chunked distillation losses against a brute-force reference on full logits: values and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from distilflow.train.losses import DistillSettings, Head, dense_kd_loss, sparse_kd_loss

V, HS, HT, N = 97, 16, 24, 40  # vocabulary, student/teacher hidden sizes, tokens


def _inputs(seed: int = 0, teacher_vocab: int = V, bias: bool = False):
    g = torch.Generator().manual_seed(seed)
    student_hidden = torch.randn(N, HS, generator=g, requires_grad=True)
    student_weight = (torch.randn(V, HS, generator=g) * 0.5).requires_grad_()
    student_bias = (torch.randn(V, generator=g) * 0.1).requires_grad_() if bias else None
    teacher_hidden = torch.randn(N, HT, generator=g)
    teacher_weight = torch.randn(teacher_vocab, HT, generator=g) * 0.5
    labels = torch.randint(0, V, (N,), generator=g)
    labels[torch.rand(N, generator=g) < 0.3] = -100  # masked positions (prompt, padding)
    return student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, labels


def _reference_divergence(log_p: torch.Tensor, log_q: torch.Tensor, divergence: str, beta: float) -> torch.Tensor:
    """Per-row divergence written from the definitions with explicit probabilities (float64)."""
    p, q = log_p.exp(), log_q.exp()

    def kl(a, log_a, log_b):
        return torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a)).sum(-1)

    # As in TRL's generalized_jsd_loss, jsd with beta 0 / 1 means forward / reverse KL.
    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0):
        return kl(p, log_p, log_q)
    if divergence == "reverse_kl" or (divergence == "jsd" and beta == 1):
        return kl(q, log_q, log_p)
    m = beta * p + (1 - beta) * q
    return beta * kl(p, log_p, m.log()) + (1 - beta) * kl(q, log_q, m.log())


def _reference_dense(student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, labels,
                     settings: DistillSettings, normalizer=None):
    vocab = min(student_weight.shape[0], teacher_weight.shape[0])
    s = student_hidden.double() @ student_weight.double()[:vocab].T
    if student_bias is not None:
        s = s + student_bias.double()[:vocab]
    t = teacher_hidden.double() @ teacher_weight.double()[:vocab].T
    mask = labels != -100
    temperature = settings.temperature
    div = _reference_divergence(torch.log_softmax(t / temperature, -1), torch.log_softmax(s / temperature, -1),
                                settings.divergence, settings.jsd_beta)
    ce = -torch.log_softmax(s, -1).gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
    total = settings.alpha * div[mask].sum() + (1 - settings.alpha) * ce[mask].sum()
    return total / (mask.sum() if normalizer is None else normalizer), div[mask].sum(), ce[mask].sum()


def _check_grads(ours: torch.Tensor, reference: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    tensors = [t for t in tensors if t is not None]
    got = torch.autograd.grad(ours, tensors)
    want = torch.autograd.grad(reference, tensors)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b.to(a.dtype), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("divergence,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("jsd", 0.1),
                                             ("jsd", 0.0), ("jsd", 1.0)])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_dense_kd_loss_matches_full_logits(divergence, beta, temperature, chunk_size):
    sh, sw, _, th, tw, labels = _inputs()
    settings = DistillSettings(divergence=divergence, jsd_beta=beta, temperature=temperature, alpha=0.7,
                               chunk_size=chunk_size)
    ours = dense_kd_loss(sh, Head(sw), th, Head(tw), labels, settings)
    ref_loss, ref_kd, ref_ce = _reference_dense(sh, sw, None, th, tw, labels, settings)
    torch.testing.assert_close(ours.loss, ref_loss.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.kd_sum, ref_kd.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.ce_sum, ref_ce.float(), rtol=1e-5, atol=1e-5)
    assert int(ours.tokens) == int((labels != -100).sum())
    _check_grads(ours.loss, ref_loss, [sh, sw])


def test_dense_kd_loss_bias_padding_rows_and_pure_terms():
    # The teacher head has padding rows beyond the shared vocabulary; the student head has a bias.
    sh, sw, sb, th, tw, labels = _inputs(seed=3, teacher_vocab=V + 11, bias=True)
    for alpha in (0.0, 1.0, 0.25):
        settings = DistillSettings(divergence="jsd", jsd_beta=0.3, temperature=1.5, alpha=alpha, chunk_size=9)
        ours = dense_kd_loss(sh, Head(sw, sb), th, Head(tw), labels, settings)
        ref_loss, _, _ = _reference_dense(sh, sw, sb, th, tw, labels, settings)
        torch.testing.assert_close(ours.loss, ref_loss.float(), rtol=1e-5, atol=1e-6)
        _check_grads(ours.loss, ref_loss, [sh, sw, sb])


def test_dense_kd_loss_with_logit_scale_and_softcap():
    sh, sw, _, th, tw, labels = _inputs(seed=4)
    settings = DistillSettings(divergence="reverse_kl", temperature=1.0, alpha=0.5, chunk_size=5)
    ours = dense_kd_loss(sh, Head(sw, scale=0.5, softcap=3.0), th, Head(tw, softcap=3.0), labels, settings)
    # Reference: the transformed logits go through the same definitions.
    s = torch.tanh((sh @ sw.T) * 0.5 / 3.0) * 3.0
    t = torch.tanh((th @ tw.T) / 3.0) * 3.0
    mask = labels != -100
    div = _reference_divergence(torch.log_softmax(t.double(), -1), torch.log_softmax(s.double(), -1), "reverse_kl", 0)
    ce = -torch.log_softmax(s.double(), -1).gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
    ref = (0.5 * div[mask].sum() + 0.5 * ce[mask].sum()) / mask.sum()
    torch.testing.assert_close(ours.loss, ref.float(), rtol=1e-5, atol=1e-6)
    _check_grads(ours.loss, ref, [sh, sw])


def test_gradient_accumulation_normalises_by_all_tokens_of_the_step():
    """Two micro-batches normalised by the step's total token count give the gradient of the whole batch."""
    sh, sw, _, th, tw, labels = _inputs(seed=5)
    labels[:10] = -100  # the first micro-batch has far fewer label tokens than the second
    settings = DistillSettings(divergence="forward_kl", alpha=0.6, chunk_size=8)
    total_tokens = (labels != -100).sum()
    whole = dense_kd_loss(sh, Head(sw), th, Head(tw), labels, settings).loss
    grad_whole = torch.autograd.grad(whole, [sh, sw])
    parts = [dense_kd_loss(sh[s], Head(sw), th[s], Head(tw), labels[s], settings, normalizer=total_tokens).loss
             for s in (slice(0, 15), slice(15, N))]
    grad_parts = torch.autograd.grad(parts[0] + parts[1], [sh, sw])
    torch.testing.assert_close(parts[0] + parts[1], whole, rtol=1e-6, atol=1e-7)
    for a, b in zip(grad_parts, grad_whole):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # Per-micro-batch means (the usual mistake) would weigh the short micro-batch's tokens more.
    naive = sum(dense_kd_loss(sh[s], Head(sw), th[s], Head(tw), labels[s], settings).loss / 2
                for s in (slice(0, 15), slice(15, N)))
    assert not torch.isclose(naive, whole, rtol=1e-3)


def test_no_label_tokens_gives_a_finite_zero_with_gradient():
    sh, sw, _, th, tw, labels = _inputs()
    labels[:] = -100
    out = dense_kd_loss(sh, Head(sw), th, Head(tw), labels, DistillSettings())
    assert float(out.loss.detach()) == 0.0
    out.loss.backward()
    assert torch.count_nonzero(sw.grad) == 0


# ----- sparse top-K with the tail bucket ---------------------------------------------------------------------

K = 5


def _sparse_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sh, sw, sb, _, _, labels = _inputs(seed)
    # A peaked teacher distribution; its top-K ids and log-probs are what a teacher stores.
    teacher_logits = torch.randn(N, V, generator=g) * 3
    logprobs, ids = torch.log_softmax(teacher_logits, -1).topk(K, dim=-1)
    ids, logprobs = ids.clone(), logprobs.half().float()  # stored as fp16, like the teacher cache
    ids[0, 2] = -1  # an unmappable token: its mass joins the tail
    ids[1, :] = -1  # a position without stored log-probs (e.g. end of turn): cross-entropy only
    ids[2, 4] = V + 3  # an id beyond the student's vocabulary: tail as well
    ids[3] = torch.tensor([0, 1, 2, -1, -1])  # token 0 is stored while empty slots exist
    logprobs[3] = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.1]).log()
    return sh, sw, sb, ids, logprobs, labels


def _reference_sparse(sh, sw, sb, ids, logprobs, labels, settings: DistillSettings):
    """Buckets from the full student softmax: q_k for the stored tokens, the tail as 1 - sum (float64)."""
    s = sh.double() @ sw.double().T + (0 if sb is None else sb.double())
    q = torch.softmax(s / settings.temperature, -1)
    valid_k = (ids >= 0) & (ids < V)
    q_k = torch.where(valid_k, q.gather(1, ids.clamp(0, V - 1)), torch.zeros((), dtype=q.dtype))
    q_buckets = torch.cat([q_k, 1 - q_k.sum(-1, keepdim=True)], dim=1)
    p_k = torch.where(valid_k, logprobs.double().exp(), torch.zeros((), dtype=q.dtype))
    p_tail = (1 - p_k.sum(-1, keepdim=True)).clamp(min=1e-6)
    p_buckets = torch.cat([p_k, p_tail], dim=1) ** (1 / settings.temperature)
    p_buckets = p_buckets / p_buckets.sum(-1, keepdim=True)
    div = _reference_divergence(p_buckets.log(), q_buckets.log(), settings.divergence, settings.jsd_beta)
    has_target = valid_k.any(-1)  # a position without any stored token gets cross-entropy only
    ce = -torch.log_softmax(s, -1).gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
    mask = labels != -100
    kd_mask = mask & has_target
    total = settings.alpha * div[kd_mask].sum() + (1 - settings.alpha) * ce[mask].sum()
    return total / mask.sum(), div[kd_mask].sum()


@pytest.mark.parametrize("divergence,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("jsd", 0.9)])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
@pytest.mark.parametrize("chunk_size", [1, 6, 64])
def test_sparse_kd_loss_matches_full_softmax_buckets(divergence, beta, temperature, chunk_size):
    sh, sw, sb, ids, logprobs, labels = _sparse_inputs()
    labels[:3] = torch.tensor([5, 6, 7])  # keep the special rows in the loss
    settings = DistillSettings(divergence=divergence, jsd_beta=beta, temperature=temperature, alpha=0.8,
                               chunk_size=chunk_size)
    ours = sparse_kd_loss(sh, Head(sw, sb), ids, logprobs, labels, settings)
    ref_loss, ref_kd = _reference_sparse(sh, sw, sb, ids, logprobs, labels, settings)
    torch.testing.assert_close(ours.loss, ref_loss.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.kd_sum, ref_kd.float(), rtol=1e-5, atol=1e-5)
    _check_grads(ours.loss, ref_loss, [sh, sw, sb])


def test_sparse_forward_kl_with_full_coverage_equals_dense_forward_kl():
    """When the stored top-K covers the whole vocabulary, the tail is empty and sparse KD is dense KD."""
    g = torch.Generator().manual_seed(7)
    small_v = 6
    sh = torch.randn(N, HS, generator=g, requires_grad=True)
    sw = torch.randn(small_v + 1, HS, generator=g, requires_grad=True)  # one padding row the teacher never names
    teacher_logits = torch.randn(N, small_v, generator=g)
    logprobs, ids = torch.log_softmax(teacher_logits, -1).topk(small_v, dim=-1)
    labels = torch.randint(0, small_v, (N,), generator=g)
    settings = DistillSettings(divergence="forward_kl", temperature=1.0, alpha=1.0, chunk_size=8)
    sparse = sparse_kd_loss(sh, Head(sw), ids, logprobs, labels, settings)
    p = torch.softmax(teacher_logits, -1)
    log_q = torch.log_softmax(sh @ sw.T, -1)
    # The student's padding row is the (tiny) tail; the teacher's tail is the floor.
    p_full = torch.cat([p, torch.full((N, 1), 1e-6)], -1)
    p_full = p_full / p_full.sum(-1, keepdim=True)
    dense = (p_full * (p_full.log() - log_q)).sum() / N
    torch.testing.assert_close(sparse.loss, dense, rtol=1e-5, atol=1e-6)
    assert math.isfinite(float(sparse.loss))


def test_uld_compares_sorted_unmatched_mass_by_hand():
    from distilflow.train.losses import uld_distance

    log_q = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    # Token 0 is matched; the student's rest sorted is 0.3, 0.15 against the teacher's unmatched 0.2, 0.1.
    value = uld_distance(log_q, torch.tensor([[0, -1]]), torch.tensor([[0.2, 0.1]]))
    assert value.item() == pytest.approx(0.1 + 0.05)


def test_sparse_kd_loss_with_unmatched_mass_adds_uld_and_keeps_its_gradient():
    from distilflow.train.losses import uld_distance

    torch.manual_seed(0)
    hidden = torch.randn(2, 3, 8, requires_grad=True)
    head = Head(weight=torch.randn(11, 8))
    ids = torch.tensor([[[1, 2], [3, -1], [-1, -1]], [[4, 5], [6, 7], [0, 1]]])
    logprobs = torch.log(torch.tensor([[[0.5, 0.2], [0.6, 1.0], [1.0, 1.0]], [[0.3, 0.3], [0.4, 0.1], [0.2, 0.2]]]))
    unmatched = torch.tensor([[[0.2, 0.05], [0.0, 0.0], [0.0, 0.0]], [[0.1, 0.0], [0.3, 0.1], [0.0, 0.0]]])
    labels = torch.tensor([[1, 3, -100], [4, 6, 0]])
    settings = DistillSettings(alpha=1.0, chunk_size=2)
    with_uld = sparse_kd_loss(hidden, head, ids, logprobs, labels, settings, unmatched=unmatched)
    plain = sparse_kd_loss(hidden, head, ids, logprobs, labels, settings)
    mask = labels != -100
    log_q = torch.log_softmax(hidden[mask] @ head.weight.T, dim=-1)
    some = (unmatched[mask] > 0).any(-1)  # positions without unmatched mass have no ULD term
    expected = (uld_distance(log_q, ids[mask], unmatched[mask]) * some).sum() / mask.sum()
    assert (with_uld.loss - plain.loss).item() == pytest.approx(expected.item(), rel=1e-5)
    with_uld.loss.backward()
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0
