"""What every training method shares: a library of steps, not a script. Each method module (sft.py, kd.py,
sparse_kd.py, on_policy.py) is the recipe a reader follows top to bottom, and calls these steps in this order:

    rows = synthetic_rows(ctx)                      # the teacher's accepted rows; the one "nothing to train on" error
    model, tokenizer = load_student_to_train(ctx)   # the student as given, or pruned (student.py)
    metrics = fit(ctx, plan, model, tokenizer)      # arguments, callbacks, resume, train, validate, save

supplying only what is its own as a `MethodPlan`: how synthetic rows become dataset rows, its trainer class, its
extra trainer arguments.

In a multi-process launch (accelerate / torchrun) every process runs this; only the main process writes files
(logs, TensorBoard, the final model) and the progress bar. The Trainer saves checkpoints the same way.
Heavy libraries (torch, transformers, TRL, datasets) are imported inside the functions that train, so that the
preflight of a method (run at every command) stays fast.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilflow.dist import is_main_process
from distilflow.errors import StageError
from distilflow.io import atomic_folder, iter_jsonl
from distilflow.models import load_causal_lm, pick_device, pick_dtype
from distilflow.train.student import load_student

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig

    from distilflow.jobs.context import StageContext
    from distilflow.jobs.progress import StageProgress
    from distilflow.jobspec import JobSpec, TeacherSpec

log = logging.getLogger(__name__)
Row = dict[str, Any]
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


# ----- what a method supplies ----------------------------------------------------------------------------------


@dataclass
class MethodPlan:
    """The method-specific part of a training: its dataset rows, trainer class and extra arguments."""

    method: str  # training.method, recorded in the stage's metrics
    trainer_class: type
    train_rows: list[Row]
    validation_rows: list[Row]
    arguments: dict[str, Any] = field(default_factory=dict)  # SFTConfig settings that override the spec's
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. distillation settings, teacher, collator
    # What the trained trainer adds to the stage's metrics (e.g. on_policy's samples, teacher calls, time split).
    report: Callable[[Any], dict[str, Any]] | None = None


# ----- rows and student ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticRows:
    """The generate stage's accepted rows (chat form, the teacher's answer last) of each split."""

    train: list[Row]
    validation: list[Row]


def synthetic_rows(ctx: "StageContext") -> SyntheticRows:
    train_path = ctx.paths.synthetic_split("train")
    train = list(iter_jsonl(train_path))
    if not train:
        raise StageError(f"no training rows in {train_path}; run the generate stage first")
    return SyntheticRows(train, list(iter_jsonl(ctx.paths.synthetic_split("validation"))))


def prompt_completion_rows(rows: list[Row], prompt_format: str = "chat") -> list[Row]:
    """Synthetic chat rows -> TRL's prompt/completion form (TRL then masks the prompt's loss): conversational for a
    chat student, plain text for a completion student (TRL appends the end-of-sequence token to the completion)."""
    from distilflow.models.prompts import completion_answer, render_completion

    if prompt_format == "completion":
        return [{"prompt": render_completion(row["messages"][:-1]),
                 "completion": completion_answer(row["messages"][-1]["content"])} for row in rows]
    return [{"prompt": row["messages"][:-1], "completion": row["messages"][-1:]} for row in rows]


def load_student_to_train(ctx: "StageContext") -> tuple[Any, Any]:
    """Model and tokenizer, loaded on the CPU: the Trainer moves the model to each process's device. Only the main
    process saves a pruned student's initial copy."""
    return load_student(ctx, device="cpu", save=is_main_process())


def load_local_teacher(ctx: "StageContext", teacher: "TeacherSpec | None" = None) -> Any:
    """The local teacher that scores the student's tokens (kd, on_policy, layer matching), frozen, in the dtype its
    spec asks for on the training device (`teacher`: one of several, default the job's first)."""
    teacher = teacher or ctx.spec.teacher
    dtype = pick_dtype(teacher.dtype, training_device(ctx.spec))
    # Loaded on the CPU; the trainer moves it to its (per-process) device.
    model = load_causal_lm(teacher.model, device="cpu", dtype=str(dtype).removeprefix("torch."))
    return model.eval().requires_grad_(False)


# ----- trainer arguments ---------------------------------------------------------------------------------------


def training_device(spec: "JobSpec") -> str:
    """'cuda' or 'cpu': training.device 'cpu' forces the CPU, anything else trains on the GPUs when there are some."""
    return pick_device("cpu" if spec.training.device == "cpu" else "auto")


def training_arguments(ctx: "StageContext", has_validation: bool, **method_arguments: Any) -> "SFTConfig":
    """SFTConfig from the job spec (the same for every method; a method's own arguments win)."""
    from trl import SFTConfig

    spec, t = ctx.spec, ctx.spec.training
    device = training_device(spec)
    # TensorBoard is attached as a callback with our own log folder (see training_callbacks); MLflow when installed.
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
        use_cpu=device == "cpu",
        bf16=_bf16_autocast(device),
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    settings.update(method_arguments)  # e.g. sparse_kd turns packing off
    return SFTConfig(**settings)


def _bf16_autocast(device: str) -> bool:
    """Mixed precision (bf16 autocast, fp32 master weights) wherever the hardware computes bf16 natively.

    TRL's default is bf16 everywhere; on a CPU without AVX512-BF16/AMX that is slower than fp32, so it is used only
    on CPUs that have them (there, SmolLM2-135M trained about 1.2x faster than in fp32: bench/train_throughput.py).
    """
    import torch

    if device != "cpu":
        return pick_dtype("auto", device) == torch.bfloat16  # GPUs that compute bf16
    supported = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(supported and supported())


def lora_config(ctx: "StageContext") -> "LoraConfig | None":
    """peft LoraConfig from training.lora (None: full fine-tuning)."""
    lora = ctx.spec.training.lora
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def training_callbacks(ctx: "StageContext", progress: "StageProgress") -> list["TrainerCallback"]:
    """The progress bar and train_log.json, and TensorBoard scalars under the job's logs/tensorboard."""
    from transformers.integrations import TensorBoardCallback

    from distilflow.train.callbacks import ProgressCallback

    tensorboard = TensorBoardCallback()
    # The callback closes its writer when training ends and opens a new one for the final evaluation: give it the
    # job's folder (rather than a writer) so that one lands there too, not in checkpoints/runs.
    tensorboard.logging_dir = str(ctx.paths.tensorboard)
    return [ProgressCallback(progress, ctx.paths.train_log), tensorboard]


# ----- checkpoints and resume ----------------------------------------------------------------------------------


def _checkpoints(folder: Path) -> list[Path]:
    """Every checkpoint-N folder, in step order."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is not whole (None when its header reads and its size is what the header says)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 0 or length > size - 8:
            return f"{size} bytes, shorter than its header"
        try:
            header = json.loads(handle.read(length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError):
            return "its header is not readable"
    return None if size == 8 + length + end else f"{size} bytes, its header says {8 + length + end}"


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why training cannot resume from `checkpoint` (None when its files verify): trainer_state.json parses, the
    weights' headers read and match their sizes, every shard an index names is there, and the optimizer,
    scheduler and RNG states (torch zip files) are whole. A file cut short (disk full, a crash before the data
    reached the disk) would otherwise fail every resume."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "trainer_state.json is missing or unreadable"
    weights = sorted(checkpoint.glob("*.safetensors"))
    for index in checkpoint.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            return f"{index.name} is unreadable"
        if missing := sorted(shards - {p.name for p in weights}):
            return f"{missing[0]} is missing"
    if not weights and not any(checkpoint.glob("*.bin")):
        return "it holds no model weights"
    for path in weights:
        if problem := safetensors_problem(path):
            return f"{path.name}: {problem}"
    for path in [*checkpoint.glob("*.pt"), *checkpoint.glob("*.pth"), *checkpoint.glob("*.bin")]:
        try:
            zipfile.ZipFile(path).close()  # reads the zip's directory, which is at the very end
        except (OSError, zipfile.BadZipFile):
            return f"{path.name} is cut short"
    return None


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in step order whose files verify (see checkpoint_problem)."""
    return [p for p in _checkpoints(folder) if checkpoint_problem(p) is None]


def prepare_checkpoint_folder(ctx: "StageContext") -> None:
    """Drop checkpoints a kill cut short, and all checkpoints of a training with other inputs or settings."""
    folder, stamp = ctx.paths.checkpoints, ctx.paths.checkpoint_stamp
    fingerprint = ctx.fingerprints["train"]
    if folder.exists() and (not stamp.exists() or stamp.read_text().strip() != fingerprint):
        if any(folder.iterdir()):
            log.info("training inputs or settings changed: starting over (old checkpoints removed)")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint + "\n")
    # A checkpoint cut short (a kill, a full disk) would confuse resume and rotation: the previous one is used.
    for path in _checkpoints(folder):
        if (problem := checkpoint_problem(path)) is not None:
            if (path / "trainer_state.json").exists():  # written last: this one looked complete
                log.warning("checkpoint %s is damaged (%s): removed, training resumes from the one before it",
                            path.name, problem)
            shutil.rmtree(path, ignore_errors=True)


def resume_checkpoint(ctx: "StageContext", args: "SFTConfig") -> str | None:
    """The last complete checkpoint of this very training, if any (after the main process cleaned up)."""
    with args.main_process_first(desc="checkpoints"):  # other ranks look only once the main one has cleaned up
        if is_main_process():
            prepare_checkpoint_folder(ctx)
        checkpoints = complete_checkpoints(ctx.paths.checkpoints)
    resume_from = str(checkpoints[-1]) if checkpoints else None
    if resume_from and is_main_process():
        log.info("resuming training from %s", resume_from)
    return resume_from


# ----- fit and save --------------------------------------------------------------------------------------------


def fit(ctx: "StageContext", plan: MethodPlan, model: Any, tokenizer: Any) -> dict[str, Any]:
    """Train (resuming where a previous run stopped), validate, save student/final; returns the stage's metrics."""
    from datasets import Dataset
    from transformers import PrinterCallback

    main = is_main_process()
    train_dataset = Dataset.from_list(plan.train_rows)
    eval_dataset = Dataset.from_list(plan.validation_rows) if plan.validation_rows else None
    args = training_arguments(ctx, eval_dataset is not None, **plan.arguments)
    resume_from = resume_checkpoint(ctx, args)
    description = f"training student ({plan.method})"
    with ctx.progress("train", None, description) if main else contextlib.nullcontext() as progress:
        trainer = plan.trainer_class(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                                     processing_class=tokenizer, peft_config=lora_config(ctx),
                                     callbacks=[*(training_callbacks(ctx, progress) if main else []),
                                                *ctx.callbacks],
                                     **plan.trainer_kwargs)
        trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; our progress bar shows the loss
        result = trainer.train(resume_from_checkpoint=resume_from)
        metrics: dict[str, Any] = {"method": plan.method, "train_rows": len(train_dataset),
                                   "validation_rows": len(eval_dataset) if eval_dataset is not None else 0,
                                   "steps": trainer.state.global_step, "train_loss": result.training_loss,
                                   "resumed_from": resume_from}
        metrics.update(_last_logged_terms(trainer.state.log_history))
        if eval_dataset is not None:
            metrics.update(_validation_metrics(trainer.evaluate()))
        if plan.report is not None:
            metrics.update(plan.report(trainer))
    if main:
        save_final_model(ctx, trainer.model, tokenizer)
    return metrics


# The loss terms a distillation trainer logs next to the loss (distill_trainer.py).
LOSS_TERMS = ("kd_loss", "ce_loss", "hidden_loss", "attention_loss")


def _last_logged_terms(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The last logged training value of each distillation term (train_kd_loss, train_ce_loss, ...)."""
    found: dict[str, float] = {}
    for entry in reversed(log_history):
        for key in LOSS_TERMS:
            if key in entry and f"train_{key}" not in found:
                found[f"train_{key}"] = entry[key]
    return found


def _validation_metrics(evaluation: dict[str, float]) -> dict[str, float]:
    metrics = {"validation_loss": evaluation["eval_loss"]}
    for key in LOSS_TERMS:
        if f"eval_{key}" in evaluation:
            metrics[f"validation_{key}"] = evaluation[f"eval_{key}"]
    return metrics


def save_final_model(ctx: "StageContext", model: Any, tokenizer: Any) -> None:
    """Write the trained student (safetensors) to student/final, all or nothing.

    LoRA adapters are merged into the model when training.lora.merge (a plain HF model, the default); otherwise
    the folder holds the adapter, which transformers loads on top of its base model.
    """
    from accelerate.utils import is_peft_model

    from distilflow.train.layer_matching import detach_projections

    lora = ctx.spec.training.lora
    if is_peft_model(model) and (lora is None or lora.merge):
        model = model.merge_and_unload()
    detach_projections(model.get_base_model() if is_peft_model(model) else model)  # training-only, never saved
    # Gradient checkpointing turns the key/value cache off in the config; a saved model without it would generate
    # token by token over the whole sequence (many times slower), in evaluation and for every user.
    model.config.use_cache = True
    if is_peft_model(model) and ctx.spec.student.prune is not None:
        # The adapter's base is the pruned copy, not the model it was pruned from (whose extra layers it would meet).
        for config in model.peft_config.values():
            config.base_model_name_or_path = str(ctx.paths.student_initial)
    with atomic_folder(ctx.paths.student_final) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.padding_side = "left"  # the saved student is used for generation
        tokenizer.save_pretrained(staging)
