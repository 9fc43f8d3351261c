"""`distilflow tune` with a fixed small budget against the job's default settings, on a real scenario with the real
SmolLM2-135M-Instruct: the default student's validation and test scores, the tuned one's, and the minutes spent.

The scenario (a job spec in examples/) is cut to its first rows so that the comparison runs on two CPU cores; the
default settings are trained by `distilflow run` (and scored on the test set), then `distilflow tune` searches the
learning rate, the epochs and the divergence weight on the validation set, from the same teacher answers.

    python bench/tune.py                                   # support intents, 4 trials, 30 minutes at most
    python bench/tune.py --trials 8 --budget-minutes 60 --rows 200

Writes bench/results/tune-<scenario>.json and prints the Markdown table that bench/README.md records.
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
SPACE = {"learning_rate": {"low": 3e-5, "high": 1e-3, "log": True}, "num_epochs": {"choices": [1, 2, 3]},
         "kd_alpha": {"low": 0.1, "high": 0.9}}


def bench_spec(scenario: Path, folder: Path, rows: int, test_rows: int, trials: int) -> Path:
    """The scenario with absolute data paths, its first `rows` training/validation rows and `test_rows` test rows,
    only the distilled student evaluated (the comparison is between students), and the search space."""
    spec = yaml.safe_load(scenario.read_text())
    for key in ("training_data", "validation_data", "test_data"):
        spec[key] = str((scenario.parent / spec[key]).resolve())
    spec["name"] = f"tune-bench-{scenario.stem}"
    spec["generation"] = {**spec.get("generation", {}), "max_examples": rows}
    spec["evaluation"] = {**spec.get("evaluation", {}), "max_examples": test_rows, "models": ["distilled"],
                          "throughput": False, "uncached_examples": 0}
    spec["tune"] = {"trials": trials, "space": SPACE, "seed": 0}
    path = folder / f"{spec['name']}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def distilflow(*args: str) -> float:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "distilflow", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"distilflow {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return (time.monotonic() - started) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=REPO / "examples" / "support-intents-smollm2.yaml")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--budget-minutes", type=float, default=30)
    parser.add_argument("--rows", type=int, default=100, help="training and validation rows (each)")
    parser.add_argument("--test-rows", type=int, default=100)
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/distilflow-tune-bench"))
    args = parser.parse_args()
    spec = bench_spec(args.scenario, args.workspace / "specs", args.rows, args.test_rows, args.trials)
    name = yaml.safe_load(spec.read_text())["name"]
    ws = ["--workspace", str(args.workspace)]
    default_minutes = distilflow("run", str(spec), *ws)
    job = args.workspace / "jobs" / name
    default = json.loads((job / "eval" / "distilled" / "metrics.json").read_text())
    tune_minutes = distilflow("tune", str(spec), "--trials", str(args.trials), "--budget-minutes",
                              str(args.budget_minutes), *ws)
    summary = json.loads((job / "tune" / "summary.json").read_text())
    metric = summary["metric"]
    own = next(t for t in summary["trials"] if t["job_settings"])
    figures = {"scenario": args.scenario.name, "rows": args.rows, "test_rows": args.test_rows, "metric": metric,
               "default": {"validation": own["value"], "test": default["task_metrics"][metric],
                           "minutes": round(default_minutes, 2)},
               "tuned": {"validation": summary["best"]["value"], "test": summary["test"]["task_metrics"][metric],
                         "settings": summary["best"]["settings"], "minutes": round(tune_minutes, 2),
                         "trials": summary["counts"]}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"tune-{args.scenario.stem}.json").write_text(json.dumps(figures, indent=2))
    print(f"| settings | validation {metric} | test {metric} | minutes |\n| --- | --- | --- | --- |")
    print(f"| default (the job's) | {own['value']:.3f} | {default['task_metrics'][metric]:.3f} | "
          f"{default_minutes:.1f} (run: teacher stage, training, test) |")
    settings = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in summary["best"]["settings"].items())
    print(f"| tuned ({settings}) | {summary['best']['value']:.3f} | {figures['tuned']['test']:.3f} | "
          f"{tune_minutes:.1f} ({summary['counts']}) |")


if __name__ == "__main__":
    main()
