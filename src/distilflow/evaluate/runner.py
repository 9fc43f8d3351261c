"""Stage 4, evaluate: teacher, baseline student and distilled student answer the same test inputs,
each scored in its own process (see worker.py)."""

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

from distilflow.errors import StageError
from distilflow.models import model_revision
from distilflow.train.student import baseline_student_ref

if TYPE_CHECKING:
    from distilflow.runner import StageContext


def model_refs(ctx: "StageContext") -> dict[str, str]:
    refs = {"teacher": ctx.spec.teacher.model, "baseline": baseline_student_ref(ctx),
            "distilled": str(ctx.paths.student_final)}
    if ctx.spec.teacher.backend != "hf":
        refs.pop("teacher")  # remote/recorded teachers are scored through their backend (not in this stage yet)
    return {label: refs[label] for label in ctx.spec.evaluation.models if label in refs}


def run_worker(config: dict[str, Any], on_progress: Callable[[int, int], None]) -> dict[str, Any]:
    """Run one evaluation worker process; relay its progress; return its metrics."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(config, handle)
        config_path = handle.name
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
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
            last = [l for l in stderr.strip().splitlines() if l.strip()][-1:] or ["no output"]
            raise StageError(f"evaluating {config['label']} ({config['model']}) failed: {last[0]}")
    finally:
        os.unlink(config_path)
    return json.loads((Path(config["output_dir"]) / "metrics.json").read_text())


def run_evaluate(ctx: "StageContext") -> dict[str, Any]:
    examples = ctx.examples("test")
    if not examples:
        raise StageError("no test_data in the job spec: add test_data to score teacher, baseline and distilled")
    e = ctx.spec.evaluation
    payload = [{"id": x.id, "messages": x.messages, "reference": x.reference} for x in examples]
    refs = model_refs(ctx)
    results: dict[str, Any] = {}
    with ctx.progress("evaluate", len(payload) * len(refs), "evaluating models") as progress:
        for index, (label, ref) in enumerate(refs.items()):
            output_dir = ctx.paths.eval_model(label)
            fingerprint = hashlib.sha256(json.dumps(
                [ref, model_revision(ref), e.model_dump(mode="json"), payload], sort_keys=True).encode()).hexdigest()[:16]
            previous = output_dir / "metrics.json"
            if previous.exists() and json.loads(previous.read_text()).get("fingerprint") == fingerprint:
                results[label] = json.loads(previous.read_text())  # already scored (resume)
                progress.update((index + 1) * len(payload))
                continue
            progress.note(label)
            offset = index * len(payload)
            config = {"label": label, "model": ref, "task_type": ctx.spec.task_type, "examples": payload,
                      "max_tokens": e.max_tokens, "warmup": e.warmup, "device": e.device,
                      "output_dir": str(output_dir), "fingerprint": fingerprint}
            results[label] = run_worker(config, lambda done, total: progress.update(offset + done))
    return {label: {"task_metrics": r["task_metrics"], "latency_mean_s": r["latency_mean_s"],
                    "peak_memory_mb": r["peak_memory_mb"], "parameters": r["parameters"]}
            for label, r in results.items()}
