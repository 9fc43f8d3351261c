"""One rank of the two-process FSDP2 check (tests/test_fsdp_cpu.py), started by torch.distributed.run with gloo.

The student is sharded with torch's `fully_shard` (each decoder layer, then the whole model), and distilflow's
distillation loss runs the way DistillationTrainer runs it: inside the sharded model's forward (TRL's forward
redirection), reading the LM head through distill_trainer.lm_head, which gathers its FSDP2 shards (a DTensor). Each
rank's loss must equal the unsharded model's on its batch, and the gradients the unsharded gradient of the mean loss
over both batches; rank 0 prints them as JSON.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM

from distilflow.train.distill_trainer import _ForwardRedirection, last_hidden_state, lm_head
from distilflow.train.losses import DistillSettings, dense_kd_loss


def kd_loss(student, teacher, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        teacher_hidden = last_hidden_state(teacher, {"input_ids": ids})
    hidden = last_hidden_state(student, {"input_ids": ids})
    return dense_kd_loss(hidden[:, :-1], lm_head(student), teacher_hidden[:, :-1], lm_head(teacher), labels[:, 1:],
                         DistillSettings(chunk_size=5)).loss


def main() -> None:
    student_path, teacher_path = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.float32).eval()
    batches = []
    for rank in range(dist.get_world_size()):  # each rank its own batch, as in data-parallel training
        ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(rank))
        labels = ids.clone()
        labels[:, :4] = -100  # the prompt part
        batches.append((ids, labels))
    ids, labels = batches[dist.get_rank()]

    # Unsharded, on every batch: FSDP averages the ranks' gradients, i.e. the gradient of the mean loss.
    reference = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32)
    losses = [kd_loss(reference, teacher, *batch) for batch in batches]
    (sum(losses) / len(losses)).backward()
    expected = losses[dist.get_rank()]

    sharded = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32)
    for layer in sharded.model.layers:
        fully_shard(layer)
    fully_shard(sharded)
    head_is_sharded = isinstance(sharded.lm_head.weight, DTensor)
    loss = _ForwardRedirection()(sharded, sharded, kd_loss, sharded, teacher, ids, labels)
    loss.backward()

    worst = 0.0
    for (name, got), (_, want) in zip(sharded.named_parameters(), reference.named_parameters()):
        grad = got.grad.full_tensor() if isinstance(got.grad, DTensor) else got.grad
        worst = max(worst, float((grad - want.grad).abs().max() / (want.grad.abs().max() + 1e-12)))
    if dist.get_rank() == 0:
        print(json.dumps({"world": dist.get_world_size(), "head_is_sharded": head_is_sharded,
                          "loss": float(loss), "expected": float(expected), "worst_grad_rel_diff": worst}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
