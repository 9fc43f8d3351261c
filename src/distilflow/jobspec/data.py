"""The `data:` section: the checks every job runs on its data files before the teacher is asked."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distilflow.jobspec.sections import _Section


class DataSpec(_Section):
    # Training inputs that are near-duplicates of validation or test inputs inflate every held-out figure: by
    # default they leave the training set (the held-out sets stay as given).
    overlap: Literal["drop", "warn", "fail"] = Field(
        "drop", description="training inputs near-duplicating a validation/test input: drop them from training, "
                            "warn and keep them, or fail before any teacher request")
    # One threshold for every near-duplicate check of a job (overlap here, written inputs against the given ones).
    near_duplicate_threshold: float = Field(
        0.8, gt=0, le=1, description="Jaccard similarity of character 5-grams (lowercase, whitespace collapsed) "
                                     "at which two inputs count as near-duplicates")
    truncate: bool = Field(False, description="cut inputs longer than the student's training.max_seq_length or the "
                                              "teacher's context instead of refusing them")
