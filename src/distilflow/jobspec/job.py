"""The job spec: every section together, and the rules that span sections."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from distilflow.jobspec.data import DataSpec
from distilflow.jobspec.inputs import InputsSpec
from distilflow.jobspec.names import TaskType, check_name
from distilflow.jobspec.sections import (EvaluationSpec, GenerationSpec, Hyperparameters, StudentSpec, TeacherSpec,
                                      TeamTeacherSpec, TrainingSpec, _Section)
from distilflow.jobspec.tune import TuneSpec

# section -> {key: its spelling before it was renamed}. Fingerprints hash the old spelling: renaming a key must not
# make every existing job run its stages again, nor miss the evaluation results it could reuse.
FINGERPRINT_SPELLINGS: dict[str, dict[str, str]] = {"evaluation": {"throughput_batch_size": "batch_size"}}
# Settings added after jobs were run, and settings whose default changed: a spec that does not set them hashes what
# it hashed before (added: absent; changed: the former default), so an upgrade does not redo finished stages. A
# spec that sets one hashes its value.
ADDED_SETTINGS: dict[str, set[str]] = {"training": {"on_policy_warmup"}}
FORMER_DEFAULTS: dict[str, dict[str, Any]] = {"training": {"student_temperature": 1.0}}


def fingerprint_spelling(section: str, values: dict[str, Any], given: set[str] | frozenset[str] = frozenset()
                         ) -> dict[str, Any]:
    """A section's values (as dumped) as fingerprints hash them: renamed keys by their old spelling; settings added
    or re-defaulted since, where the spec does not give them (`given`), as before."""
    old = FINGERPRINT_SPELLINGS.get(section, {})
    former = {k: v for k, v in FORMER_DEFAULTS.get(section, {}).items() if k not in given}
    added = ADDED_SETTINGS.get(section, set()) - set(given)
    return {old.get(key, key): former.get(key, value) for key, value in values.items() if key not in added}


class JobSpec(_Section):
    # `schema:` is read into `json_schema` (pydantic's BaseModel has a `schema` of its own).
    model_config = ConfigDict(**_Section.model_config, populate_by_name=True)

    name: str | None = None
    task_type: TaskType
    # One teacher (`teacher:`) or several (`teachers:`, combined by generation.combine). With several, `teacher`
    # is the first of them: the one evaluated as "teacher" and the one every single-teacher setting reads.
    teacher: TeacherSpec = None  # type: ignore[assignment]  # filled from `teachers` when absent
    teachers: list[TeamTeacherSpec] | None = Field(None, min_length=1)
    student: StudentSpec
    training_data: str
    validation_data: str | None = None
    test_data: str | None = None
    labels: list[str] | None = Field(None, description="classification: the label set (default: the training labels)")
    json_schema: dict[str, Any] | str | None = Field(
        None, alias="schema", description="extraction: the JSON schema of an answer, inline or a .json/.yaml file")
    data: DataSpec = Field(default_factory=DataSpec)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    tune: TuneSpec | None = None
    inputs: InputsSpec | None = None  # training inputs written by the teacher (jobspec/inputs.py)

    # The name the distilled student is registered under (default: STUDENT-distilled), as Azure ML's
    # DistillationJob(output_model_name=...).
    output_model_name: str | None = None

    @field_validator("name", "output_model_name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        return check_name(value)

    @model_validator(mode="before")
    @classmethod
    def _one_teacher_section(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if data.get("teacher") is None and not data.get("teachers"):
                raise ValueError("missing required key 'teacher' (or 'teachers', a list of teachers)")
            # (validating an assignment sees the filled-in `teacher`: the first of `teachers`)
            if data.get("teacher") is not None and data.get("teachers") and data["teacher"] != data["teachers"][0]:
                raise ValueError("give either 'teacher' (one) or 'teachers' (a list), not both")
        return data

    @model_validator(mode="after")
    def _teachers_fit(self) -> "JobSpec":
        if self.teachers:
            # Set directly: an assignment would validate the whole spec again (and see both sections).
            self.__dict__["teacher"] = self.teachers[0]
            names = [t.name for t in self.teachers]
            if len(set(names)) < len(names):
                raise ValueError(f"teachers: every teacher needs its own name (got {', '.join(names)})")
            for t in self.teachers:
                self._check_backend(t, f"teachers.{t.name}")
            if self.generation.combine != "route" and any(t.route is not None for t in self.teachers):
                raise ValueError("teachers.*.route picks rows for generation.combine: route; set it, or drop route")
            if self.generation.combine == "route" and not any(t.route is not None for t in self.teachers):
                raise ValueError("generation.combine route needs a route: {field, values} or {pattern} on a teacher")
        elif self.generation.combine is not None:
            raise ValueError("generation.combine combines several teachers: list them under 'teachers'")
        return self

    @staticmethod
    def _check_backend(t: TeacherSpec, where: str) -> None:
        if t.backend == "openai" and not t.base_url and not t.api_key_env:
            raise ValueError(f"{where}.backend openai needs {where}.base_url or {where}.api_key_env")
        if t.backend == "recorded" and not (t.path or t.model):
            raise ValueError(f"{where}.backend recorded needs {where}.path")

    @model_validator(mode="after")
    def _backend_needs(self) -> "JobSpec":
        t = self.teacher
        if not self.teachers:
            self._check_backend(t, "teacher")
        if self.inputs is not None and self.inputs.writer is not None:
            self._check_backend(self.inputs.writer, "inputs.writer")
        ranked = self.generation.answer_mode == "rank" or self.evaluation.answer_mode == "rank"
        if ranked and self.task_type != "classification":
            raise ValueError("answer_mode rank picks one of the labels: it needs task_type classification")
        if self.generation.answer_mode == "rank" and any(t.backend != "hf" for t in self.teacher_list()):
            raise ValueError("generation.answer_mode rank scores the labels with the teacher's own probabilities: it "
                             "needs a local teacher (teacher.backend: hf); use answer_mode: generate")
        # The default is stored with every spec (public_dict), so only another value is an error where it cannot act.
        default = type(self.generation).model_fields["calibration"].default
        if self.generation.calibration not in ("none", default) and (
                self.generation.answer_mode != "rank" or self.teachers):
            raise ValueError("generation.calibration corrects the label scores of one teacher ranking the labels "
                             "(generation.answer_mode: rank, one teacher:); remove it or set it to none")
        if self.labels is not None and self.task_type != "classification":
            raise ValueError("labels are the label set of task_type classification")
        if (self.json_schema is not None) != (self.task_type == "extraction"):
            raise ValueError("task_type extraction needs `schema:` (the JSON schema of an answer, inline or a file), "
                             "and only it takes one")
        return self

    @model_validator(mode="after")
    def _judges_fit(self) -> "JobSpec":
        for index, judge in enumerate(self.evaluation.judges()):
            where = "evaluation.judge" + (f"[{index}]" if isinstance(self.evaluation.judge, list) else "")
            self._check_backend(judge, where)
            if judge.mode != "rubric" and "teacher" not in self.evaluation.models:
                raise ValueError(f"{where}.mode {judge.mode} compares each student with the teacher's answers: keep "
                                 f"teacher in evaluation.models, or use mode: rubric")
        return self

    # ----- derived values -------------------------------------------------------------------
    def teacher_list(self) -> list[TeacherSpec]:
        """Every teacher of the job, in the order the spec lists them."""
        return list(self.teachers) if self.teachers else [self.teacher]

    @property
    def combine(self) -> str | None:
        """How several teachers' answers become one (None with one teacher)."""
        if not self.teachers or len(self.teachers) < 2:
            return None
        return self.generation.combine or "vote"

    @property
    def teacher_temperature(self) -> float:
        """The teacher's sampling temperature: `generation.temperature`, else its Azure-compatible spelling
        `hyperparameters.temperature` (0 by default). The one place that resolves it: requests, cache keys and
        fingerprints all read this."""
        g = self.generation.temperature
        return self.hyperparameters.temperature if g is None else g

    def data_files(self) -> dict[str, str]:
        """Split name -> path for the data files this spec names."""
        files = {"train": self.training_data}
        if self.validation_data:
            files["validation"] = self.validation_data
        if self.test_data:
            files["test"] = self.test_data
        return files

    def public_dict(self) -> dict[str, Any]:
        """The resolved spec as stored in the workspace (it holds no secrets by construction)."""
        # With `teachers:`, `teacher` is their first: stored once, as given.
        return self.model_dump(mode="json", exclude_none=True, exclude={"teacher"} if self.teachers else None,
                               by_alias=True)

    @property
    def label_calibration(self) -> str:
        """generation.calibration where it acts (a teacher ranking the labels, one teacher); "none" elsewhere."""
        rank = self.generation.answer_mode == "rank" and not self.teachers
        return self.generation.calibration if rank else "none"

    def fingerprint_dict(self) -> dict[str, Any]:
        """`public_dict` as the stage fingerprints hash it: renamed keys keep their old spelling; settings added
        later join only where they change what the stage does (finished jobs are not redone after an upgrade)."""
        d = self.public_dict()
        generation = d["generation"]
        if generation.get("few_shot_order") == "shuffled":  # the order the few-shot block always had
            del generation["few_shot_order"]
        generation.pop("calibration", None)
        if self.label_calibration != "none":
            generation["calibration"] = self.label_calibration
        return {key: fingerprint_spelling(key, value, self._given(key)) if isinstance(value, dict) else value
                for key, value in d.items()}

    def _given(self, section: str) -> set[str]:
        """The keys of a section the spec wrote itself (not filled by a default)."""
        value = getattr(self, section, None)
        return set(getattr(value, "model_fields_set", ()))


