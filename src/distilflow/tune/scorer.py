"""What a tuning trial adds to its training: the student answers the validation inputs after each epoch and at the
end, scored with the task's primary metric (never the test set); each score goes to the Optuna trial, whose
pruner may stop a trial that lags the others after the same number of evaluations; the time budget stops one that
runs past it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from distilflow.models import GenerationParams, generate_batch, render_prompt
from distilflow.tasks import Example, Task

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answering:
    """How the student answers the validation inputs: as the job's evaluation has it answer the test inputs."""

    prompt_format: str
    max_tokens: int
    batch_size: int
    choices: tuple[str, ...] = ()  # evaluation.answer_mode rank: the labels it ranks (else it generates)


def _answers(model: Any, tokenizer: Any, batch: list[Any], how: Answering) -> list[str]:
    if how.choices:
        from distilflow.models.prompts import completion_answer
        from distilflow.models.scoring import score_labels

        prompts = [render_prompt(tokenizer, messages, how.prompt_format) for messages in batch]
        continuations = [completion_answer(c) if how.prompt_format == "completion" else c for c in how.choices]
        return [how.choices[best] for best in score_labels(model, tokenizer, prompts, continuations).best]
    outputs = generate_batch(model, tokenizer, batch, GenerationParams(max_tokens=how.max_tokens), how.prompt_format)
    return [out.texts[0] for out in outputs]


def validation_score(model: Any, tokenizer: Any, task: Task, examples: list[Example], references: list[Any],
                     how: Answering) -> float:
    """The task's primary metric of the model's answers to `examples` (greedy, or ranked) against `references`."""
    import torch

    was_training, side, cache = model.training, tokenizer.padding_side, model.config.use_cache
    model.eval()
    tokenizer.padding_side = "left"  # generation continues each prompt where it ends
    model.config.use_cache = True  # training may turn the key/value cache off: generation would be many times slower
    answers: list[str] = []
    try:
        with torch.no_grad():
            for start in range(0, len(examples), how.batch_size):
                answers += _answers(model, tokenizer, [e.messages for e in examples[start:start + how.batch_size]], how)
    finally:
        model.train(was_training)
        tokenizer.padding_side, model.config.use_cache = side, cache
    value = task.metric_stats(answers, references)[task.primary_metric].value()
    return float(value or 0.0)


class TrialScorer(TrainerCallback):
    """Scores the student on the validation inputs at each evaluation and at the end; reports to the trial."""

    def __init__(self, trial: "optuna.Trial", task: Task, examples: list[Example], references: list[Any],
                 how: Answering, deadline: float | None) -> None:
        self.trial, self.task = trial, task
        self.examples, self.references = examples, references
        self.how = how
        self.deadline = deadline
        self.scores: list[tuple[int, float]] = []  # (optimizer step, score) of each evaluation
        self.pruned = False
        self.out_of_time = False

    @property
    def last(self) -> float | None:
        return self.scores[-1][1] if self.scores else None

    def _score(self, state: TrainerState, control: TrainerControl, model: Any, tokenizer: Any) -> None:
        if self.pruned or self.out_of_time or (self.scores and self.scores[-1][0] == state.global_step):
            return
        score = validation_score(model, tokenizer, self.task, self.examples, self.references, self.how)
        self.scores.append((state.global_step, score))
        log.info("trial %d: validation %s %.4f after %d steps", self.trial.number, self.task.primary_metric, score,
                 state.global_step)
        self.trial.report(score, step=len(self.scores))  # the pruner compares trials after as many evaluations
        if not control.should_training_stop and self.trial.should_prune():
            self.pruned = True
            control.should_training_stop = True

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    model: Any = None, processing_class: Any = None, **kwargs: Any) -> None:
        self._score(state, control, model, processing_class)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     model: Any = None, processing_class: Any = None, **kwargs: Any) -> None:
        self._score(state, control, model, processing_class)  # the final score (when no evaluation just gave it)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.out_of_time = True
            control.should_training_stop = True
