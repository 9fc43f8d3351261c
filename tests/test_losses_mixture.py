"""The mixture kd loss (several local teachers sharing the student's tokenizer) against a brute-force reference on
full logits, with the mixture written out as probabilities: values and gradients; one teacher is the plain loss."""

from __future__ import annotations

import pytest
import torch

from distilflow.train.losses import DistillSettings, Head, TeacherTarget, dense_kd_loss, mixture_kd_loss
from test_losses import _check_grads, _reference_divergence

V, HS, N = 97, 16, 40


def _teachers(seed: int, sizes: list[int], vocab: list[int] | None = None) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for size, v in zip(sizes, vocab or [V] * len(sizes)):
        out += [torch.randn(N, size, generator=g), torch.randn(v, size, generator=g) * 0.7]
    return out


def _student(seed: int):
    g = torch.Generator().manual_seed(seed + 1)
    hidden = torch.randn(N, HS, generator=g, requires_grad=True)
    weight = (torch.randn(V, HS, generator=g) * 0.5).requires_grad_()
    labels = torch.randint(0, V, (N,), generator=g)
    labels[torch.rand(N, generator=g) < 0.3] = -100
    return hidden, weight, labels


def _reference(hidden, weight, teachers, weights, labels, settings: DistillSettings):
    """The mixture p = sum_i w_i softmax(t_i / T) / sum w, in float64 probabilities, then the divergence."""
    vocab = min(weight.shape[0], *(tw.shape[0] for _, tw in teachers))
    s = hidden.double() @ weight.double()[:vocab].T
    p = sum(w * torch.softmax((th.double() @ tw.double()[:vocab].T) / settings.temperature, -1)
            for (th, tw), w in zip(teachers, weights)) / sum(weights)
    mask = labels != -100
    div = _reference_divergence(p.log(), torch.log_softmax(s / settings.temperature, -1), settings.divergence,
                                settings.jsd_beta)
    ce = -torch.log_softmax(s, -1).gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
    total = settings.alpha * div[mask].sum() + (1 - settings.alpha) * ce[mask].sum()
    return total / mask.sum(), div[mask].sum()


@pytest.mark.parametrize("divergence,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.3)])
@pytest.mark.parametrize("temperature,chunk_size", [(1.0, 7), (2.0, 64)])
def test_mixture_matches_the_weighted_mixture_of_full_distributions(divergence, beta, temperature, chunk_size):
    hidden, weight, labels = _student(0)
    t1h, t1w, t2h, t2w, t3h, t3w = _teachers(0, [24, 12, 20], vocab=[V, V + 5, V])  # a padded head is cut to V
    weights = [1.0, 2.0, 0.5]
    settings = DistillSettings(divergence=divergence, jsd_beta=beta, temperature=temperature, alpha=0.6,
                               chunk_size=chunk_size)
    targets = [TeacherTarget(t1h, Head(t1w), 1.0), TeacherTarget(t2h, Head(t2w), 2.0), TeacherTarget(t3h, Head(t3w), 0.5)]
    ours = mixture_kd_loss(hidden, Head(weight), targets, labels, settings)
    ref_loss, ref_kd = _reference(hidden, weight, [(t1h, t1w), (t2h, t2w), (t3h, t3w)], weights, labels, settings)
    torch.testing.assert_close(ours.loss, ref_loss.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.kd_sum, ref_kd.float(), rtol=1e-5, atol=1e-5)
    _check_grads(ours.loss, ref_loss, [hidden, weight])


def test_one_teacher_is_the_plain_loss_and_equal_teachers_are_one_teacher():
    hidden, weight, labels = _student(3)
    th, tw = _teachers(3, [24])
    settings = DistillSettings(divergence="jsd", jsd_beta=0.4, temperature=1.5, alpha=0.8, chunk_size=5)
    plain = dense_kd_loss(hidden, Head(weight), th, Head(tw), labels, settings)
    twice = mixture_kd_loss(hidden, Head(weight), [TeacherTarget(th, Head(tw), 1.0), TeacherTarget(th, Head(tw), 3.0)],
                            labels, settings)
    torch.testing.assert_close(twice.loss, plain.loss, rtol=1e-5, atol=1e-6)
    # A teacher with a tiny weight hardly moves the target; a dominant one decides it.
    other_h, other_w = _teachers(9, [24])
    dominant = mixture_kd_loss(hidden, Head(weight), [TeacherTarget(th, Head(tw), 1e6),
                                                      TeacherTarget(other_h, Head(other_w), 1.0)], labels, settings)
    torch.testing.assert_close(dominant.loss, plain.loss, rtol=1e-4, atol=1e-5)
