"""The search space of `distilflow tune`: each setting sampled by an Optuna trial, and the job spec a trial's
settings make (the job's own spec with those settings in place)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from distilflow.errors import SpecError
from distilflow.jobspec import TUNABLE, JobSpec, TuneRange, default_space, describe_validation_error

if TYPE_CHECKING:
    import optuna


def search_space(spec: JobSpec) -> dict[str, TuneRange]:
    """`tune.space`, or the default space for the job's method when it names none."""
    space = spec.tune.space if spec.tune is not None else {}
    return dict(space) or default_space(spec.public_dict()["training"])


def suggest(trial: "optuna.Trial", space: dict[str, TuneRange]) -> dict[str, Any]:
    """One value per setting, sampled by the trial (Optuna records them as the trial's params)."""
    settings: dict[str, Any] = {}
    for name, bounds in space.items():
        kind = TUNABLE[name][1]
        if bounds.choices is not None:
            settings[name] = trial.suggest_categorical(name, bounds.choices)
        elif kind == "int":
            assert bounds.low is not None and bounds.high is not None
            settings[name] = trial.suggest_int(name, int(bounds.low), int(bounds.high), step=int(bounds.step or 1),
                                               log=bounds.log)
        else:
            assert bounds.low is not None and bounds.high is not None
            settings[name] = trial.suggest_float(name, bounds.low, bounds.high, step=bounds.step, log=bounds.log)
    return settings


def _get(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def with_settings(spec: JobSpec, settings: dict[str, Any], where: str) -> JobSpec:
    """The job spec with `settings` (short names, see TUNABLE) in place; LoRA settings turn LoRA on."""
    data = spec.public_dict()
    for name, value in settings.items():
        section = data
        *parents, key = TUNABLE[name][0]
        for part in parents:
            if section.get(part) is None:
                section[part] = {}
            section = section[part]
        section[key] = value
    try:
        return JobSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(describe_validation_error(error, JobSpec, where)) from None


def own_settings(spec: JobSpec, space: dict[str, TuneRange]) -> dict[str, Any] | None:
    """The job's own values of the searched settings, when each lies in the space (the first trial tries them: the
    search then never reports settings that score below the job's own on the validation set)."""
    data = spec.public_dict()
    found: dict[str, Any] = {}
    for name, bounds in space.items():
        value = _get(data, TUNABLE[name][0])
        if bounds.choices is not None:
            if value not in bounds.choices:
                return None
        elif value is None or not (bounds.low <= value <= bounds.high):  # type: ignore[operator]
            return None
        found[name] = value
    return found
