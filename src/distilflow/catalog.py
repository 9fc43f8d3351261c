"""The workspace config file, `distilflow.yaml`: where jobs live (`workspace:`) and a catalog of models by short
name (`models:`), so that a script written for a cloud distillation API ("deepseek-v3", "phi-4-mini") runs as
written. It is found like Azure ML's config.json: an explicit path (`--config`, `Client.from_config(path)`), else
$DISTILFLOW_CONFIG, else `distilflow.yaml` in the current folder or the nearest parent that has one.

```yaml
workspace: runs                        # relative to this file's folder
models:
  deepseek-v3: {backend: openai, model: deepseek-chat, base_url: https://api.deepseek.com/v1,
                api_key_env: DEEPSEEK_API_KEY, price_per_million_input_tokens: 0.27}
  phi-4-mini: {model: microsoft/Phi-4-mini-instruct}      # or a local folder, a .gguf file, pkg:PACKAGE/FILE
  qwen-0.5b: Qwen/Qwen2.5-0.5B-Instruct                   # short form: the entry's model
```

An entry holds the fields of a job spec's `teacher:` section (TeacherSpec, so the same secrets rules hold:
`api_key_env` is a variable's NAME, credentials never sit in a URL or a plain header). A student takes its `model`
and `dtype` only.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from distilflow.errors import SpecError
from distilflow.jobspec import JOB_NAME_PATTERN, TeacherSpec, describe_validation_error
# The spec's own rules for a model given by path (relative to the file that names it), reused for the catalog.
from distilflow.jobspec import resolve_model_ref, resolve_relative
from distilflow.workspace import resolve_workspace

CONFIG_FILE = "distilflow.yaml"
CONFIG_ENV = "DISTILFLOW_CONFIG"
# Keys of a teacher section that say where the teacher is: such a teacher's `model` is the name at that endpoint
# (or a recorded file), never a catalog name.
_ENDPOINT_KEYS = ("base_url", "api_key_env", "api_version", "path")
# What a student takes from a catalog entry (the rest describes how to reach or run a teacher).
_STUDENT_KEYS = ("model", "dtype")


class _ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workspace: str | None = None
    models: dict[str, dict[str, Any] | str] = {}  # a string is the entry's `model`


@dataclass(frozen=True)
class WorkspaceConfig:
    """A loaded distilflow.yaml: its path, the workspace folder it names and its model catalog."""

    path: Path
    workspace: Path | None = None
    models: dict[str, TeacherSpec] = field(default_factory=dict)

    # ----- finding and reading ---------------------------------------------------------------------------
    @classmethod
    def find(cls, path: str | Path | None = None, *, required: bool = False) -> "WorkspaceConfig | None":
        """The config at `path`, else at $DISTILFLOW_CONFIG, else distilflow.yaml in the current folder or its
        parents; None when there is none (an error when `required`, or when an explicit path is missing)."""
        explicit = path or os.environ.get(CONFIG_ENV)
        if explicit:
            return cls.load(explicit)
        for folder in (Path.cwd(), *Path.cwd().parents):
            if (folder / CONFIG_FILE).is_file():
                return cls.load(folder / CONFIG_FILE)
        if required:
            raise SpecError(f"no {CONFIG_FILE} found in {Path.cwd()} or its parents (nor ${CONFIG_ENV}): create one "
                            "with `workspace:` and `models:` (see docs/azure-migration.md), or use Client(workspace=...)")
        return None

    @classmethod
    def load(cls, path: str | Path) -> "WorkspaceConfig":
        path = Path(path).expanduser().resolve()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise SpecError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise SpecError(f"{path}: cannot read the config file ({error.__class__.__name__}: {error})") from None
        if not isinstance(data, dict):
            raise SpecError(f"{path}: the config file must be a mapping with `workspace:` and `models:`")
        try:
            raw = _ConfigFile.model_validate(data)
        except ValidationError as error:
            raise SpecError(describe_validation_error(error, _ConfigFile, str(path))) from None
        folder = path.parent
        models = {name: _entry(path, name, value) for name, value in raw.models.items()}
        workspace = Path(resolve_relative(raw.workspace, folder)) if raw.workspace else None
        return cls(path=path, workspace=workspace, models=models)

    # ----- looking names up -----------------------------------------------------------------------------
    def unknown(self, name: str) -> SpecError:
        """The error for a name that is neither in the catalog nor a model reference."""
        known = sorted(self.models)
        nearest = difflib.get_close_matches(name, known, n=1, cutoff=0.0) if known else []
        hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
        listed = ", ".join(known) if known else "none"
        return SpecError(f"unknown model {name!r}: not in the catalog of {self.path} (known: {listed}){hint} "
                         "A Hugging Face model is ORG/NAME; a local model is a folder, a .gguf file or pkg:PACKAGE/FILE")

    def entry(self, name: str) -> TeacherSpec | None:
        return self.models.get(name)

    def resolve_job(self, data: Any, base: Path) -> Any:
        """A job spec (its parsed YAML or DistillationJob's dict) with catalog names replaced by their entries:
        the teacher gets the entry's fields (the spec's own keys win), the student its model, dtype and name."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        teacher, student = data.get("teacher"), data.get("student")
        if isinstance(teacher, dict):
            data["teacher"] = self._teacher(teacher, base)
        if isinstance(data.get("teachers"), list):
            data["teachers"] = [self._teacher(t, base) if isinstance(t, dict) else t for t in data["teachers"]]
        if isinstance(student, dict) and _names_a_model(student, base):
            name = student["model"]
            entry = self._lookup(name)
            if entry.backend != "hf" or any(getattr(entry, k) for k in _ENDPOINT_KEYS):
                raise SpecError(f"model {name!r} of {self.path} is served at an endpoint ({entry.backend}); a student "
                                "must be a local model (Hugging Face id, folder, .gguf file or pkg:PACKAGE/FILE)")
            picked = entry.model_dump(exclude_unset=True, include=set(_STUDENT_KEYS))
            data["student"] = {"name": name, **picked, **{k: v for k, v in student.items() if k != "model"}}
        return data

    def _teacher(self, teacher: dict[str, Any], base: Path) -> dict[str, Any]:
        """A teacher section that names a catalog model gets the entry's fields (its own keys win)."""
        if not _names_a_model(teacher, base):
            return teacher
        entry = self._lookup(teacher["model"])
        return {**entry.model_dump(exclude_unset=True), **{k: v for k, v in teacher.items() if k != "model"}}

    def evaluation_target(self, name: str) -> dict[str, Any] | None:
        """How `models.evaluate` reaches a catalog model (ModelTarget.parse's form); None if `name` is not one."""
        entry = self.models.get(name)
        if entry is None:
            return None
        if entry.backend == "openai":
            return {**entry.model_dump(exclude_unset=True), "label": name}
        if entry.backend != "hf":
            raise SpecError(f"model {name!r} of {self.path} ({entry.backend}) cannot be evaluated on its own; "
                            "evaluate it in a job, or give a local model or an OpenAI-compatible endpoint")
        return {**entry.model_dump(exclude_unset=True, include=set(_STUDENT_KEYS)), "label": name}

    def _lookup(self, name: str) -> TeacherSpec:
        entry = self.models.get(name)
        if entry is None:
            raise self.unknown(name)
        return entry



def _names_a_model(section: dict[str, Any], base: Path) -> bool:
    """Whether a teacher: or student: section names its model by a short name (one for the catalog)."""
    model = section.get("model")
    return (isinstance(model, str) and not any(section.get(k) for k in _ENDPOINT_KEYS)
            and looks_like_a_name(model, base))


def looks_like_a_name(value: str, base: Path | None = None) -> bool:
    """Whether a model reference is a short name (a catalog or registry name) rather than a Hugging Face id
    (ORG/NAME), a path that exists, a .gguf file or pkg:PACKAGE/FILE. Names cannot hold '/', so they never shadow
    a hub id; a bare legacy hub id ("gpt2") reads as a name where a catalog is in use (write openai-community/gpt2)."""
    if not JOB_NAME_PATTERN.fullmatch(value) or value.endswith(".gguf"):
        return False
    return not (base / value if base is not None else Path(value)).exists()


def _entry(path: Path, name: str, value: dict[str, Any] | str) -> TeacherSpec:
    """One catalog entry, checked as a teacher section is (secrets rules included); paths made absolute. An entry
    that says where its endpoint is (base_url, api_key_env) is an OpenAI-compatible one unless it names a backend."""
    if not JOB_NAME_PATTERN.fullmatch(name):
        raise SpecError(f"{path}: model name {name!r}: use letters, digits, '.', '_' and '-' only (no '/': a name "
                        "must not look like a Hugging Face id)")
    value = {"model": value} if isinstance(value, str) else value
    if "backend" not in value and (value.get("base_url") or value.get("api_key_env")):
        value = {**value, "backend": "openai"}
    try:
        entry = TeacherSpec.model_validate(value)
    except ValidationError as error:
        raise SpecError(describe_validation_error(error, TeacherSpec, f"{path}: models.{name}")) from None
    if entry.backend == "openai" and not entry.base_url and not entry.api_key_env:
        raise SpecError(f"{path}: models.{name}: backend openai needs base_url or api_key_env")
    folder = path.parent
    updates: dict[str, Any] = {"model": resolve_model_ref(entry.model, folder)}
    if entry.path:
        updates["path"] = resolve_relative(entry.path, folder)
    # model_copy keeps the set fields as given, so an entry merged into a spec carries only what it states.
    return entry.model_copy(update=updates)


def workspace_root(workspace: str | Path | None, config: WorkspaceConfig | None) -> Path:
    """Where jobs live: the explicit folder (--workspace, Client(workspace=...)), else $DISTILFLOW_HOME, else the
    config's `workspace:`, else ./distilflow-runs (command line over environment over config file over default)."""
    if workspace or os.environ.get("DISTILFLOW_HOME") or config is None or config.workspace is None:
        return resolve_workspace(workspace)
    return config.workspace


def spec_resolver(config_path: str | Path | None) -> Callable[[Any, Path], Any]:
    """For `load_spec`: catalog names in a job spec resolved through the config. The config is read only when the
    spec names a model by a short name, so a spec that names paths and ids needs none (a job started in the
    background reads its resolved spec.yaml that way)."""

    def resolve(data: Any, base: Path) -> Any:
        if not isinstance(data, dict):
            return data
        sections = [data.get(role) for role in ("teacher", "student")]
        sections += data.get("teachers") if isinstance(data.get("teachers"), list) else []
        if not any(isinstance(s, dict) and _names_a_model(s, base) for s in sections):
            return data
        config = WorkspaceConfig.find(config_path)
        return config.resolve_job(data, base) if config is not None else data

    return resolve


def find_workspace(workspace: str | Path | None, config_path: str | Path | None) -> Path:
    """`workspace_root` for the command line: the config file is read only when neither --workspace nor
    $DISTILFLOW_HOME says where jobs live (a job started in the background is always told)."""
    if workspace or os.environ.get("DISTILFLOW_HOME"):
        return resolve_workspace(workspace)
    return workspace_root(None, WorkspaceConfig.find(config_path))
