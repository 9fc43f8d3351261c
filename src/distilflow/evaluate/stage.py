"""Stage 4, evaluate: teacher, baseline student and distilled student answer the same test inputs with the
same greedy decoding, each measured in its own process (see worker.py); then each student's agreement
with the teacher is computed from the predictions."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilflow.io import iter_jsonl, write_json_atomic
from distilflow.errors import StageError
from distilflow.evaluate.recorded import evaluate_recorded
from distilflow.tasks.scoring import agreement_with_teacher
from distilflow.models import model_revision

if TYPE_CHECKING:
    from distilflow.jobs.context import StageContext

STUDENT_LABELS = ("baseline", "distilled")


def teacher_config(ctx: "StageContext") -> dict[str, Any]:
    """How the teacher is evaluated, by backend: a local model, an API endpoint, or recorded answers."""
    t = ctx.spec.teacher
    if t.backend == "openai":
        return {"kind": "api", "model": t.model, "base_url": t.base_url, "api_key_env": t.api_key_env,
                "api_version": t.api_version, "headers": t.headers, "timeout": t.timeout, "max_retries": t.max_retries,
                "price_per_million_input_tokens": t.price_per_million_input_tokens,
                "price_per_million_output_tokens": t.price_per_million_output_tokens}
    if t.backend == "recorded":
        return {"kind": "recorded", "model": t.path or t.model}
    config = {"kind": "local", "model": t.model, "dtype": t.dtype}
    if t.backend == "vllm":
        config["note"] = "teacher.backend vllm: measured with transformers in a worker process, not with vLLM"
    return config


def model_configs(ctx: "StageContext") -> dict[str, dict[str, Any]]:
    configs = {"teacher": teacher_config(ctx),
               "baseline": {"kind": "local", "model": ctx.paths.baseline_student(ctx.spec), "dtype": ctx.spec.student.dtype},
               "distilled": {"kind": "local", "model": str(ctx.paths.student_final), "dtype": ctx.spec.student.dtype}}
    return {label: configs[label] for label in ctx.spec.evaluation.models if label in configs}


def run_worker(config: dict[str, Any], on_progress: Callable[[int, int], None]) -> dict[str, Any]:
    """Run one evaluation worker process; relay its progress; return its metrics."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(config, handle)
        config_path = handle.name
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        process = subprocess.Popen([sys.executable, "-m", "distilflow.evaluate.worker", config_path],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert process.stdout is not None
        for line in process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and "progress" in event:
                on_progress(event["progress"], event["total"])
        stderr = process.stderr.read() if process.stderr else ""
        if process.wait() != 0:
            lines = [l.strip() for l in stderr.strip().splitlines() if l.strip()]
            ours = [l.removeprefix("error: ") for l in lines if l.startswith("error: ")]
            reason = (ours or lines or [f"the worker process stopped (exit status {process.returncode})"])[-1]
            raise StageError(f"evaluating {config['label']} ({config['model']}) failed: {reason}")
    finally:
        os.unlink(config_path)
    return json.loads((Path(config["output_dir"]) / "metrics.json").read_text())


def _fingerprint(config: dict[str, Any]) -> str:
    """What a model's results depend on: the model (and its weights' revision), the inputs and the settings."""
    return hashlib.sha256(json.dumps([config, model_revision(config["model"])], sort_keys=True,
                                     default=str).encode()).hexdigest()[:16]


def not_evaluated(output_dir: Path, label: str, model: str, reason: str) -> dict[str, Any]:
    result = {"label": label, "model": model, "evaluated": False, "reason": reason}
    write_json_atomic(output_dir / "metrics.json", result)
    stale = output_dir / "predictions.jsonl"
    if stale.exists():
        stale.unlink()
    return result


def evaluate_stage(ctx: "StageContext") -> dict[str, Any]:
    examples = ctx.examples("test")
    if not examples:
        raise StageError("no test_data in the job spec: add test_data to score teacher, baseline and distilled")
    e = ctx.spec.evaluation
    payload = [{"id": x.id, "messages": x.messages, "reference": x.reference} for x in examples]
    settings = {"task_type": ctx.spec.task_type, "max_tokens": e.max_tokens, "warmup": e.warmup,
                "batch_size": e.batch_size, "throughput": e.throughput, "device": e.device,
                "bootstrap_samples": e.bootstrap_samples, "bootstrap_seed": e.bootstrap_seed}
    configs = model_configs(ctx)
    steps_per_model = len(payload) * (2 if e.throughput else 1)
    results: dict[str, Any] = {}
    with ctx.progress("evaluate", steps_per_model * len(configs), "evaluating models") as progress:
        for index, (label, config) in enumerate(configs.items()):
            output_dir = ctx.paths.eval_model(label)
            config = {**config, **settings, "label": label, "examples": payload, "output_dir": str(output_dir)}
            config["fingerprint"] = _fingerprint(config)
            previous = output_dir / "metrics.json"
            offset = index * steps_per_model
            if previous.exists() and json.loads(previous.read_text()).get("fingerprint") == config["fingerprint"]:
                results[label] = json.loads(previous.read_text())  # already scored (resume)
                progress.update(offset + steps_per_model)
                continue
            progress.note(label)
            if config["kind"] == "recorded":
                results[label] = evaluate_recorded(ctx, config) or not_evaluated(
                    output_dir, label, config["model"], "the recorded teacher answers do not cover every test input "
                    "(only answers to the same inputs can be compared)")
            else:
                results[label] = run_worker(config, lambda done, total: progress.update(offset + done))
            progress.update(offset + steps_per_model)
    agreement = teacher_agreement(ctx)
    write_json_atomic(ctx.paths.eval / "agreement.json", agreement)
    summary: dict[str, Any] = {}
    for label, r in results.items():
        if not r.get("evaluated", True):
            summary[label] = {"evaluated": False, "reason": r.get("reason")}
            continue
        summary[label] = {"task_metrics": r["task_metrics"], "latency_mean_s": r.get("latency_mean_s"),
                          "peak_memory_mb": r.get("peak_memory_mb"), "parameters": r.get("parameters")}
        if label in agreement:
            summary[label]["agreement_with_teacher"] = agreement[label]["value"]
    return summary


def read_predictions(ctx: "StageContext", label: str) -> list[dict[str, Any]]:
    return list(iter_jsonl(ctx.paths.eval_model(label) / "predictions.jsonl"))


def teacher_agreement(ctx: "StageContext") -> dict[str, Any]:
    """Agreement of baseline and distilled with the teacher's answers on the same test inputs."""
    teacher = read_predictions(ctx, "teacher") if "teacher" in ctx.spec.evaluation.models else []
    if not teacher:
        return {}
    e = ctx.spec.evaluation
    out = {}
    for label in STUDENT_LABELS:
        if label in e.models:
            found = agreement_with_teacher(ctx.task, read_predictions(ctx, label), teacher, e.bootstrap_samples,
                                           e.bootstrap_seed)
            if found:
                out[label] = found
    return out
