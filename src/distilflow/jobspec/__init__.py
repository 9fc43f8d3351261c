"""The job spec: its names (names.py), sections (sections.py), the whole spec (job.py), and loading it from YAML
with readable errors (loading.py). Everything a spec user needs is importable from here."""

from distilflow.jobspec.data import DataSpec
from distilflow.jobspec.job import FINGERPRINT_SPELLINGS, JobSpec, fingerprint_spelling
from distilflow.jobspec.loading import (describe_validation_error, dump_spec, load_spec, parse_spec, resolve_model_ref,
                                     resolve_paths, resolve_relative)
from distilflow.jobspec.names import (CALIBRATIONS, DTYPES, FEW_SHOT_ORDERS, JOB_NAME_PATTERN, LR_SCHEDULERS, MODEL_LABELS,
                                   TASK_TYPES, TRAINING_METHODS, AnswerMode, Calibration, Device, Dtype, FewShotOrder,
                                   ModelLabel, PromptFormat, TaskType, check_name)
from distilflow.jobspec.sections import (AttentionSpec, EnvRef, EvaluationSpec, GenerationSpec, HiddenStatesSpec,
                                      Hyperparameters, JudgeSpec, LoraSpec, PruneRule, RouteRule, StudentSpec, TeacherSpec,
                                      TeamTeacherSpec, TrainingSpec, evaluation_default)
from distilflow.jobspec.tune import TUNABLE, TuneRange, TuneSpec, default_space

__all__ = ["DTYPES", "FINGERPRINT_SPELLINGS", "JOB_NAME_PATTERN", "LR_SCHEDULERS", "MODEL_LABELS", "TASK_TYPES",
           "TRAINING_METHODS", "CALIBRATIONS", "FEW_SHOT_ORDERS", "AnswerMode", "Calibration", "FewShotOrder",
           "AttentionSpec", "DataSpec", "HiddenStatesSpec", "Device", "Dtype", "EnvRef",
           "EvaluationSpec", "GenerationSpec", "Hyperparameters", "JobSpec", "JudgeSpec", "LoraSpec", "ModelLabel", "PromptFormat",
           "PruneRule", "RouteRule", "TUNABLE", "TeamTeacherSpec", "TuneRange", "TuneSpec", "default_space",
           "StudentSpec", "TaskType", "TeacherSpec", "TrainingSpec", "check_name", "describe_validation_error",
           "dump_spec", "evaluation_default", "fingerprint_spelling", "load_spec", "parse_spec", "resolve_model_ref",
           "resolve_paths", "resolve_relative"]
