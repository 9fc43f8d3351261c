"""A quality table across distillation methods, and a retention/latency frontier over student depth, in one
command, on real data with the real SmolLM2-135M-Instruct.

For a scenario (a job spec in examples/), the teacher stage and the teacher's evaluation run once (a base job);
every variant is a job of its own that starts from a copy of the base job's teacher cache and teacher results, so
all variants learn from the same teacher answers, start from the same student, take the same number of steps,
and are scored on the same test inputs. Columns: the task metric with its 95% interval, retention (distilled /
teacher), agreement with the teacher on the test inputs, training minutes, latency and throughput.

    python bench/quality.py                                    # intents: methods, then the depth frontier
    python bench/quality.py --scenario examples/summarize-smollm2.yaml --methods sft kd_forward sparse_kd
    python bench/quality.py --frontier 8 12 16 20 --methods    # the frontier only
    python bench/quality.py --base-job runs/jobs/support-intents-smollm2 --frontier --keep-earlier \
        --methods sparse_kd sft kd_forward on_policy           # after the demo: reuse its teacher, add methods

Writes bench/results/quality-<scenario>.json (every figure) and quality-<scenario>-frontier.svg, and prints the
Markdown table that bench/README.md records.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
# method name -> training section (every variant keeps the scenario's other settings and its step budget)
METHODS = {
    "sft": {"method": "sft"},
    "kd_forward": {"method": "kd", "divergence": "forward_kl"},
    "kd_reverse": {"method": "kd", "divergence": "reverse_kl"},
    "kd_jsd": {"method": "kd", "divergence": "jsd", "jsd_beta": 0.5},
    "sparse_kd": {"method": "sparse_kd"},
    # the settings bench/README.md's figures were measured with (before on_policy_warmup existed)
    "on_policy": {"method": "on_policy", "on_policy_ratio": 0.5, "on_policy_warmup": 0.0, "student_temperature": 1.0,
                  "divergence": "jsd", "jsd_beta": 0.5},
    "kd_hidden": {"method": "kd", "divergence": "forward_kl", "hidden_states": {"weight": 1.0, "layers": "auto"}},
}


def run(spec: Path, workspace: Path) -> float:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "distilflow", "run", str(spec), "--workspace", str(workspace)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{spec.name} failed:\n{result.stderr[-3000:]}")
    return time.monotonic() - started


def variant_spec(base: dict, folder: Path, name: str, training: dict, prune: list[int] | None) -> Path:
    spec = json.loads(json.dumps(base))
    spec["name"] = name
    spec["training"] = {**spec.get("training", {}), **training}
    if spec["training"]["method"] == "on_policy":  # the student samples answers as long as the teacher's
        spec["training"].setdefault("student_max_tokens", spec.get("generation", {}).get("max_tokens", 256))
    if spec["training"]["method"] == "sparse_kd" and spec["generation"].get("answer_mode") != "rank":
        spec["generation"]["top_logprobs"] = 8  # the teacher's stored top-8 (a generating teacher)
    if prune is not None:
        spec["student"]["prune"] = prune
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def seed_from_base(source: Path, workspace: Path, name: str, same_student: bool) -> None:
    """The variant reuses the base job's teacher answers (cache) and the teacher's evaluation, and the baseline's
    when the student starts the same (same inputs and settings: the evaluate stage finds its fingerprint and skips
    the model; a different fingerprint is simply evaluated again)."""
    target = workspace / "jobs" / name
    (target / "cache").mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "cache" / "teacher.sqlite", target / "cache" / "teacher.sqlite")
    for model in ("teacher", "baseline") if same_student else ("teacher",):
        if (source / "eval" / model).exists():
            shutil.copytree(source / "eval" / model, target / "eval" / model, dirs_exist_ok=True)


def scenario_method(spec: dict) -> str | None:
    """The METHODS entry the scenario itself uses (its base job is that method's row), if any."""
    training = {"method": "sft", **spec.get("training", {})}
    for name, settings in METHODS.items():
        if all(training.get(k, "forward_kl" if k == "divergence" else None) == v for k, v in settings.items()):
            return name
    return None


def row_of(workspace: Path, name: str, seconds: float | None) -> dict:
    """One table row from the job's report (seconds: the whole `distilflow run`; None: the stages' own times)."""
    report = json.loads((workspace / "jobs" / name / "report.json").read_text())
    primary = report["primary_metric"]
    distilled, teacher = report["models"]["distilled"], report["models"]["teacher"]
    interval = distilled["intervals"][primary]
    agreement = distilled.get("agreement_with_teacher") or {}
    return {"variant": name, "metric": primary, "score": interval["value"], "low": interval["low"],
            "high": interval["high"], "teacher": teacher["task_metrics"][primary],
            "retention": report["comparison"]["retention"], "agreement": agreement.get("value"),
            "train_minutes": stage_minutes(workspace, name, "train"), "job_minutes": round(seconds / 60, 2) if seconds is not None else job_minutes(workspace, name),
            "latency_ms": distilled["latency_mean_s"] * 1000, "teacher_latency_ms": teacher["latency_mean_s"] * 1000,
            "answers_per_s": distilled.get("throughput_answers_per_s"),
            "layers": student_layers(workspace / "jobs" / name), "degenerate": (distilled.get("degeneration") or {}).get("degenerate")}


def stage_records(workspace: Path, name: str) -> list[dict]:
    """The job's stages as the job store has them (what `distilflow jobs show` prints)."""
    result = subprocess.run([sys.executable, "-m", "distilflow", "jobs", "show", name, "--json", "--workspace",
                             str(workspace)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)["stages"]


def stage_minutes(workspace: Path, name: str, stage: str) -> float | None:
    record = next(s for s in stage_records(workspace, name) if s["stage"] == stage)
    if not record.get("started_at") or not record.get("finished_at"):
        return None
    return round((record["finished_at"] - record["started_at"]) / 60, 2)


def job_minutes(workspace: Path, name: str) -> float | None:
    """From the first stage's start to the last one's end."""
    records = [s for s in stage_records(workspace, name) if s.get("started_at") and s.get("finished_at")]
    if not records:
        return None
    return round((max(s["finished_at"] for s in records) - min(s["started_at"] for s in records)) / 60, 2)


def student_layers(job: Path) -> int | None:
    config = job / "student" / "initial" / "config.json"
    return json.loads(config.read_text()).get("num_hidden_layers") if config.exists() else None


def markdown(rows: list[dict]) -> str:
    lines = ["| variant | layers | score [95% CI] | retention | agreement with teacher | degenerate | latency (ms) | "
             "answers/s | train minutes | job minutes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def pct(v):
            return "n/a" if v is None else f"{100 * v:.1f}%"
        lines.append(f"| {r['variant']} | {r['layers']} | {r['score']:.3f} [{r['low']:.3f}, {r['high']:.3f}] | {pct(r['retention'])} "
                     f"| {pct(r['agreement'])} | {pct(r['degenerate'])} | {r['latency_ms']:.0f} "
                     f"| {r['answers_per_s'] or 0:.1f} | {r['train_minutes']} | {r['job_minutes']} |")
    return "\n".join(lines)


def frontier_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    speedups = [r["teacher_latency_ms"] / r["latency_ms"] for r in rows]
    ax.plot(speedups, [100 * r["retention"] for r in rows], "o-", color="#dd8452")
    for r, x in zip(rows, speedups):
        ax.annotate(f"{r['layers']} layers", (x, 100 * r["retention"]), fontsize=8)
    ax.set_xlabel("speed-up (teacher latency / student latency)")
    ax.set_ylabel("retention of the teacher's score (%)")
    ax.grid(alpha=0.3)
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=REPO / "examples" / "support-intents-smollm2.yaml")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--frontier", nargs="*", type=int, default=[8, 12, 16, 20],
                        help="student depths (layers kept of 30) for the frontier, with --frontier-method")
    parser.add_argument("--frontier-method", default="sparse_kd")
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/distilflow-quality"))
    parser.add_argument("--keep-earlier", action="store_true",
                        help="keep the rows of earlier runs in the results file (a methods run after a frontier run)")
    parser.add_argument("--base-job", type=Path, help="a finished job of the scenario as it stands (e.g. the demo's "
                        "runs/jobs/support-intents-smollm2): used as the base instead of running it again")
    args = parser.parse_args()
    base_spec = yaml.safe_load(args.scenario.read_text())
    for key in ("training_data", "validation_data", "test_data"):
        if key in base_spec:
            base_spec[key] = str((args.scenario.parent / base_spec[key]).resolve())
    folder = args.workspace / "specs"
    folder.mkdir(parents=True, exist_ok=True)
    stem = args.scenario.stem
    own = scenario_method(base_spec)
    if args.base_job:
        base_job = args.base_job.resolve()
        base_row = row_of(base_job.parent.parent, base_job.name, None)
    else:
        base_job = args.workspace / "jobs" / f"{stem}-{own or 'base'}"
        seconds = run(variant_spec(base_spec, folder, base_job.name, {}, None), args.workspace)
        base_row = row_of(args.workspace, base_job.name, seconds)
    base_row["variant"] = f"{stem}-{own or 'base'}"
    rows = [base_row] if own in args.methods or own == args.frontier_method else []
    variants = [(f"{stem}-{m}", METHODS[m], None) for m in args.methods if m != own]
    variants += [(f"{stem}-{args.frontier_method}-L{n}", METHODS[args.frontier_method], evenly(n))
                 for n in args.frontier]
    for name, training, prune in variants:
        seed_from_base(base_job, args.workspace, name, same_student=prune is None)
        seconds = run(variant_spec(base_spec, folder, name, training, prune), args.workspace)
        rows.append(row_of(args.workspace, name, seconds))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    results = RESULTS / f"quality-{stem}.json"
    if results.exists() and args.keep_earlier:
        fresh = {r["variant"] for r in rows}
        rows = [r for r in json.loads(results.read_text()) if r["variant"] not in fresh] + rows
    results.write_text(json.dumps(rows, indent=2))
    # the depth frontier: the frontier method at every depth, the scenario's own depth (its base job) included
    depth_rows = sorted((r for r in rows if "-L" in r["variant"] or r["variant"] == f"{stem}-{args.frontier_method}"),
                        key=lambda r: r["layers"] or 0)
    if depth_rows:
        frontier_plot(depth_rows, RESULTS / f"quality-{stem}-frontier.svg")
    print(markdown(rows))


def evenly(keep: int, total: int = 30) -> list[int]:
    """`keep` layer indices spread over `total`, first and last included (the pruned student's layers)."""
    if keep >= total:
        return list(range(total))
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


if __name__ == "__main__":
    main()
