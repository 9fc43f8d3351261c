"""Loading a job spec from YAML: readable errors (a misspelt key gets the nearest valid one, no value is ever
echoed), paths resolved against the spec file's folder, a default name."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from distilflow.errors import SpecError
from distilflow.jobspec.job import JobSpec
from distilflow.jobspec.sections import TeacherSpec

TeacherT = TypeVar("TeacherT", bound=TeacherSpec)

_PATH_FIELDS = ("training_data", "validation_data", "test_data")


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the last element of `loc` (None if not a model)."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = _first_model_in(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _first_model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model_in(arg)
        if found is not None:
            return found
    return None


def describe_validation_error(error: ValidationError, model: type[BaseModel], source: str) -> str:
    """One readable sentence per problem; unknown keys get a 'did you mean' suggestion."""
    problems: list[str] = []
    for item in error.errors():
        loc = tuple(item["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            owner = _model_at(model, loc)
            valid = list(owner.model_fields) if owner else []
            key = str(loc[-1])
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            prefix = "".join(f"{p}." for p in loc[:-1])
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            valid_list = f" (valid keys: {', '.join(valid)})" if valid and not close else ""
            problems.append(f"unknown key '{dotted}'{hint}{valid_list}")
        elif item["type"] == "missing":
            choices = _literal_choices(model, loc)
            fix = f"; add it, set to one of {choices}" if choices else ""
            problems.append(f"missing required key '{dotted}'{fix}")
        elif loc and _is_empty(item.get("input")):  # `key:` with nothing after it reads as null
            problems.append(_no_value(item, model, loc, dotted))
        elif item["type"] == "literal_error":
            problems.append(f"'{dotted}' must be one of {item['ctx']['expected']}")
        else:
            # Never echo input values: a misplaced secret must not reach a terminal or log.
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"'{dotted}': {message}" if loc else message)
    return f"{source}: " + "; ".join(problems)


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _field_of(model: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    owner = _model_at(model, loc)
    return owner.model_fields.get(str(loc[-1])) if owner is not None else None


def _literal_choices(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The allowed values of a field that takes one of a few, as pydantic words them ("'a', 'b' or 'c'")."""
    field = _field_of(model, loc)
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    quoted = [repr(value) for value in get_args(field.annotation)]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def _no_value(item: dict[str, Any], model: type[BaseModel], loc: tuple[Any, ...], dotted: str) -> str:
    """A key written with no value: say so (not "Input should be ..."), and what to write."""
    choices = item.get("ctx", {}).get("expected") if item["type"] == "literal_error" else None
    fix = f"set it to one of {choices}" if choices else "give it a value"
    field = _field_of(model, loc)
    if field is None or field.is_required():
        return f"required key '{dotted}' has no value; {fix}"
    return f"key '{dotted}' has no value; {fix}, or remove the key to use the default"


def resolve_relative(value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def resolve_model_ref(value: str, base: Path) -> str:
    """A model given as a relative path that exists beside the spec becomes absolute; ids stay as they are."""
    if "://" in value or value.startswith("pkg:"):
        return value
    candidate = Path(value).expanduser()
    if not candidate.is_absolute():
        candidate = base / candidate
    return str(candidate.resolve()) if candidate.exists() else value


def _resolve_teacher(teacher: TeacherT, base: Path) -> TeacherT:
    return teacher.model_copy(update={"model": resolve_model_ref(teacher.model, base),
                                      "path": resolve_relative(teacher.path, base)})


def resolve_paths(spec: JobSpec, base: Path) -> JobSpec:
    """Resolve data files and local model paths against `base` (the spec file's folder)."""
    updates: dict[str, Any] = {f: resolve_relative(getattr(spec, f), base) for f in _PATH_FIELDS}
    if spec.teachers:
        updates["teachers"] = [_resolve_teacher(t, base) for t in spec.teachers]
        updates["teacher"] = updates["teachers"][0]
    else:
        updates["teacher"] = _resolve_teacher(spec.teacher, base)
    if isinstance(spec.json_schema, str):
        updates["json_schema"] = read_schema_file(resolve_relative(spec.json_schema, base) or "")
    if spec.evaluation.judge is not None:
        judges = spec.evaluation.judge
        resolved = [_resolve_teacher(j, base) for j in (judges if isinstance(judges, list) else [judges])]
        updates["evaluation"] = spec.evaluation.model_copy(
            update={"judge": resolved if isinstance(judges, list) else resolved[0]})
    if spec.inputs is not None:  # the seed rows and a writer of its own
        writer = spec.inputs.writer
        updates["inputs"] = spec.inputs.model_copy(update={
            "seeds": resolve_relative(spec.inputs.seeds, base),
            "writer": None if writer is None else _resolve_teacher(writer, base)})
    spec = spec.model_copy(update=updates)
    spec.student = spec.student.model_copy(update={"model": resolve_model_ref(spec.student.model, base)})
    return spec


def read_schema_file(path: str) -> dict[str, Any]:
    """`schema: FILE` (JSON or YAML) read into the spec, so that the stored spec and every fingerprint hold the
    schema itself: an edited file is a new schema."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))  # YAML reads JSON too
    except FileNotFoundError:
        raise SpecError(f"schema: {path}: file not found (give the JSON schema inline, or the path of a .json "
                        f"file relative to the job spec)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SpecError(f"schema: {path}: cannot read it as JSON or YAML ({error.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise SpecError(f"schema: {path}: a JSON schema is an object (a mapping of keys), not "
                        f"{type(data).__name__}")
    return data


def parse_spec(data: Any, source: str, base: Path, default_name: str | None = None) -> JobSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a job spec must be a mapping of keys to values")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(describe_validation_error(error, JobSpec, source)) from None
    spec = resolve_paths(spec, base)
    if spec.name is None:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", default_name or f"{spec.task_type}-job").strip("-._") or "job"
        spec.name = name[:100]
    return spec


def load_spec(path: str | Path, resolve: Callable[[Any, Path], Any] | None = None) -> JobSpec:
    """Load a job spec from YAML; relative paths resolve against the spec file's folder. `resolve(data, folder)`
    may rewrite the parsed YAML first (the model catalog of distilflow.yaml turns short names into models)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: job spec not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: cannot read the job spec ({error.__class__.__name__}: {error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise SpecError(f"{path}{where}: {problem}") from None
    if resolve is not None:
        data = resolve(data, path.resolve().parent)
    return parse_spec(data, str(path), path.resolve().parent, default_name=path.stem)


def dump_spec(spec: JobSpec) -> str:
    return yaml.safe_dump(spec.public_dict(), sort_keys=False, allow_unicode=True)
