"""The job spec: every section together, and the rules that span sections."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from distilflow.spec.names import TaskType, check_name
from distilflow.spec.sections import (EvaluationSpec, GenerationSpec, Hyperparameters, StudentSpec, TeacherSpec,
                                      TrainingSpec, _Section)

class JobSpec(_Section):
    name: str | None = None
    task_type: TaskType
    teacher: TeacherSpec
    student: StudentSpec
    training_data: str
    validation_data: str | None = None
    test_data: str | None = None
    labels: list[str] | None = Field(None, description="classification: the label set (default: the training labels)")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)

    # The name the distilled student is registered under (default: STUDENT-distilled), as Azure ML's
    # DistillationJob(output_model_name=...).
    output_model_name: str | None = None

    @field_validator("name", "output_model_name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        return check_name(value)

    @model_validator(mode="after")
    def _backend_needs(self) -> "JobSpec":
        t = self.teacher
        if t.backend == "openai" and not t.base_url and not t.api_key_env:
            raise ValueError("teacher.backend openai needs teacher.base_url or teacher.api_key_env")
        if t.backend == "recorded" and not (t.path or t.model):
            raise ValueError("teacher.backend recorded needs teacher.path")
        ranked = self.generation.answer_mode == "rank" or self.evaluation.answer_mode == "rank"
        if ranked and self.task_type != "classification":
            raise ValueError("answer_mode rank picks one of the labels: it needs task_type classification")
        if self.generation.answer_mode == "rank" and t.backend != "hf":
            raise ValueError("generation.answer_mode rank scores the labels with the teacher's own probabilities: it "
                             "needs a local teacher (teacher.backend: hf); use answer_mode: generate")
        if self.labels is not None and self.task_type != "classification":
            raise ValueError("labels are the label set of task_type classification")
        return self

    # ----- derived values -------------------------------------------------------------------
    @property
    def teacher_temperature(self) -> float:
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
        return self.model_dump(mode="json", exclude_none=True)


