"""A `recorded` teacher has no model to run: it is scored on quality only, from its recorded answers to the
very test inputs (matched by the recorded backend itself, teachers/recorded.py, so both stages read the
same export forms the same way). Speed and memory are not measurable: the answers were produced elsewhere."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distilflow.evaluate.local import last_user_text

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext


def evaluate_recorded(ctx: "StageContext", config: dict[str, Any]) -> dict[str, Any] | None:
    """Score the recorded answers to the test inputs; None when some test input has no recorded answer."""
    from distilflow.errors import DistilflowError
    from distilflow.evaluate.worker import finish
    from distilflow.teachers.requests import generation_params, teacher_messages
    from distilflow.teachers import TeacherAnswer, TeacherRequest
    from distilflow.teachers.recorded import RecordedTeacher

    examples = ctx.examples("test")
    try:
        teacher = RecordedTeacher(ctx.spec.teacher)
        requests = [TeacherRequest(key=e.id, messages=teacher_messages(e, ctx.spec)) for e in examples]
        answers = {r.key: r for r in teacher.generate(requests, generation_params(ctx.spec))}
    except DistilflowError:
        return None  # an unreadable recording: the teacher stage reports it with file and line
    if not all(isinstance(answers.get(e.id), TeacherAnswer) for e in examples):
        return None
    predictions = [{"id": e.id, "input": last_user_text(e.messages), "prediction": answers[e.id].texts[0],
                    "reference": e.reference} for e in examples]
    figures = {"note": "recorded answers: scored on quality only; speed and memory were not measured",
               "network": False, "latency_mean_s": None, "peak_memory_mb": None, "parameters": None}
    return finish({**config, "kind": "recorded"}, predictions, figures)
