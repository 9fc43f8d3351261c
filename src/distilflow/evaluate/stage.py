"""Stage 4, evaluate: teacher, baseline student and distilled student answer the same test inputs with the
same greedy decoding, each measured in its own process (worker.py); then each student's agreement with the
teacher is computed from the predictions. A model whose inputs did not change since it was last scored is
not scored again (resume)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from distilflow.evaluate.config import ModelTarget, WorkerConfig, progress_steps, worker_config
from distilflow.evaluate.judge import judge_headline, run_judges
from distilflow.evaluate.recorded import evaluate_recorded
from distilflow.evaluate.save import save_not_evaluated
from distilflow.evaluate.worker import run_worker
from distilflow.io import read_json, write_json_atomic
from distilflow.results import ModelResult, read_predictions
from distilflow.jobspec import TeacherSpec
from distilflow.tasks import Example
from distilflow.tasks.scoring import agreement_with_teacher
from distilflow.teachers.requests import teacher_messages, teacher_plan
from distilflow.workspace import teacher_eval_label

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext

STUDENT_LABELS = ("baseline", "distilled")


def teacher_target(teacher: TeacherSpec, choices: list[str]) -> ModelTarget:
    """How the teacher is evaluated, by backend: an API endpoint, recorded answers, or a local model (a vllm
    teacher never gets here: it is refused when the teacher stage loads it)."""
    if teacher.backend == "openai":
        return ModelTarget.served(teacher, section="teacher")
    if teacher.backend == "recorded":
        return ModelTarget(model=teacher.path or teacher.model, kind="recorded")
    return ModelTarget(model=teacher.model, dtype=teacher.dtype, prompt_format=teacher.prompt_format, choices=choices)


def model_targets(ctx: "StageContext") -> dict[str, ModelTarget]:
    """The models `evaluation.models` names, in that order; each reads prompts in its own format, and in
    answer_mode rank all of them choose among the task's labels."""
    spec = ctx.spec
    choices = list(ctx.task.choices(spec.evaluation.answer_mode))
    student = {"dtype": spec.student.dtype, "prompt_format": spec.student.prompt_format, "choices": choices}
    teacher = teacher_target(spec.teacher, choices)
    calibration = read_json(ctx.paths.calibration)
    if calibration and choices and teacher.choices == calibration["labels"]:  # scored with the labels it taught
        teacher = teacher.model_copy(update={"label_offsets": calibration["offsets"]})
    targets = {"teacher": teacher,
               "baseline": ModelTarget(model=ctx.paths.baseline_student(spec), **student),
               "distilled": ModelTarget(model=str(ctx.paths.student_final), **student)}
    chosen = {label: targets[label] for label in spec.evaluation.models if label in targets}
    if "teacher" in chosen:  # several teachers: each one's quality on the test set
        chosen.update({teacher_eval_label(i, t.name): teacher_target(t, choices)
                       for i, t in enumerate(spec.teachers or []) if i > 0})
    return chosen


def model_examples(ctx: "StageContext", label: str) -> list[Example]:
    """The test inputs as each model reads them: the students their task prompt; the teacher the prompt it
    answered in the teacher stage (its instructions and few-shot turns first), as a serving system would run it."""
    examples = ctx.examples("test")
    if not label.startswith("teacher"):
        return examples
    _, shots = teacher_plan(ctx.spec, ctx.task, ctx.examples("train"))
    return [replace(e, messages=teacher_messages(e, ctx.spec, shots)) for e in examples]


def _score(ctx: "StageContext", config: WorkerConfig, on_progress: Any) -> ModelResult:
    if config.kind != "recorded":
        return run_worker(config, on_progress)
    teachers = {teacher_eval_label(i, t.name): t for i, t in enumerate(ctx.spec.teachers or [])}
    return evaluate_recorded(ctx, config, teachers.get(config.label)) or save_not_evaluated(
        ctx.paths.eval_model(config.label), config.label, config.model, "the recorded teacher answers do not cover "
        "every test input (only answers to the same inputs can be compared)")


NO_TEST_SET = "no test set (the job spec has no test_data)"


def _not_measured(ctx: "StageContext") -> dict[str, Any]:
    """A job without test data: nothing to measure, which is not a failure. Each model's result says so (and
    no results of an earlier spec that had test data are left to be mistaken for this one's)."""
    for label in ctx.spec.evaluation.models:
        save_not_evaluated(ctx.paths.eval_model(label), label, None, NO_TEST_SET)
    ctx.paths.agreement.unlink(missing_ok=True)
    ctx.paths.judge_summary.unlink(missing_ok=True)
    return {"measured": False, "reason": NO_TEST_SET}


def evaluate_stage(ctx: "StageContext") -> dict[str, Any]:
    examples = ctx.examples("test")
    if not examples:
        return _not_measured(ctx)
    settings = ctx.spec.evaluation
    targets = model_targets(ctx)
    steps_per_model = progress_steps(len(examples), settings)
    results: dict[str, ModelResult] = {}
    with ctx.progress("evaluate", steps_per_model * len(targets), "evaluating models") as progress:
        for index, (label, target) in enumerate(targets.items()):
            config = worker_config(label, target, task_type=ctx.spec.task_type, examples=model_examples(ctx, label),
                                   settings=settings, output_dir=ctx.paths.eval_model(label),
                                   cache_path=ctx.paths.teacher_cache, labels=list(ctx.task.labels),
                                   task_options=ctx.task.spec_options()).with_fingerprint()
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
    headlines = {label: result.headline() for label, result in results.items()}
    # The judge comes last: every model's results are on disk before it is asked (a judge that is down loses none).
    judged = run_judges(ctx, [label for label, result in results.items() if result.evaluated])
    return {**headlines, **({"judge": judge_headline(judged)} if judged else {})}


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

