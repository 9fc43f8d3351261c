"""Stage 2, generate: the teacher answers every training and validation input; the answers are checked and become
the synthetic data set (synthetic.py). One module asks a teacher (ask.py: requests, cached keys, what is pending,
asking); one teacher is a team of one (run.py), several teachers are asked in turn and their answers combined
(team.py, combine.py); `--dry-run` estimates requests, tokens and cost (estimate.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext
    from distilflow.jobspec import JobSpec, TeacherSpec


def preflight(spec: "JobSpec") -> None:
    """What the teacher stage needs that can be checked without asking the teacher: the key and header variables
    are set, a recorded answers file exists. Runs before anything is written or paid for."""
    from distilflow.models.openai import OpenAIEndpoint
    from distilflow.teachers import load_teacher

    for teacher in spec.teacher_list():
        check_answer_fits(spec, teacher)
        if teacher.backend == "openai":
            OpenAIEndpoint(teacher).open_key()  # the key variable is set
            teacher.resolved_headers()  # and so are the header variables
        load_teacher(teacher).close()  # backends check their own settings when built (no model is loaded here)


def check_answer_fits(spec: JobSpec, teacher: TeacherSpec) -> None:
    """generation.max_tokens must leave room for an input in the teacher's context (where the context is known)."""
    from distilflow.errors import SpecError
    from distilflow.teachers.token_estimate import teacher_context

    context = teacher_context(teacher)
    if context is not None and spec.generation.max_tokens >= context:
        raise SpecError(f"generation.max_tokens {spec.generation.max_tokens:,} does not fit in the context of teacher "
                        f"{teacher.model} ({context:,} tokens): no input would fit beside the answer; lower "
                        f"generation.max_tokens")


def run_generate(ctx: "StageContext") -> dict[str, Any]:
    tally = None
    if ctx.spec.inputs is not None:  # the writer writes training inputs first; the teacher answers them with the rest
        from distilflow.generate.write_inputs import with_written_inputs

        ctx, tally = with_written_inputs(ctx)
    if ctx.spec.combine is None:  # one teacher
        from distilflow.generate.run import generate_stage

        metrics = generate_stage(ctx)
    else:
        from distilflow.generate.team import team_stage

        metrics = team_stage(ctx)
    if tally is not None:
        from distilflow.generate.write_inputs import written_figures

        metrics["written_inputs"] = written_figures(ctx, tally)
    return metrics
