"""The one list of each name a spec uses (task types, methods, model labels, formats, dtypes, schedulers,
devices), and the job-name rule. Everything else reads these."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator

TASK_TYPES = ("nli", "conversation", "qa", "math", "summarization", "classification", "extraction")
TaskType = Literal[TASK_TYPES]  # type: ignore[valid-type]
TRAINING_METHODS = ("sft", "kd", "sparse_kd", "on_policy")
MODEL_LABELS = ("teacher", "baseline", "distilled")  # the models a job evaluates, in report order
ModelLabel = Literal[MODEL_LABELS]  # type: ignore[valid-type]
JOB_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_name(value: str | None) -> str | None:
    """Job and model names become folder names and registry keys: a safe, short alphabet."""
    if value is not None and not JOB_NAME_PATTERN.fullmatch(value):
        raise ValueError("use letters, digits, '.', '_' and '-' only (at most 100), starting with a letter or digit")
    return value


PromptFormat = Literal["chat", "completion"]  # chat template, or plain text (see models/prompts.py)
AnswerMode = Literal["generate", "rank"]  # free text parsed to an answer, or the best-scoring label
# How a ranking teacher's label scores are corrected for its bias (teachers/calibration.py); "none" first: the old way.
CALIBRATIONS = ("none", "content_free", "prior")
Calibration = Literal[CALIBRATIONS]  # type: ignore[valid-type]
# The order of the teacher's few-shot block (teachers/requests.py); "shuffled" first: the old way.
FEW_SHOT_ORDERS = ("shuffled", "round_robin")
FewShotOrder = Literal[FEW_SHOT_ORDERS]  # type: ignore[valid-type]
DTYPES = ("auto", "float32", "bfloat16", "float16")
Dtype = Literal[DTYPES]  # type: ignore[valid-type]
# transformers' schedulers that need no extra arguments (others would fail at training time, after the teacher).
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt")


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise ValueError("must be auto, cpu, mps, cuda or cuda:N")
    return value


Device = Annotated[str, AfterValidator(_device)]


