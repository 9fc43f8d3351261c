"""Gradient accumulation in the kd trainer: two micro-batches of 2 make the same update as one batch of 4, even
when the micro-batches hold very different numbers of answer tokens (normalised by the step's token count)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(120)


def _rows() -> list[dict]:
    # Answers of very different lengths, so per-micro-batch means would weigh tokens unequally.
    lengths = [1, 30, 2, 25]
    return [{"prompt": [{"role": "user", "content": f"Say something, number {i}."}],
             "completion": [{"role": "assistant", "content": " ".join(["fine thanks"] * n)}]}
            for i, n in enumerate(lengths)]


def _one_step(tmp_path, tiny_models, batch: int, accumulation: int, alpha: float):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig

    from distilflow.models import load_tokenizer
    from distilflow.train.distill_trainer import DistillationTrainer
    from distilflow.train.losses import DistillSettings

    torch.manual_seed(0)
    student = AutoModelForCausalLM.from_pretrained(tiny_models["student"], dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(tiny_models["teacher"], dtype=torch.float32)
    args = SFTConfig(output_dir=str(tmp_path / f"out-{batch}-{accumulation}"), per_device_train_batch_size=batch,
                     gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=1.0, optim="sgd",
                     lr_scheduler_type="constant", use_cpu=True, report_to=[], save_strategy="no", seed=0,
                     data_seed=0, disable_tqdm=True, max_length=256)
    trainer = DistillationTrainer(model=student, args=args, train_dataset=Dataset.from_list(_rows()),
                                  processing_class=load_tokenizer(str(tiny_models["student"]), padding_side="right"),
                                  distill=DistillSettings(divergence="jsd", jsd_beta=0.5, alpha=alpha, chunk_size=16),
                                  teacher_model=teacher)
    trainer.train()
    return {k: v.detach().clone() for k, v in student.state_dict().items()}


@pytest.mark.slow  # tens of seconds: runs in CI (bash scripts/test.sh), not in -m "not slow"
@pytest.mark.parametrize("alpha", [0.5])
def test_accumulated_micro_batches_update_like_one_batch(tmp_path, tiny_models, alpha):
    import torch
    from transformers import AutoModelForCausalLM

    whole = _one_step(tmp_path, tiny_models, batch=4, accumulation=1, alpha=alpha)
    accumulated = _one_step(tmp_path, tiny_models, batch=2, accumulation=2, alpha=alpha)
    before = AutoModelForCausalLM.from_pretrained(tiny_models["student"], dtype=torch.float32).state_dict()
    moved = 0
    for key, value in whole.items():
        torch.testing.assert_close(accumulated[key], value, rtol=1e-4, atol=2e-6, msg=key)
        moved += int(not torch.allclose(value, before[key]))
    assert moved > 0  # the step did change the weights
