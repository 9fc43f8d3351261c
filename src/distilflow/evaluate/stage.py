"""Stage 4, evaluate: teacher, baseline student and distilled student answer the same test inputs with the
same greedy decoding, each measured in its own process (worker.py); then each student's agreement with the
teacher is computed from the predictions. A model whose inputs did not change since it was last scored is
not scored again (resume)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distilflow.evaluate.config import ModelTarget, WorkerConfig, progress_steps, worker_config
from distilflow.evaluate.recorded import evaluate_recorded
from distilflow.evaluate.save import save_not_evaluated
from distilflow.evaluate.worker import run_worker
from distilflow.io import write_json_atomic
from distilflow.results import ModelResult, read_predictions
from distilflow.spec import TeacherSpec
from distilflow.tasks.scoring import agreement_with_teacher

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext

STUDENT_LABELS = ("baseline", "distilled")


def teacher_target(teacher: TeacherSpec) -> ModelTarget:
    """How the teacher is evaluated, by backend: an API endpoint, recorded answers, or a local model (a vllm
    teacher never gets here: it is refused when the teacher stage loads it)."""
    if teacher.backend == "openai":
        return ModelTarget.served(teacher, section="teacher")
    if teacher.backend == "recorded":
        return ModelTarget(model=teacher.path or teacher.model, kind="recorded")
    return ModelTarget(model=teacher.model, dtype=teacher.dtype)


def model_targets(ctx: "StageContext") -> dict[str, ModelTarget]:
    """The models `evaluation.models` names, in that order."""
    spec = ctx.spec
    targets = {"teacher": teacher_target(spec.teacher),
               "baseline": ModelTarget(model=ctx.paths.baseline_student(spec), dtype=spec.student.dtype),
               "distilled": ModelTarget(model=str(ctx.paths.student_final), dtype=spec.student.dtype)}
    return {label: targets[label] for label in spec.evaluation.models if label in targets}


def _score(ctx: "StageContext", config: WorkerConfig, on_progress: Any) -> ModelResult:
    if config.kind != "recorded":
        return run_worker(config, on_progress)
    return evaluate_recorded(ctx, config) or save_not_evaluated(
        ctx.paths.eval_model(config.label), config.label, config.model, "the recorded teacher answers do not cover "
        "every test input (only answers to the same inputs can be compared)")


def evaluate_stage(ctx: "StageContext") -> dict[str, Any]:
    examples = ctx.examples("test")
    if not examples:
        # A job may leave scoring to later (`models.evaluate` on its registered models, as scripts written for
        # Azure ML's distillation API do): nothing to score is not a failure.
        return {"skipped": "no test_data in the job spec: add test_data to score teacher, baseline and distilled"}
    settings = ctx.spec.evaluation
    targets = model_targets(ctx)
    steps_per_model = progress_steps(len(examples), settings)
    results: dict[str, ModelResult] = {}
    with ctx.progress("evaluate", steps_per_model * len(targets), "evaluating models") as progress:
        for index, (label, target) in enumerate(targets.items()):
            config = worker_config(label, target, task_type=ctx.spec.task_type, examples=examples,
                                   settings=settings, output_dir=ctx.paths.eval_model(label)).with_fingerprint()
            offset = index * steps_per_model
            previous = ModelResult.read(ctx.paths.eval_metrics(label))
            if previous is not None and previous.fingerprint == config.fingerprint:
                results[label] = previous  # already scored (resume)
            else:
                progress.note(label)
                results[label] = _score(ctx, config, lambda done, total: progress.update(offset + done))
            progress.update(offset + steps_per_model)
    agreement = teacher_agreement(ctx)
    write_json_atomic(ctx.paths.agreement, agreement)
    for label, found in agreement.items():
        if label in results:
            results[label].agreement_with_teacher = found
    return {label: result.headline() for label, result in results.items()}


def teacher_agreement(ctx: "StageContext") -> dict[str, Any]:
    """Agreement of baseline and distilled with the teacher's answers on the same test inputs."""
    settings = ctx.spec.evaluation
    teacher = read_predictions(ctx.paths.eval_predictions("teacher")) if "teacher" in settings.models else []
    if not teacher:
        return {}
    out = {}
    for label in STUDENT_LABELS:
        if label in settings.models:
            found = agreement_with_teacher(ctx.task, read_predictions(ctx.paths.eval_predictions(label)), teacher,
                                           settings.bootstrap_samples, settings.bootstrap_seed)
            if found:
                out[label] = found
    return out

