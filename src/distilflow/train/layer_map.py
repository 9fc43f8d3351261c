"""Which student layer is matched to which teacher layer, for `training.hidden_states` and `training.attention`, and
the checks run before any teacher request (the method preflights call `check_layer_matching`).

Layer indices count decoder layers from 0; a pair [s, t] matches the output (hidden states) or the attention
distribution of student layer s to that of teacher layer t. `auto`:
- a student pruned from the teacher (`student.prune` with `student.model` the teacher's model) maps each of its
  layers to the teacher layer it was copied from (the kept layers recorded in student/initial/distilflow_pruning.json,
  the same list `layers_to_keep` gives): Minitron's setting, where the map is known;
- any other student spreads its layers evenly over the teacher's, last to last (layer i -> round((i+1) Lt/Ls) - 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distilflow.errors import SpecError
from distilflow.models import local_model_dir

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext
    from distilflow.jobspec import JobSpec

Pairs = list[tuple[int, int]]


@dataclass(frozen=True)
class LayerCounts:
    student: int
    teacher: int
    kept: list[int] | None  # teacher layers a pruned student was copied from, in order (None: not pruned from it)


def uses_layer_matching(spec: "JobSpec") -> bool:
    t = spec.training
    return bool((t.hidden_states and t.hidden_states.weight > 0) or (t.attention and t.attention.weight > 0))


def spread_evenly(student_layers: int, teacher_layers: int) -> Pairs:
    return [(i, round((i + 1) * teacher_layers / student_layers) - 1) for i in range(student_layers)]


def resolve_pairs(layers: Any, counts: LayerCounts, what: str) -> Pairs:
    """`auto` or explicit [[s, t], ...] -> checked pairs; an index out of range is refused in one sentence."""
    if layers == "auto":
        if counts.kept is not None:
            return list(enumerate(counts.kept))
        return spread_evenly(counts.student, counts.teacher)
    pairs = [(int(s), int(t)) for s, t in layers]
    if not pairs:
        raise SpecError(f"{what}: give at least one [student_layer, teacher_layer] pair, or auto")
    for s, t in pairs:
        if s >= counts.student:
            raise SpecError(f"{what}: student layer {s} does not exist (the student has {counts.student} layers, "
                            f"indices 0..{counts.student - 1})")
        if t >= counts.teacher:
            raise SpecError(f"{what}: teacher layer {t} does not exist (the teacher has {counts.teacher} layers, "
                            f"indices 0..{counts.teacher - 1})")
    return pairs


def _num_layers(model: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(local_model_dir(model)).get_text_config().num_hidden_layers


def layer_counts(spec: "JobSpec", kept: list[int] | None = None) -> LayerCounts:
    """Decoder layers of student (after pruning) and teacher, from their configs (no weights are loaded)."""
    from distilflow.train.prune import layers_to_keep

    teacher = _num_layers(spec.teacher.model)
    source = _num_layers(spec.student.model)
    if spec.student.prune is None:
        return LayerCounts(source, teacher, None)
    kept = kept if kept is not None else layers_to_keep(spec.student.prune, source)
    from_teacher = spec.student.model == spec.teacher.model
    return LayerCounts(len(kept), teacher, kept if from_teacher else None)


def check_layer_matching(spec: "JobSpec", method: str) -> None:
    """The preflight of hidden_states / attention: a local teacher, and every layer index in range."""
    t = spec.training
    if not uses_layer_matching(spec):
        return
    option = "training.hidden_states" if t.hidden_states and t.hidden_states.weight > 0 else "training.attention"
    if spec.teacher.backend != "hf":
        raise SpecError(f"{option} compares the student's inner layers with the teacher's, so it needs a local "
                        f"teacher (teacher.backend: hf), not teacher.backend {spec.teacher.backend}")
    if method not in ("kd", "on_policy"):  # those check it themselves: the teacher reads the student's tokens
        from distilflow.train.compatibility import check_teacher_reads_student_tokens

        check_teacher_reads_student_tokens(spec, f"{method} with layer matching")
    counts = layer_counts(spec)
    for name, section in (("training.hidden_states", t.hidden_states), ("training.attention", t.attention)):
        if section is not None and section.weight > 0:
            resolve_pairs(section.layers, counts, f"{name}.layers")


@dataclass(frozen=True)
class MatchingPlan:
    """Resolved settings for the trainer: pairs per kind, weights, the hidden-state loss."""

    hidden_pairs: Pairs
    hidden_weight: float
    hidden_loss: str
    attention_pairs: Pairs
    attention_weight: float

    @property
    def active(self) -> bool:
        return bool(self.hidden_pairs) or bool(self.attention_pairs)


def matching_plan(ctx: "StageContext") -> MatchingPlan | None:
    """The plan of this training (None without layer matching); `auto` reads a pruned student's recorded layers."""
    spec = ctx.spec
    if not uses_layer_matching(spec):
        return None
    counts = layer_counts(spec, _recorded_kept_layers(ctx))
    h, a = spec.training.hidden_states, spec.training.attention
    hidden = resolve_pairs(h.layers, counts, "training.hidden_states.layers") if h and h.weight > 0 else []
    attention = resolve_pairs(a.layers, counts, "training.attention.layers") if a and a.weight > 0 else []
    return MatchingPlan(hidden_pairs=hidden, hidden_weight=h.weight if h else 0.0, hidden_loss=h.loss if h else "mse",
                        attention_pairs=attention, attention_weight=a.weight if a else 0.0)


def _recorded_kept_layers(ctx: "StageContext") -> list[int] | None:
    from distilflow.train.student import PRUNING_RECORD

    try:
        record = json.loads((ctx.paths.student_initial / PRUNING_RECORD).read_text())
    except (OSError, ValueError):
        return None
    kept = record.get("kept_layers")
    return [int(i) for i in kept] if isinstance(kept, list) else None
