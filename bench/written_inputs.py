"""Inputs written by the teacher against inputs a user has: the demo job (ten Banking77 intents, SmolLM2-135M
teacher reading a 40-shot completion prompt, an 11-layer pruned student) run twice, with everything else equal:

- written: examples/support-intents-written.yaml -- 5 labelled messages per intent (50), no unlabelled pool, and
  `inputs: {count: N}`: the teacher writes N training messages (N/10 per intent) and then labels them;
- pool:    examples/support-intents-smollm2.yaml -- the real 903-message pool (100 labelled, 803 unlabelled).

Both are scored on the same 250 held-out test messages (25 per intent). Prints the Markdown table bench/README.md
records and writes bench/results/written-inputs.json.

    python bench/written_inputs.py                       # both jobs, count 900
    python bench/written_inputs.py --count 300 --only written
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SPECS = {"written": REPO / "examples" / "support-intents-written.yaml",
         "pool": REPO / "examples" / "support-intents-smollm2.yaml"}
MODELS = ["teacher", "distilled"]  # the baseline student is the same in both jobs (and near chance): not re-scored


def job_spec(kind: str, count: int, folder: Path) -> Path:
    """The example spec as a job of this benchmark: its data paths absolute, the count and the models set."""
    spec = yaml.safe_load(SPECS[kind].read_text())
    base = SPECS[kind].parent
    for key in ("training_data", "validation_data", "test_data"):
        spec[key] = str((base / spec[key]).resolve())
    spec["name"] = f"bench-{kind}"
    spec["evaluation"]["models"] = MODELS
    if kind == "written":
        spec["inputs"]["count"] = count
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run(kind: str, count: int, workspace: Path) -> dict:
    spec = job_spec(kind, count, workspace / "specs")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "distilflow", "run", str(spec), "--workspace", str(workspace)],
                            text=True)
    minutes = (time.monotonic() - started) / 60
    if result.returncode != 0:
        sys.exit(f"the {kind} job failed (exit status {result.returncode})")
    root = workspace / "jobs" / f"bench-{kind}"
    scores = {}
    for label in MODELS:
        metrics = json.loads((root / "eval" / label / "metrics.json").read_text())
        interval = (metrics.get("intervals") or {}).get("accuracy") or {}
        scores[label] = {"accuracy": metrics["task_metrics"]["accuracy"],
                         "interval": [interval["low"], interval["high"]] if "low" in interval else None}
    report = json.loads((root / "report.json").read_text())
    generate = _generate_metrics(workspace, f"bench-{kind}")
    return {"kind": kind, "minutes": round(minutes, 1), "scores": scores,
            "train_rows": generate.get("accepted", {}).get("train"), "written_inputs": generate.get("written_inputs"),
            "report_keys": sorted(report)}


def _generate_metrics(workspace: Path, name: str) -> dict:
    shown = subprocess.run([sys.executable, "-m", "distilflow", "jobs", "show", name, "--json", "--workspace",
                            str(workspace)], capture_output=True, text=True, check=True)
    return next(s for s in json.loads(shown.stdout)["stages"] if s["stage"] == "generate")["metrics"]


def table(results: list[dict]) -> str:
    lines = ["| training inputs | rows the student trained on | teacher accuracy | distilled accuracy [95% CI] | "
             "job minutes |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        what = ("5 labelled per intent + written by the teacher" if r["kind"] == "written"
                else "the real pool (100 labelled + 803 unlabelled)")
        d = r["scores"]["distilled"]
        ci = f" [{d['interval'][0]:.3f}, {d['interval'][1]:.3f}]" if d.get("interval") else ""
        lines.append(f"| {what} | {r['train_rows']} | {r['scores']['teacher']['accuracy']:.3f} | "
                     f"{d['accuracy']:.3f}{ci} | {r['minutes']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=900, help="inputs the teacher writes (default 900)")
    parser.add_argument("--only", choices=sorted(SPECS), help="run one of the two jobs")
    parser.add_argument("--workspace", type=Path, default=RESULTS / "written-inputs-runs")
    args = parser.parse_args()
    kinds = [args.only] if args.only else ["written", "pool"]
    results = [run(kind, args.count, args.workspace) for kind in kinds]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"written-inputs{'-' + args.only if args.only else ''}.json"
    out.write_text(json.dumps({"count": args.count, "results": results}, indent=1))
    print(table(results))
    for r in results:
        if r["written_inputs"]:
            print(f"\nwritten inputs: {json.dumps(r['written_inputs'])}")


if __name__ == "__main__":
    main()
