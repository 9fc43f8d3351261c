"""Method `sft`: supervised fine-tuning on the teacher's answers (sequence-level KD), loss on assistant
tokens only. TRL's SFTTrainer does the work: prompt/completion rows give it the completion-only mask."""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING, Any

from distilflow.io import iter_jsonl
from distilflow.errors import StageError
from distilflow.dist import is_main_process
from distilflow.io import atomic_folder
from distilflow.train.student import load_student

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext

log = logging.getLogger(__name__)


def prompt_completion_rows(path) -> list[dict[str, Any]]:
    """Synthetic chat rows -> TRL's conversational prompt/completion form."""
    return [{"prompt": row["messages"][:-1], "completion": row["messages"][-1:]} for row in iter_jsonl(path)]


def training_arguments(ctx: "StageContext", has_validation: bool, **extra: Any):
    """SFTConfig from the job spec (shared by every method built on the HF Trainer)."""
    import torch
    from trl import SFTConfig

    spec, t = ctx.spec, ctx.spec.training
    use_cpu = t.device == "cpu" or not torch.cuda.is_available()
    # TensorBoard is attached as a callback with our own log folder (see logging_callbacks); MLflow when installed.
    report_to = ["mlflow"] if importlib.util.find_spec("mlflow") else []
    settings: dict[str, Any] = dict(
        output_dir=str(ctx.paths.checkpoints),
        learning_rate=spec.hyperparameters.learning_rate,
        per_device_train_batch_size=spec.hyperparameters.batch_size,
        per_device_eval_batch_size=spec.hyperparameters.batch_size,
        num_train_epochs=spec.hyperparameters.num_epochs,
        max_steps=t.max_steps or -1,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler,
        seed=t.seed,
        data_seed=t.seed,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        logging_steps=t.logging_steps,
        eval_strategy="epoch" if has_validation else "no",
        report_to=report_to,
        max_length=t.max_seq_length,
        packing=t.packing,
        # TRL turns this on by default; small students train faster without it (memory is rarely the limit).
        gradient_checkpointing=t.gradient_checkpointing,
        use_cpu=use_cpu,
        bf16=_bf16_autocast(use_cpu),
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    settings.update(extra)  # a method's own settings win (e.g. sparse_kd turns packing off)
    return SFTConfig(**settings)


def _bf16_autocast(use_cpu: bool) -> bool:
    """Mixed precision (bf16 autocast, fp32 master weights) wherever the hardware computes bf16 natively.

    TRL's default is bf16 everywhere; on a CPU without AVX512-BF16/AMX that is slower than fp32, so it is used only
    on CPUs that have them (there, SmolLM2-135M trained about 1.2x faster than in fp32: bench/train_throughput.py).
    """
    import torch

    if not use_cpu:
        return torch.cuda.is_bf16_supported()
    supported = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(supported and supported())


def logging_callbacks(ctx: "StageContext") -> list:
    """TensorBoard scalars (train/validation loss, distillation terms) under the job's logs/tensorboard."""
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    # The callback closes its writer when training ends and opens a new one for the final evaluation: give it the
    # job's folder (rather than a writer) so that one lands there too, not in checkpoints/runs.
    callback.logging_dir = str(ctx.paths.tensorboard)
    return [callback]


def train_sft(ctx: "StageContext") -> dict[str, Any]:
    from datasets import Dataset
    from trl import SFTTrainer

    from distilflow.train.fit import fit

    train_rows = prompt_completion_rows(ctx.paths.synthetic_split("train"))
    if not train_rows:
        raise StageError(f"no training rows in {ctx.paths.synthetic_split('train')}; run the generate stage first")
    validation_rows = prompt_completion_rows(ctx.paths.synthetic_split("validation"))
    model, tokenizer = load_student(ctx, device="cpu", save=is_main_process())
    return fit(ctx, method="sft", trainer_class=SFTTrainer, model=model, tokenizer=tokenizer,
               train_dataset=Dataset.from_list(train_rows),
               eval_dataset=Dataset.from_list(validation_rows) if validation_rows else None)


def save_final_model(ctx: "StageContext", model, tokenizer) -> None:
    """Write the trained student (safetensors) to student/final, all or nothing.

    LoRA adapters are merged into the model when training.lora.merge (a plain HF model, the default); otherwise
    the folder holds the adapter, which transformers loads on top of its base model.
    """
    from accelerate.utils import is_peft_model

    lora = ctx.spec.training.lora
    if is_peft_model(model) and (lora is None or lora.merge):
        model = model.merge_and_unload()
    with atomic_folder(ctx.paths.student_final) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(staging)
