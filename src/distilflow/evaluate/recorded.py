"""A `recorded` teacher has no model to run: it is scored on quality only, from its recorded answers to the
very test inputs (matched by the recorded backend itself, teachers/recorded.py, so both stages read the
same export forms the same way). Speed and memory are not measurable: the answers were produced elsewhere,
so the measure loop does not apply; the rows and the scoring are the same as for any model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distilflow.errors import DistilflowError
from distilflow.evaluate.config import WorkerConfig
from distilflow.evaluate.save import save_result
from distilflow.results import ModelResult, Prediction

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext
    from distilflow.jobspec import TeacherSpec


def evaluate_recorded(ctx: "StageContext", config: WorkerConfig,
                      teacher_spec: "TeacherSpec | None" = None) -> ModelResult | None:
    """Score the recorded answers to the test inputs (of `teacher_spec`, default the job's teacher); None when some
    test input has no recorded answer."""
    from distilflow.teachers import TeacherAnswer, TeacherRequest
    from distilflow.teachers.recorded import RecordedTeacher
    from distilflow.teachers.requests import generation_params, teacher_messages

    examples = ctx.examples("test")
    try:
        teacher = RecordedTeacher(teacher_spec or ctx.spec.teacher)
        requests = [TeacherRequest(key=e.id, messages=teacher_messages(e, ctx.spec)) for e in examples]
        answers = {r.key: r for r in teacher.generate(requests, generation_params(ctx.spec))}
    except DistilflowError:
        return None  # an unreadable recording: the teacher stage reports it with file and line
    if not all(isinstance(answers.get(e.id), TeacherAnswer) for e in examples):
        return None
    predictions = [Prediction.of(e.id, e.messages, answers[e.id].texts[0], e.reference) for e in examples]
    figures = dict(note="recorded answers: scored on quality only; speed and memory were not measured",
                   network=False, latency_mean_s=None, peak_memory_mb=None, parameters=None)
    return save_result(config, predictions, figures)
