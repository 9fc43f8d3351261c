"""The training recipe every method shares: arguments, resume from the last checkpoint, callbacks, train,
validate, save. A method supplies its data, its trainer class and the trainer's extra arguments.

In a multi-process launch (accelerate / torchrun) every process runs this; only the main process writes files
(logs, TensorBoard, the final model) and the progress bar. The Trainer saves checkpoints the same way.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from distilflow.dist import is_main_process
from distilflow.train.checkpoints import latest_checkpoint, remove_incomplete_checkpoints

if TYPE_CHECKING:
    from datasets import Dataset

    from distilflow.jobs.context import StageContext

log = logging.getLogger(__name__)


def lora_config(ctx: "StageContext"):
    """peft LoraConfig from training.lora (None: full fine-tuning)."""
    lora = ctx.spec.training.lora
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def prepare_checkpoint_folder(ctx: "StageContext") -> None:
    """Drop checkpoints a kill cut short, and all checkpoints of a training with other inputs or settings."""
    import shutil

    folder = ctx.paths.checkpoints
    stamp = ctx.paths.checkpoint_stamp
    fingerprint = ctx.fingerprints["train"]
    if folder.exists() and (not stamp.exists() or stamp.read_text().strip() != fingerprint):
        if any(folder.iterdir()):
            log.info("training inputs or settings changed: starting over (old checkpoints removed)")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint + "\n")
    remove_incomplete_checkpoints(folder)


def fit(ctx: "StageContext", *, method: str, trainer_class: type, model: Any, tokenizer: Any,
        train_dataset: "Dataset", eval_dataset: "Dataset | None", args_extra: dict[str, Any] | None = None,
        **trainer_kwargs: Any) -> dict[str, Any]:
    from transformers import PrinterCallback

    from distilflow.train.callbacks import ProgressCallback
    from distilflow.train.sft import logging_callbacks, save_final_model, training_arguments

    main = is_main_process()
    args = training_arguments(ctx, eval_dataset is not None, **(args_extra or {}))
    with args.main_process_first(desc="checkpoints"):  # other ranks look only once the main one has cleaned up
        if main:
            prepare_checkpoint_folder(ctx)
        resume_from = latest_checkpoint(ctx.paths.checkpoints)
    if resume_from and main:
        log.info("resuming training from %s", resume_from)

    progress_context = ctx.progress("train", None, f"training student ({method})") if main else contextlib.nullcontext()
    with progress_context as progress:
        callbacks = [ProgressCallback(progress, ctx.paths.train_log), *logging_callbacks(ctx)] \
            if main else []
        trainer = trainer_class(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                                processing_class=tokenizer, callbacks=callbacks, peft_config=lora_config(ctx),
                                **trainer_kwargs)
        trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; our progress bar shows the loss
        result = trainer.train(resume_from_checkpoint=resume_from)
        metrics: dict[str, Any] = {"method": method, "train_rows": len(train_dataset),
                                   "validation_rows": len(eval_dataset) if eval_dataset is not None else 0,
                                   "steps": trainer.state.global_step, "train_loss": result.training_loss,
                                   "resumed_from": resume_from}
        metrics.update(_last_logged(trainer, ("kd_loss", "ce_loss")))
        if eval_dataset is not None:
            evaluation = trainer.evaluate()
            metrics["validation_loss"] = evaluation["eval_loss"]
            for key in ("kd_loss", "ce_loss"):
                if f"eval_{key}" in evaluation:
                    metrics[f"validation_{key}"] = evaluation[f"eval_{key}"]
    if main:
        save_final_model(ctx, trainer.model, tokenizer)
    return metrics


def _last_logged(trainer: Any, keys: tuple[str, ...]) -> dict[str, float]:
    """The last training value of each key in the Trainer's log history."""
    found: dict[str, float] = {}
    for entry in reversed(trainer.state.log_history):
        for key in keys:
            if key in entry and f"train_{key}" not in found:
                found[f"train_{key}"] = entry[key]
    return found
