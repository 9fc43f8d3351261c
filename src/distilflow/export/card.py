"""The model card (README.md) of an exported student: where it came from and how good it is, from the job's spec and
its report.json. Nothing secret goes in: endpoints are named by host only and keys by nothing at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from distilflow.jobspec import JobSpec

LABEL_TITLES = {"teacher": "teacher", "baseline": "student before distillation", "distilled": "distilled student"}


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def model_license(ref: str) -> str | None:
    """The license a model declares: a GGUF file's general.license, or a folder's README front matter."""
    path = Path(ref)
    if path.suffix == ".gguf" and path.is_file():
        import gguf

        field = gguf.GGUFReader(path).fields.get("general.license")
        return str(field.contents()) if field is not None else None
    readme = path / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            front = yaml.safe_load(text.split("---", 2)[1]) or {}
            return front.get("license") if isinstance(front, dict) else None
    return None


def _teacher(spec: JobSpec) -> str:
    teacher = spec.teacher
    where = ""
    urls = teacher.base_url if isinstance(teacher.base_url, list) else [teacher.base_url] if teacher.base_url else []
    if urls:  # the host only: a URL can carry credentials or internal paths
        where = " at " + ", ".join(sorted({urlparse(u).hostname or "?" for u in urls}))
    return f"`{teacher.model}` (backend `{teacher.backend}`{where})"


def _figures(report: dict[str, Any]) -> list[str]:
    """The headline table: every metric of every evaluated model, with its 95% interval."""
    metrics = report.get("metric_names") or []
    models = report.get("models") or {}
    if not metrics or not models:
        return ["No evaluation was run for this job (it had no test data)."]
    lines = ["| model | " + " | ".join(metrics) + " | latency (ms) | parameters |",
             "| --- | " + " | ".join("---" for _ in metrics) + " | --- | --- |"]
    for label, result in models.items():
        if not result.get("evaluated", True):
            continue
        cells = []
        for name in metrics:
            interval = (result.get("intervals") or {}).get(name)
            value = (result.get("task_metrics") or {}).get(name)
            cells.append(f"{_fmt(value)} [{_fmt(interval['low'])}, {_fmt(interval['high'])}]" if interval
                         else _fmt(value))
        latency = result.get("latency_mean_s")
        cells += [_fmt(None if latency is None else latency * 1000), _fmt(result.get("parameters"))]
        lines.append(f"| {LABEL_TITLES.get(label, label)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Brackets: 95% bootstrap confidence intervals over the test examples "
                 f"(n = {next(iter(models.values())).get('scored_examples', 'n/a')}).")
    comparison = report.get("comparison") or {}
    if comparison:
        lines.append(f"Quality kept ({report.get('primary_metric')}, distilled / teacher): "
                     f"{_fmt(comparison.get('retention'))}; speed-up over the teacher: "
                     f"{_fmt(comparison.get('speedup'))}x; parameters saved: "
                     f"{_fmt(comparison.get('parameter_reduction'))}.")
    return lines


def _data(spec: JobSpec, report: dict[str, Any]) -> list[str]:
    stage = report.get("teacher_stage") or {}
    training = report.get("training") or {}
    accepted = stage.get("accepted") or {}
    files = [("training", spec.training_data), ("validation", spec.validation_data), ("test", spec.test_data)]
    lines = [f"- {role} inputs: `{Path(path).name}`" for role, path in files if path]
    lines.append(f"- teacher answers requested: {_fmt(stage.get('requests'))}; accepted: "
                 + ", ".join(f"{split} {count}" for split, count in accepted.items())
                 + f"; rejected: {_fmt(stage.get('rejected'))}")
    lines.append(f"- rows the student was trained on: {_fmt(training.get('train_rows'))}")
    return lines


def model_card(spec: JobSpec, report: dict[str, Any], *, title: str, base_license: str | None) -> str:
    """README.md with a Hugging Face front matter (license, base model, tags) and the job's figures."""
    training = spec.training
    hyper = {"method": training.method, "learning_rate": spec.hyperparameters.learning_rate,
             "batch_size": spec.hyperparameters.batch_size, "num_epochs": spec.hyperparameters.num_epochs,
             "teacher_temperature": spec.teacher_temperature, "max_steps": training.max_steps,
             "lora": training.lora.model_dump() if training.lora else None,
             "pruned_layers": spec.student.prune}
    if training.method != "sft":
        hyper.update(divergence=training.divergence, kd_temperature=training.kd_temperature,
                     kd_alpha=training.kd_alpha)
    front = {"license": base_license or "other", "base_model": spec.student.model,
             "tags": ["distilflow", "distillation", spec.task_type], "pipeline_tag": "text-generation"}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {title}", "",
             f"A `{spec.task_type}` model distilled with distilflow (job `{spec.name}`).", "",
             "## Provenance", "",
             f"- base model (student): `{spec.student.model}`",
             f"- teacher: {_teacher(spec)}", f"- task: `{spec.task_type}`", *_data(spec, report), "",
             "## Method and hyperparameters", "", "```json", json.dumps(hyper, indent=2, default=str), "```", "",
             "## Evaluation (from the job's report)", "", *_figures(report), "",
             "## Licenses of the inputs", "",
             f"- student base model: {base_license or 'not declared by the model; check its source'}",
             f"- teacher `{spec.teacher.model}`: the teacher's terms of use apply to its outputs; check them "
             "before you redistribute this model",
             "- data files: licensed by their owners (distilflow records no license for them)", ""]
    return "\n".join(lines)
