"""Intermediate-layer and attention matching: the losses against brute-force references (values and gradients),
the layer maps, the hooks that capture layer outputs, and the refusals before any teacher request."""

from __future__ import annotations

import math

import pytest
import torch

from distilflow.errors import SpecError
from distilflow.train.layer_map import LayerCounts, resolve_pairs, spread_evenly
from distilflow.train.layer_matching import attention_kl, capture_layers, hidden_state_loss


def _brute_hidden(student: list[list[float]], teacher: list[list[float]], kind: str) -> float:
    total = 0.0
    for s, t in zip(student, teacher):
        if kind == "mse":
            total += sum((a - b) ** 2 for a, b in zip(s, t)) / len(s)
        else:
            dot = sum(a * b for a, b in zip(s, t))
            norm = math.sqrt(sum(a * a for a in s)) * math.sqrt(sum(b * b for b in t))
            total += 1 - dot / norm
    return total


def _brute_attention(student: list, teacher: list) -> float:
    """KL(teacher || student) per query row, heads paired (or each side's heads averaged), mean over heads."""
    if len(student[0]) != len(teacher[0]):
        student = [[[sum(h[k] for h in row) / len(row) for k in range(len(row[0]))]] for row in student]
        teacher = [[[sum(h[k] for h in row) / len(row) for k in range(len(row[0]))]] for row in teacher]
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        per_head = []
        for s, t in zip(s_row, t_row):
            per_head.append(sum(p * math.log(p / q) for p, q in zip(t, s) if p > 0))
        total += sum(per_head) / len(per_head)
    return total


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_hidden_state_loss_matches_brute_force_in_value_and_gradient(kind):
    torch.manual_seed(0)
    student = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(5, 6, dtype=torch.float64)
    loss = hidden_state_loss(student, teacher, kind)
    assert loss.item() == pytest.approx(_brute_hidden(student.tolist(), teacher.tolist(), kind), rel=1e-5)
    (grad,) = torch.autograd.grad(loss, student)
    # Gradient by central differences of the brute-force reference.
    eps, numeric = 1e-6, torch.zeros_like(student)
    base = student.detach().tolist()
    for i in range(5):
        for j in range(6):
            up = [row[:] for row in base]
            down = [row[:] for row in base]
            up[i][j] += eps
            down[i][j] -= eps
            numeric[i, j] = (_brute_hidden(up, teacher.tolist(), kind) - _brute_hidden(down, teacher.tolist(), kind)) / (2 * eps)
    assert torch.allclose(grad.float(), numeric.float(), atol=1e-4)


@pytest.mark.parametrize("heads", [(4, 4), (2, 4)], ids=["heads_matched", "heads_averaged"])
def test_attention_kl_matches_brute_force_in_value_and_gradient(heads):
    torch.manual_seed(1)
    n, keys = 3, 5
    causal = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)  # masked keys: p = 0
    def dist(h: int, grad: bool) -> torch.Tensor:
        logits = torch.randn(n, h, keys, dtype=torch.float64).masked_fill(~causal[:, None, :], float("-inf"))
        return logits.requires_grad_(grad)
    student_logits, teacher = dist(heads[0], True), dist(heads[1], False).softmax(-1)
    student = student_logits.softmax(-1)
    loss = attention_kl(student, teacher)
    assert loss.item() == pytest.approx(_brute_attention(student.tolist(), teacher.tolist()), rel=1e-5)
    assert torch.isfinite(loss)
    (grad,) = torch.autograd.grad(loss, student_logits)
    assert torch.isfinite(grad).all() and grad[~causal[:, None, :].expand_as(grad)].abs().max() == 0
    # The gradient of KL(p || softmax(z)) in z, averaged over heads, is (softmax(z) - p) / heads (matched heads).
    if heads[0] == heads[1]:
        expected = (student.detach() - teacher) / heads[0]
        assert torch.allclose(grad.masked_fill(~causal[:, None, :], 0), expected.masked_fill(~causal[:, None, :], 0),
                              atol=1e-6)
    assert attention_kl(teacher, teacher).abs().item() < 1e-6  # zero when the distributions agree


def test_layer_maps_auto_and_explicit_and_out_of_range():
    assert spread_evenly(2, 4) == [(0, 1), (1, 3)]
    assert spread_evenly(3, 3) == [(0, 0), (1, 1), (2, 2)]
    assert spread_evenly(4, 30)[-1] == (3, 29)
    pruned = LayerCounts(student=2, teacher=4, kept=[0, 3])
    assert resolve_pairs("auto", pruned, "x") == [(0, 0), (1, 3)]  # each layer to the one it was copied from
    assert resolve_pairs("auto", LayerCounts(2, 4, None), "x") == [(0, 1), (1, 3)]
    assert resolve_pairs([[1, 2]], pruned, "x") == [(1, 2)]
    with pytest.raises(SpecError, match="training.hidden_states.layers: student layer 2 does not exist"):
        resolve_pairs([[2, 0]], pruned, "training.hidden_states.layers")
    with pytest.raises(SpecError, match="teacher layer 4 does not exist .* 4 layers"):
        resolve_pairs([[0, 4]], pruned, "training.attention.layers")


def test_hooks_capture_the_layer_outputs_and_attention_transformers_reports(tiny_models):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models["teacher"]).eval()
    model.set_attn_implementation("eager")
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():  # transformers installs its own recording hooks at the first such call
        model(input_ids=ids, output_hidden_states=True, output_attentions=True)
    hooks_before = [len(layer._forward_hooks) + len(layer.self_attn._forward_hooks) for layer in model.model.layers]
    with torch.no_grad(), capture_layers(model, hidden=[0, 2], attention=[1]) as captured:
        out = model(input_ids=ids, output_hidden_states=True, output_attentions=True)
    assert sorted(captured.hidden) == [0, 2] and sorted(captured.attention) == [1]
    # hidden_states[i + 1] is layer i's output (the last one is normed, so only inner layers compare directly)
    assert torch.allclose(captured.hidden[0], out.hidden_states[1]) and torch.allclose(captured.hidden[2], out.hidden_states[3])
    assert torch.allclose(captured.attention[1], out.attentions[1])
    # our hooks are gone after the block (transformers keeps its own)
    assert [len(layer._forward_hooks) + len(layer.self_attn._forward_hooks) for layer in model.model.layers] == hooks_before
