"""Where jobs live on disk (see the README, "Workspace")."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distilflow.errors import DistilflowError, file_in_the_way

if TYPE_CHECKING:
    from distilflow.jobspec import JobSpec

DEFAULT_WORKSPACE = "distilflow-runs"
# One model's evaluation results: these two files in its folder (a job's eval/LABEL/ or a comparison's run folder).
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"


def teacher_eval_label(index: int, name: str) -> str:
    """The evaluation label (eval/LABEL/) of a job's teacher number `index`: the first is "teacher", the others
    (several teachers) "teacher-NAME"."""
    return "teacher" if index == 0 else f"teacher-{name}"


def resolve_workspace(workspace: str | Path | None) -> Path:
    """--workspace, else $DISTILFLOW_HOME, else ./distilflow-runs."""
    chosen = workspace or os.environ.get("DISTILFLOW_HOME") or DEFAULT_WORKSPACE
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class JobPaths:
    """Every file and folder of one job: the only place their names are spelled. A tuning trial's paths (`trial`)
    have a folder of their own but read the job's teacher data (`data_root`)."""

    root: Path
    data_root: Path | None = None  # where the synthetic data and the teacher cache live (default: root)

    @property
    def spec(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def lock(self) -> Path:
        """Held (an OS file lock) by the process running the job, for as long as it runs."""
        return self.root / "job.lock"

    @property
    def synthetic(self) -> Path:
        return (self.data_root or self.root) / "synthetic"

    def synthetic_split(self, split: str) -> Path:
        return self.synthetic / f"{split}.jsonl"

    @property
    def rejected(self) -> Path:
        return self.synthetic / "rejected.jsonl"

    @property
    def calibration(self) -> Path:
        """The per-label offsets generation.calibration fitted (evaluation applies them to the teacher too)."""
        return self.synthetic / "calibration.json"

    @property
    def failed(self) -> Path:
        return self.synthetic / "failed.jsonl"

    @property
    def written_inputs(self) -> Path:
        """Training inputs the writer wrote (`inputs:`), each with its provenance: directive, seeds shown."""
        return self.synthetic / "written_inputs.jsonl"

    @property
    def written_dropped(self) -> Path:
        """Written inputs left out (duplicates, near-duplicates of given inputs, unusable), with the reason."""
        return self.synthetic / "written_dropped.jsonl"

    @property
    def cache(self) -> Path:
        return (self.data_root or self.root) / "cache"

    @property
    def teacher_cache(self) -> Path:
        return self.cache / "teacher.sqlite"

    @property
    def student(self) -> Path:
        return self.root / "student"

    @property
    def checkpoints(self) -> Path:
        return self.student / "checkpoints"

    @property
    def student_initial(self) -> Path:
        """The student before distillation when it is derived (pruned) rather than loaded as is."""
        return self.student / "initial"

    @property
    def student_final(self) -> Path:
        return self.student / "final"

    @property
    def teacher_targets(self) -> Path:
        """sparse_kd's (and cross-tokenizer kd's) teacher targets, memory-mapped for training (train/logit_store.py);
        rebuilt by every training run."""
        return self.student / "teacher_targets"

    @property
    def train_log(self) -> Path:
        return self.student / "train_log.json"

    @property
    def checkpoint_stamp(self) -> Path:
        """The train-stage fingerprint the checkpoints belong to (other settings: start over)."""
        return self.checkpoints / "distilflow_train_fingerprint"

    def baseline_student(self, spec: "JobSpec") -> str:
        """The student before distillation: the model as given, or its pruned copy saved by the train stage."""
        initial = self.student_initial
        if spec.student.prune is not None and (initial / "config.json").exists():
            return str(initial)
        return spec.student.model

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    def eval_model(self, label: str) -> Path:
        return self.eval / label

    def eval_metrics(self, label: str) -> Path:
        return self.eval_model(label) / METRICS_FILE

    def eval_predictions(self, label: str) -> Path:
        return self.eval_model(label) / PREDICTIONS_FILE

    @property
    def agreement(self) -> Path:
        return self.eval / "agreement.json"

    @property
    def judge_summary(self) -> Path:
        """Every judge's figures (evaluation.judge), the examples with their reasons, the judges' agreement."""
        return self.eval / "judge.json"

    def judge_verdicts(self, name: str) -> Path:
        """One judge's requests, replies, verdicts or scores and reasons, one per line."""
        return self.eval / "judge" / name / "verdicts.jsonl"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def tensorboard(self) -> Path:
        return self.logs / "tensorboard"

    @property
    def background_log(self) -> Path:
        return self.logs / "background.log"

    @property
    def tune(self) -> Path:
        """distilflow tune: the study (Optuna's SQLite storage), its summary, one folder per trial."""
        return self.root / "tune"

    @property
    def tune_study(self) -> Path:
        return self.tune / "study.sqlite"

    @property
    def tune_summary(self) -> Path:
        return self.tune / "summary.json"

    @property
    def best_spec(self) -> Path:
        """The job spec with the best trial's settings (`distilflow run best.yaml` trains the chosen student)."""
        return self.root / "best.yaml"

    def trial(self, number: int) -> "JobPaths":
        """One trial's folder (its student, checkpoints, logs), reading this job's teacher data."""
        return JobPaths(self.tune / f"trial-{number}", data_root=self.data_root or self.root)

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"


@dataclass(frozen=True)
class Workspace:
    root: Path

    def __post_init__(self) -> None:
        # Checked here, before any command does work: a file where the workspace folder should be would otherwise
        # surface later as an OS error in whatever first writes there.
        in_the_way = file_in_the_way(Path(self.root))
        if in_the_way is not None:
            where = ("is a file, not a folder" if in_the_way == Path(self.root)
                     else f"cannot be a folder: {in_the_way} is a file")
            raise DistilflowError(
                f"the workspace {self.root} {where}; choose a folder for jobs (--workspace, $DISTILFLOW_HOME or "
                f"`workspace:` in distilflow.yaml) or move the file away")

    @classmethod
    def open(cls, workspace: str | Path | None = None) -> "Workspace":
        return cls(resolve_workspace(workspace))

    @property
    def db_path(self) -> Path:
        return self.root / "distilflow.db"

    def job(self, name: str) -> JobPaths:
        return JobPaths(self.root / "jobs" / name)

    @property
    def evaluations(self) -> Path:
        """`distilflow compare` runs: one folder per run, and the API models' answer cache they share."""
        return self.root / "evaluations"

    @property
    def evaluation_answers(self) -> Path:
        """API models' answers, kept across comparisons (each keyed by model, URL, prompt and settings): a re-run,
        or one that crashed, pays only for what it lacks."""
        return self.evaluations / "answers.sqlite"
